/**
 * Kernel and comm events turned into Lumino signals: one model per open notebook, and the manager.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import {
  Contents,
  Kernel,
  KernelMessage,
  ServerConnection,
  Session
} from '@jupyterlab/services';
import { UUID } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import { diffCheckpoints, listCheckpoints } from './api';
import {
  ICheckpointInfo,
  ICheckpointStatus,
  IDiffResult,
  identityCode,
  IProblemMessage,
  IDENTITY_NAME,
  INITIAL_RESTART_STATE,
  INotebookIdentity,
  IRestartState,
  IRestoredMessage,
  IStatusMessage,
  latest,
  plainText,
  readNotebookMetadata,
  restoreCode,
  restoreSummary,
  statusFromInfo,
  statusFromMessage,
  trackRestart
} from './helpers';
import {
  ICheckpointManager,
  INotebookCheckpoints,
  IProblem,
  IRestoreResult,
  NotebookContext,
  STATUS_MSG_TYPE
} from './tokens';

/** Where the notebook's id lives in its metadata: `metadata.nbcheckpoint.id`. */
export const METADATA_KEY = 'nbcheckpoint';

/** Checkpoints of one open notebook (see {@link INotebookCheckpoints}). */
export class NotebookCheckpoints implements INotebookCheckpoints {
  constructor(
    readonly context: NotebookContext,
    private readonly _serverSettings: ServerConnection.ISettings,
    private readonly _contents: Contents.IManager | null = null
  ) {
    const session = context.sessionContext;
    session.kernelChanged.connect(this._onKernelChanged, this);
    session.statusChanged.connect(this._onStatusChanged, this);
    context.pathChanged.connect(this._onPathChanged, this);
    this._path = context.path;
    this._connect(session.session?.kernel ?? null);
    void context.ready
      .then(() => this._ensureId())
      .then(() => this._sendIdentity())
      .then(() => this.refresh());
  }

  get path(): string {
    return this.context.path;
  }

  /** The notebook's stable id (`metadata.nbcheckpoint.id`), once the document is loaded. */
  get notebookId(): string | null {
    return this._id;
  }

  /** Settles when the kernel has been told the notebook's identity, as far as asked so far. */
  get identified(): Promise<void> {
    return this._identityChain;
  }

  /** What the kernel is told: id, path, server root (and an older key to restore from). */
  identity(key?: string): INotebookIdentity | null {
    if (!this._id) {
      return null;
    }
    const identity: INotebookIdentity = {
      id: this._id,
      path: this.context.path,
      root: PageConfig.getOption('serverRoot')
    };
    if (key && key !== this._id) {
      identity.key = key;
    }
    return identity;
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

  get problem(): ISignal<this, IProblemMessage> {
    return this._problem;
  }

  get restored(): ISignal<this, number> {
    return this._restored;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  diff(before: string, after: string): Promise<IDiffResult> {
    return diffCheckpoints(
      this.path,
      before,
      after,
      this._previousPaths,
      this._serverSettings
    );
  }

  list(): Promise<ICheckpointInfo[]> {
    return listCheckpoints(
      this.path,
      { id: this._id, keys: this._keys, also: this._previousPaths },
      this._serverSettings
    );
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

  async restore(id?: number, key?: string): Promise<IRestoreResult> {
    const kernel = this.context.sessionContext.session?.kernel;
    if (!kernel) {
      throw new Error(`${this.path} has no kernel to restore into.`);
    }
    let output = '';
    // Silent: no execution count and no history entry in the user's notebook, and
    // the magics' cell hooks (auto checkpoints) stay out of it; output still comes.
    const future = kernel.requestExecute({
      code: restoreCode(id, this.identity(key) ?? undefined),
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
      this._kernel.iopubMessage.disconnect(this._onIOPub, this);
    }
    this._kernel = kernel;
    if (kernel) {
      kernel.iopubMessage.connect(this._onIOPub, this);
    }
  }

  private _onKernelChanged(
    _: ISessionContext,
    change: Session.ISessionConnection.IKernelChangedArgs
  ): void {
    // The iopub signal belongs to the kernel connection: follow the new one.
    this._connect(change.newValue);
    this._restart = INITIAL_RESTART_STATE;
    void this._sendIdentity();
  }

  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    const [next, finished] = trackRestart(this._restart, status, Date.now());
    this._restart = next;
    if (finished) {
      // The new process knows only the name the kernel was started with: tell it
      // the notebook's id before anyone lists or restores.
      this._told = new WeakMap();
      void this._sendIdentity();
      this._restarted.emit();
    }
  }

  /** A rename or move: the id stays; the old path is remembered for its stores and path key. */
  private _onPathChanged(_: NotebookContext, path: string): void {
    if (this._path && this._path !== path) {
      this._previousPaths.add(this._path);
    }
    this._path = path;
    if (this._id) {
      this._writeMetadata(this._id, path);
      void this._sendIdentity();
    }
  }

  /**
   * Read `metadata.nbcheckpoint.id`. A file whose recorded path is another file that
   * still exists is a copy: it gets its own id (later), so the two notebooks do not
   * share checkpoints; if that path is gone, the notebook was renamed or moved.
   */
  private async _ensureId(): Promise<void> {
    const model = this.context.model;
    let meta = readNotebookMetadata(model.getMetadata(METADATA_KEY));
    const path = this.context.path;
    if (meta && meta.path && meta.path !== path) {
      if (await this._exists(meta.path)) {
        meta = null;
      } else {
        this._previousPaths.add(meta.path);
      }
    }
    if (meta && !this._id) {
      this._id = meta.id;
      if (meta.path !== path) {
        this._writeMetadata(meta.id, path);
      }
    }
  }

  private _writeMetadata(id: string, path: string): void {
    if (!this.context.model.isDisposed) {
      this.context.model.setMetadata(METADATA_KEY, { id, path });
    }
  }

  private async _exists(path: string): Promise<boolean> {
    if (!this._contents) {
      return false;
    }
    try {
      await this._contents.get(path, { content: false });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Tell a Python kernel who its notebook is: a silent one-line execution that sets
   * `__nbc_notebook__` (read by nbcheckpoint/ipython/identity.py). Silent: no
   * execution count, no history, no cell hooks. It works before `%load_ext`, and
   * queued executions run in order, so a restore sent after it finds the id.
   * Calls are chained: two at once would give the notebook two ids.
   */
  private _sendIdentity(): Promise<void> {
    this._identityChain = this._identityChain
      .then(() => this._tellKernel())
      .catch(reason =>
        console.warn(
          `nbcheckpoint: could not tell the kernel of ${this.path} its notebook id`,
          reason
        )
      );
    return this._identityChain;
  }

  private async _tellKernel(): Promise<void> {
    const kernel = this.context.sessionContext.session?.kernel;
    if (!kernel || !this.context.isReady) {
      return;
    }
    const info = await kernel.info;
    if (info.language_info.name !== 'python' || kernel.isDisposed) {
      return;
    }
    // A kernel that outlived a page reload already has an id, perhaps one that never
    // reached the file (the notebook was not saved): keep using it.
    const known = await askKernelId(kernel);
    if (!this._id) {
      this._id = known ?? UUID.uuid4();
      this._writeMetadata(this._id, this.context.path);
    } else if (known && known !== this._id) {
      // Its checkpoints so far are under that id: keep listing them.
      this._keys.add(known);
    }
    const identity = this.identity();
    if (!identity || kernel.isDisposed) {
      return;
    }
    const code = identityCode(identity);
    if (code === this._told.get(kernel)) {
      return;
    }
    this._told.set(kernel, code);
    await kernel.requestExecute(
      { code, silent: true, store_history: false, stop_on_error: false },
      true
    ).done;
  }

  /**
   * Each update is one iopub message of our own type (not a comm: see
   * nbcheckpoint/frontend/comm.py for why a comm made the kernel look idle).
   */
  private _onIOPub(
    _: Kernel.IKernelConnection,
    msg: KernelMessage.IIOPubMessage
  ): void {
    if ((msg.header.msg_type as string) !== STATUS_MSG_TYPE) {
      return;
    }
    const problem = msg.content as unknown as IProblemMessage;
    if (problem?.event === 'problem' && typeof problem.text === 'string') {
      this._problem.emit(problem);
      return;
    }
    const restored = msg.content as unknown as IRestoredMessage;
    if (restored?.event === 'restored' && typeof restored.id === 'number') {
      this._restored.emit(restored.id);
      return;
    }
    const data = msg.content as unknown as IStatusMessage;
    if (data && typeof data.id === 'number') {
      if (data.key) {
        this._keys.add(data.key);
      }
      this._setStatus(statusFromMessage(data, Date.now()));
    }
  }

  private _setStatus(status: ICheckpointStatus | null): void {
    this._status = status;
    this._statusChanged.emit(status);
  }

  private _isDisposed = false;
  private _id: string | null = null;
  private _identityChain: Promise<void> = Promise.resolve();
  /** The identity code each kernel connection was last sent (not sent twice). */
  private _told = new WeakMap<Kernel.IKernelConnection, string>();
  private _path: string;
  /** Store keys this notebook's kernels reported (older names included). */
  private _keys = new Set<string>();
  private _previousPaths = new Set<string>();
  private _kernel: Kernel.IKernelConnection | null = null;
  private _restart: IRestartState = INITIAL_RESTART_STATE;
  private _status: ICheckpointStatus | null = null;
  private _statusChanged = new Signal<this, ICheckpointStatus | null>(this);
  private _restarted = new Signal<this, void>(this);
  private _problem = new Signal<this, IProblemMessage>(this);
  private _restored = new Signal<this, number>(this);
}

/** The id a kernel was told earlier (by this page before a reload, say), or null. */
async function askKernelId(
  kernel: Kernel.IKernelConnection
): Promise<string | null> {
  const reply = await kernel.requestExecute(
    {
      code: '',
      silent: true,
      store_history: false,
      user_expressions: {
        id: `str((globals().get(${JSON.stringify(IDENTITY_NAME)}) or {}).get("id", ""))`
      }
    },
    true
  ).done;
  const content = reply.content as KernelMessage.IExecuteReply;
  const result = content.user_expressions?.id as
    { status?: string; data?: { 'text/plain'?: string } } | undefined;
  const text = result?.status === 'ok' ? result.data?.['text/plain'] : '';
  const id = (text ?? '').replace(/^'|'$/g, '');
  return readNotebookMetadata({ id })?.id ?? null;
}

/** One {@link NotebookCheckpoints} per open notebook document, following the tracker. */
export class CheckpointManager implements ICheckpointManager {
  constructor(
    tracker: INotebookTracker,
    private readonly _serverSettings: ServerConnection.ISettings,
    private readonly _contents: Contents.IManager | null = null
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

  get problem(): ISignal<this, IProblem> {
    return this._problem;
  }

  get restored(): ISignal<this, INotebookCheckpoints> {
    return this._restoredAny;
  }

  get(panel: NotebookPanel): INotebookCheckpoints {
    // Keyed by the document: two views of one notebook share its kernel connection,
    // and a kernel connection holds one callback per comm target.
    let model = this._models.get(panel.context);
    if (!model) {
      const created = new NotebookCheckpoints(
        panel.context,
        this._serverSettings,
        this._contents
      );
      created.restarted.connect(() => this._restarted.emit(created));
      created.problem.connect((_, problem) =>
        this._problem.emit({ model: created, problem })
      );
      created.restored.connect(() => this._restoredAny.emit(created));
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
  private _problem = new Signal<this, IProblem>(this);
  private _restoredAny = new Signal<this, INotebookCheckpoints>(this);
}
