/**
 * Kernel and comm events turned into Lumino signals: one model per open notebook, and the manager.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import {
  Kernel,
  KernelMessage,
  ServerConnection,
  Session
} from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { listCheckpoints } from './api';
import {
  ICheckpointInfo,
  ICheckpointStatus,
  INITIAL_RESTART_STATE,
  IRestartState,
  IStatusMessage,
  latest,
  plainText,
  restoreCode,
  restoreSummary,
  statusFromInfo,
  statusFromMessage,
  trackRestart
} from './helpers';
import {
  ICheckpointManager,
  INotebookCheckpoints,
  IRestoreResult,
  NotebookContext,
  STATUS_COMM_TARGET
} from './tokens';

/** Checkpoints of one open notebook (see {@link INotebookCheckpoints}). */
export class NotebookCheckpoints implements INotebookCheckpoints {
  constructor(
    readonly context: NotebookContext,
    private readonly _serverSettings: ServerConnection.ISettings
  ) {
    const session = context.sessionContext;
    session.kernelChanged.connect(this._onKernelChanged, this);
    session.statusChanged.connect(this._onStatusChanged, this);
    this._connect(session.session?.kernel ?? null);
    void context.ready.then(() => this.refresh());
  }

  get path(): string {
    return this.context.path;
  }

  get status(): ICheckpointStatus | null {
    return this._status;
  }

  get statusChanged(): ISignal<this, ICheckpointStatus | null> {
    return this._statusChanged;
  }

  get restarted(): ISignal<this, void> {
    return this._restarted;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  list(): Promise<ICheckpointInfo[]> {
    return listCheckpoints(this.path, this._serverSettings);
  }

  async refresh(): Promise<void> {
    try {
      const newest = latest(await this.list());
      // A comm message that arrived while we waited is newer than the server's answer.
      if (newest && (!this._status || this._status.id < newest.id)) {
        this._setStatus(statusFromInfo(newest, Date.now()));
      }
    } catch (reason) {
      console.warn(
        `nbcheckpoint: could not list the checkpoints of ${this.path}`,
        reason
      );
    }
  }

  async restore(id?: number): Promise<IRestoreResult> {
    const kernel = this.context.sessionContext.session?.kernel;
    if (!kernel) {
      throw new Error(`${this.path} has no kernel to restore into.`);
    }
    let output = '';
    // Silent: no execution count and no history entry in the user's notebook, and
    // the magics' cell hooks (auto checkpoints) stay out of it; output still comes.
    const future = kernel.requestExecute({
      code: restoreCode(id),
      silent: true,
      store_history: false,
      stop_on_error: true
    });
    future.onIOPub = msg => {
      if (KernelMessage.isStreamMsg(msg) && msg.content.name === 'stdout') {
        output += msg.content.text;
      }
    };
    const reply = await future.done;
    if (reply.content.status === 'error') {
      const content = reply.content as KernelMessage.IReplyErrorContent;
      throw new Error(
        plainText(`${content.ename}: ${content.evalue}`) +
          (output ? `\n${output}` : '')
      );
    }
    return { summary: restoreSummary(output), output };
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._connect(null);
    Signal.clearData(this);
  }

  private _connect(kernel: Kernel.IKernelConnection | null): void {
    if (this._kernel) {
      this._kernel.removeCommTarget(STATUS_COMM_TARGET, this._onCommOpen);
    }
    this._kernel = kernel;
    if (kernel) {
      kernel.registerCommTarget(STATUS_COMM_TARGET, this._onCommOpen);
    }
  }

  private _onKernelChanged(
    _: ISessionContext,
    change: Session.ISessionConnection.IKernelChangedArgs
  ): void {
    // The comm target lives on the kernel connection: register it on the new one.
    this._connect(change.newValue);
    this._restart = INITIAL_RESTART_STATE;
  }

  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    const [next, finished] = trackRestart(this._restart, status, Date.now());
    this._restart = next;
    if (finished) {
      this._restarted.emit();
    }
  }

  /** Each update comes as its own short comm: the data of its open message is the update. */
  private _onCommOpen = (
    _comm: Kernel.IComm,
    msg: KernelMessage.ICommOpenMsg
  ): void => {
    const data = msg.content.data as unknown as IStatusMessage;
    if (data && typeof data.id === 'number') {
      this._setStatus(statusFromMessage(data, Date.now()));
    }
  };

  private _setStatus(status: ICheckpointStatus | null): void {
    this._status = status;
    this._statusChanged.emit(status);
  }

  private _isDisposed = false;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _restart: IRestartState = INITIAL_RESTART_STATE;
  private _status: ICheckpointStatus | null = null;
  private _statusChanged = new Signal<this, ICheckpointStatus | null>(this);
  private _restarted = new Signal<this, void>(this);
}

/** One {@link NotebookCheckpoints} per open notebook document, following the tracker. */
export class CheckpointManager implements ICheckpointManager {
  constructor(
    tracker: INotebookTracker,
    private readonly _serverSettings: ServerConnection.ISettings
  ) {
    this._tracker = tracker;
    tracker.widgetAdded.connect((_, panel) => this.get(panel));
    tracker.currentChanged.connect(() =>
      this._currentChanged.emit(this.current)
    );
    tracker.forEach(panel => this.get(panel));
  }

  get current(): INotebookCheckpoints | null {
    const panel = this._tracker.currentWidget;
    return panel ? this.get(panel) : null;
  }

  get currentChanged(): ISignal<this, INotebookCheckpoints | null> {
    return this._currentChanged;
  }

  get restarted(): ISignal<this, INotebookCheckpoints> {
    return this._restarted;
  }

  get(panel: NotebookPanel): INotebookCheckpoints {
    // Keyed by the document: two views of one notebook share its kernel connection,
    // and a kernel connection holds one callback per comm target.
    let model = this._models.get(panel.context);
    if (!model) {
      const created = new NotebookCheckpoints(
        panel.context,
        this._serverSettings
      );
      created.restarted.connect(() => this._restarted.emit(created));
      this._models.set(panel.context, created);
      panel.context.disposed.connect(() => {
        this._models.delete(panel.context);
        created.dispose();
      });
      model = created;
    }
    return model;
  }

  private _tracker: INotebookTracker;
  private _models = new Map<NotebookContext, NotebookCheckpoints>();
  private _currentChanged = new Signal<this, INotebookCheckpoints | null>(this);
  private _restarted = new Signal<this, INotebookCheckpoints>(this);
}
