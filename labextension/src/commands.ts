/**
 * The command palette's commands (open the panel, restore the latest, list) and the notebook toolbar button.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { CommandToolbarButton } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { describeCheckpoint, humanBytes, ICheckpointInfo } from './helpers';
import { checkpointIcon } from './icon';
import { restoreWithNotice } from './notification';
import { ICheckpointManager, ICheckpointSidebar } from './tokens';

export interface ICommandIDs {
  openPanel: string;
  restoreLatest: string;
  list: string;
}

const CATEGORY = 'State checkpoints';

export function addCommands(
  app: JupyterFrontEnd,
  manager: ICheckpointManager,
  sidebar: ICheckpointSidebar,
  ids: ICommandIDs,
  palette: ICommandPalette | null
): void {
  const hasNotebook = () => manager.current !== null;
  app.commands.addCommand(ids.openPanel, {
    label: 'Open the State Checkpoints Panel',
    caption:
      "Show this notebook's state checkpoints (saved kernel variables) in the right sidebar",
    icon: checkpointIcon,
    execute: () => app.shell.activateById(sidebar.id)
  });
  app.commands.addCommand(ids.restoreLatest, {
    label: 'Restore the Latest State Checkpoint',
    caption:
      "Bring the kernel's variables back from the latest state checkpoint (%checkpoint restore)",
    isEnabled: hasNotebook,
    execute: async () => {
      const model = manager.current;
      if (!model) {
        return;
      }
      // As the panel does: restoring replaces the kernel's variables, so ask first.
      const answer = await showDialog({
        title: 'Restore the latest state checkpoint?',
        body: `The variables of ${model.path}'s kernel are replaced by those of its latest state checkpoint. Variables the checkpoint does not hold are left alone.`,
        buttons: [
          Dialog.cancelButton({ label: 'Cancel' }),
          Dialog.warnButton({ label: 'Restore' })
        ]
      });
      if (answer.button.accept) {
        await restoreWithNotice(model);
      }
    }
  });
  app.commands.addCommand(ids.list, {
    label: 'List the State Checkpoints of This Notebook',
    caption:
      "The current notebook's state checkpoints (saved kernel variables), read by the server",
    isEnabled: hasNotebook,
    execute: async () => {
      const model = manager.current;
      if (!model) {
        return;
      }
      let body: Widget;
      try {
        body = checkpointTable(await model.list());
      } catch (reason) {
        body = new Widget();
        body.node.textContent = `Could not list the state checkpoints: ${reason}`;
      }
      await showDialog({
        title: `State checkpoints of ${model.path}`,
        body,
        buttons: [Dialog.okButton({ label: 'Close' })]
      });
    }
  });
  if (palette) {
    for (const command of [ids.openPanel, ids.restoreLatest, ids.list]) {
      palette.addItem({ command, category: CATEGORY });
    }
  }
}

/** The checkpoints as a table, newest first. */
export function checkpointTable(checkpoints: ICheckpointInfo[]): Widget {
  const widget = new Widget();
  widget.addClass('nbc-list');
  if (checkpoints.length === 0) {
    widget.node.textContent = 'No state checkpoints yet.';
    return widget;
  }
  const table = document.createElement('table');
  const head = table.createTHead().insertRow();
  for (const label of ['id', 'when and where', 'status', 'variables', 'size']) {
    const th = document.createElement('th');
    th.textContent = label;
    head.appendChild(th);
  }
  const rows = table.createTBody();
  for (const ck of [...checkpoints].reverse()) {
    const row = rows.insertRow();
    const cells = [
      `#${ck.id}${ck.pinned ? ' (pinned)' : ''}`,
      describeCheckpoint(ck),
      ck.verified ? ck.status : `unverified: ${ck.problem}`,
      String(ck.variables),
      humanBytes(ck.size)
    ];
    for (const text of cells) {
      row.insertCell().textContent = text;
    }
  }
  widget.node.appendChild(table);
  return widget;
}

/** Adds the "State checkpoints" button to each notebook's toolbar. */
export class ToolbarButtonExtension implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(
    private readonly _commands: CommandRegistry,
    private readonly _commandId: string
  ) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new CommandToolbarButton({
      commands: this._commands,
      id: this._commandId,
      label: ''
    });
    button.addClass('nbc-toolbar-button');
    if (!panel.toolbar.insertAfter('cellType', 'nbcheckpoint', button)) {
      panel.toolbar.addItem('nbcheckpoint', button);
    }
    return button;
  }
}
