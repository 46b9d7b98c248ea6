/**
 * The checkpoint icon: a clock with a counter-clockwise arrow ("back in time").
 */
import { LabIcon } from '@jupyterlab/ui-components';

const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <g class="jp-icon3" fill="#616161">
    <path d="M13 3a9 9 0 0 0-9 9H1l3.9 3.9.1.1L9 12H6a7 7 0 1 1 2.05 4.95l-1.42 1.42A9 9 0 1 0 13 3z"/>
    <path d="M12 8v5l4.25 2.52.77-1.28-3.52-2.09V8z"/>
  </g>
</svg>`;

export const checkpointIcon = new LabIcon({
  name: 'nbcheckpoint-labextension:checkpoint',
  svgstr
});
