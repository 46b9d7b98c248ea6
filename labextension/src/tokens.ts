/**
 * Interfaces other plugins use, each paired with its token.
 */
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { Token } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

import {
  ICheckpointInfo,
  ICheckpointStatus,
  IDiffResult,
  IProblemMessage
} from './helpers';

export { ICheckpointInfo, ICheckpointStatus } from './helpers';

/** The iopub message type the kernel sends after each checkpoint (nbcheckpoint/frontend/comm.py). */
export const STATUS_MSG_TYPE = 'nbcheckpoint_status';

/** An open notebook document (shared by all its views). */
export type NotebookContext = DocumentRegistry.IContext<INotebookModel>;

/** What a restore in the kernel said. */
export interface IRestoreResult {
  /** The line worth showing: "Restored checkpoint #3 (...)". */
  summary: string;
  /** Everything it printed. */
  output: string;
}

/**
 * Checkpoints of one open notebook: the kernel's pushed status, restarts, the
 * server's list, and restoring into the notebook's kernel.
 */
export interface INotebookCheckpoints extends IDisposable {
  readonly context: NotebookContext;
  /** The notebook's path relative to the server root. */
  readonly path: string;
  /** The last checkpoint this notebook's kernel (or the server) told us about. */
  readonly status: ICheckpointStatus | null;
  readonly statusChanged: ISignal<
    INotebookCheckpoints,
    ICheckpointStatus | null
  >;
  /** Emitted once per kernel restart (crash or menu), when the new kernel is ready. */
  readonly restarted: ISignal<INotebookCheckpoints, void>;
  /** A warning from the kernel the user must see (a store that cannot be written...). */
  readonly problem: ISignal<INotebookCheckpoints, IProblemMessage>;
  /** Variables were restored in the kernel (by the panel, the magic or a command). */
  readonly restored: ISignal<INotebookCheckpoints, number>;
  /** The notebook's checkpoints from the server, oldest first; no kernel needed. */
  list(): Promise<ICheckpointInfo[]>;
  /** Two of those compared by the server (each `key:id`, as `list` gives them). */
  diff(before: string, after: string): Promise<IDiffResult>;
  /** Ask the server for the latest checkpoint and update `status`. */
  refresh(): Promise<void>;
  /** The notebook's stable id (`metadata.nbcheckpoint.id`), once the document is loaded. */
  readonly notebookId: string | null;
  /**
   * Settles when the kernel has been told the notebook's identity (as far as asked so
   * far). Code that reads the store in the kernel waits for it, or it would look under
   * the name the kernel was started with.
   */
  readonly identified: Promise<void>;
  /**
   * Restore checkpoint `id` (default: the latest that verifies) in the notebook's kernel;
   * `key`: from that store key (an older name of the notebook) instead of the notebook's id.
   */
  restore(id?: number, key?: string): Promise<IRestoreResult>;
}

/** A kernel's warning, with the notebook it came from. */
export interface IProblem {
  model: INotebookCheckpoints;
  problem: IProblemMessage;
}

/** Follows open notebooks and which one is current. */
export interface ICheckpointManager {
  /** The model of the current notebook, if the current widget is a notebook. */
  readonly current: INotebookCheckpoints | null;
  readonly currentChanged: ISignal<
    ICheckpointManager,
    INotebookCheckpoints | null
  >;
  /** Emitted for any open notebook whose kernel has restarted. */
  readonly restarted: ISignal<ICheckpointManager, INotebookCheckpoints>;
  /** A warning from any open notebook's kernel. */
  readonly problem: ISignal<ICheckpointManager, IProblem>;
  /** Any open notebook's kernel restored variables from a checkpoint. */
  readonly restored: ISignal<ICheckpointManager, INotebookCheckpoints>;
  /** The model of an open notebook. */
  get(panel: NotebookPanel): INotebookCheckpoints;
}

export const ICheckpointManager = new Token<ICheckpointManager>(
  'nbcheckpoint-labextension:ICheckpointManager',
  'Checkpoints of the open notebooks, their kernels status and restarts.'
);

/** The right-sidebar panel that hosts the kernel's ipywidgets checkpoint panel. */
export interface ICheckpointSidebar {
  /** The sidebar widget's id, for `app.shell.activateById`. */
  readonly id: string;
  /** Render the current notebook's panel again (a new widget from the kernel). */
  reload(): void;
}

export const ICheckpointSidebar = new Token<ICheckpointSidebar>(
  'nbcheckpoint-labextension:ICheckpointSidebar',
  'The State checkpoints panel in the right sidebar.'
);
