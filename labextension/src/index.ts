/**
 * The JupyterLab plugins of nbcheckpoint, and their command ids.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { addCommands, ToolbarButtonExtension } from './commands';
import { CheckpointManager } from './model';
import { ProblemNotices, RestartOffer } from './notification';
import { CheckpointSidebar } from './sidebar';
import { CheckpointStatusItem } from './statusbar';
import { ICheckpointManager, ICheckpointSidebar } from './tokens';

export namespace CommandIDs {
  export const openPanel = 'nbcheckpoint:open-panel';
  export const restoreLatest = 'nbcheckpoint:restore-latest';
  export const list = 'nbcheckpoint:list';
}

const PREFIX = 'nbcheckpoint-labextension';

/** Follows open notebooks: kernel comms, restarts, the server's checkpoint list. */
const managerPlugin: JupyterFrontEndPlugin<ICheckpointManager> = {
  id: `${PREFIX}:manager`,
  description:
    'State checkpoints (saved kernel variables) of the open notebooks, their status and restarts.',
  autoStart: true,
  requires: [INotebookTracker],
  provides: ICheckpointManager,
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) =>
    new CheckpointManager(
      tracker,
      app.serviceManager.serverSettings,
      app.serviceManager.contents
    )
};

/** The Checkpoints panel in the right sidebar. */
const sidebarPlugin: JupyterFrontEndPlugin<ICheckpointSidebar> = {
  id: `${PREFIX}:sidebar`,
  description:
    "The State checkpoints panel in the right sidebar: the server's list and the kernel's panel.",
  autoStart: true,
  requires: [ICheckpointManager, INotebookTracker],
  optional: [ILabShell, ILayoutRestorer],
  provides: ICheckpointSidebar,
  activate: (
    app: JupyterFrontEnd,
    manager: ICheckpointManager,
    tracker: INotebookTracker,
    _labShell: ILabShell | null,
    restorer: ILayoutRestorer | null
  ) => {
    const sidebar = new CheckpointSidebar(tracker, manager);
    app.shell.add(sidebar, 'right', { rank: 650 });
    restorer?.add(sidebar, sidebar.id);
    return sidebar;
  }
};

/** Commands, the toolbar button, and the offer to restore after a restart (with its settings). */
const plugin: JupyterFrontEndPlugin<void> = {
  id: `${PREFIX}:plugin`,
  description:
    'Restore after a kernel restart; commands and the notebook toolbar button.',
  autoStart: true,
  requires: [ICheckpointManager, ICheckpointSidebar],
  optional: [ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    manager: ICheckpointManager,
    sidebar: ICheckpointSidebar,
    settings: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    addCommands(app, manager, sidebar, CommandIDs, palette);
    app.docRegistry.addWidgetExtension(
      'Notebook',
      new ToolbarButtonExtension(app.commands, CommandIDs.openPanel)
    );
    const openPanel = () => app.commands.execute(CommandIDs.openPanel);
    const offer = new RestartOffer(manager, openPanel);
    new ProblemNotices(manager, openPanel);
    if (settings) {
      void settings
        .load(plugin.id)
        .then(loaded => {
          const apply = () =>
            offer.setMode(loaded.get('offerRestore').composite);
          apply();
          loaded.changed.connect(apply);
        })
        .catch(reason =>
          console.error('nbcheckpoint: could not load its settings', reason)
        );
    }
  }
};

/** The status bar item: time since the last checkpoint, loop progress. */
const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PREFIX}:status`,
  description:
    "Time since the last state checkpoint and the running cell's progress in the status bar.",
  autoStart: true,
  requires: [ICheckpointManager],
  optional: [IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    manager: ICheckpointManager,
    statusBar: IStatusBar | null
  ) => {
    if (!statusBar) {
      return;
    }
    const item = new CheckpointStatusItem(manager, () =>
      app.commands.execute(CommandIDs.openPanel)
    );
    statusBar.registerStatusItem(`${PREFIX}:status`, {
      item,
      align: 'left',
      rank: 4,
      isActive: () => item.isActive,
      activeStateChanged: item.activeStateChanged
    });
  }
};

export default [managerPlugin, sidebarPlugin, plugin, statusPlugin];
