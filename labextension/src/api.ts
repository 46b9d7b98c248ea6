/**
 * The server extension's REST endpoint: a notebook's checkpoints, read from its store without a kernel.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ICheckpointInfo } from './helpers';

export const ROUTE = 'nbcheckpoint/api/checkpoints';

export async function listCheckpoints(
  path: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<ICheckpointInfo[]> {
  const url =
    URLExt.join(settings.baseUrl, ROUTE) + URLExt.objectToQueryString({ path });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    let message = response.statusText;
    try {
      const body = await response.json();
      message = body.message || message;
    } catch {
      // not JSON: keep the status text
    }
    throw new ServerConnection.ResponseError(response, message);
  }
  return (await response.json()) as ICheckpointInfo[];
}
