/**
 * The server's list of a notebook's state checkpoints, drawn in the sidebar.
 *
 * It needs no kernel: it is what the sidebar shows while a cell runs (the kernel
 * cannot render its panel until the cell ends), before the kernel panel is up,
 * with no kernel or a non-Python one, and after a crash. The kernel's status
 * messages keep it live: a progress line at once, the rows re-read from the
 * server at most once a second.
 */
import { Widget } from '@lumino/widgets';

import { CompareBox } from './diff';
import {
  checkpointRow,
  ICheckpointInfo,
  ICheckpointStatus,
  statusText
} from './helpers';
import { INotebookCheckpoints } from './tokens';

/** Re-read the server's list at most this often while checkpoints stream in. */
const REFRESH_MS = 1000;
/** Redraw the rows this often, so "3 min ago" stays true without asking the server. */
const TICK_MS = 15000;

export class ServerList extends Widget {
  constructor(private readonly _model: INotebookCheckpoints) {
    super();
    this.addClass('nbc-server-list');
    this._live = document.createElement('div');
    this._live.className = 'nbc-live';
    this._rows = document.createElement('ol');
    this._rows.className = 'nbc-server-rows';
    this._message = document.createElement('div');
    this._message.className = 'nbc-server-message';
    // Check two rows, then Compare (diff.ts).
    this._compare = new CompareBox((a, b) => this._model.diff(a, b));
    this.node.append(this._live, this._message, this._rows, this._compare.node);
    _model.statusChanged.connect(this._onStatus, this);
    this._onStatus(_model, _model.status);
    this._tick = window.setInterval(() => {
      if (this.isVisible && this._shown.length > 0) {
        this._draw(this._shown);
      }
    }, TICK_MS);
  }

  /** How many rows are drawn (for tests and the sidebar's note). */
  get count(): number {
    return this._rows.childElementCount;
  }

  /** Read the list from the server and draw it; a failure is said in place of the rows. */
  async refresh(): Promise<void> {
    if (this._loading) {
      this._again = true;
      return this._loading;
    }
    this._loading = this._load();
    try {
      await this._loading;
    } finally {
      this._loading = null;
    }
    if (this._again) {
      this._again = false;
      await this.refresh();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.statusChanged.disconnect(this._onStatus, this);
    window.clearTimeout(this._timer);
    window.clearInterval(this._clock);
    window.clearInterval(this._tick);
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private async _load(): Promise<void> {
    let checkpoints: ICheckpointInfo[];
    try {
      checkpoints = await this._model.list();
    } catch (reason) {
      this._message.textContent = `Could not read the state checkpoints from the server: ${
        reason instanceof Error ? reason.message : String(reason)
      }`;
      return;
    }
    this._shown = checkpoints;
    this._readAt = Date.now();
    this._draw(checkpoints);
  }

  private _draw(checkpoints: ICheckpointInfo[]): void {
    // The server measured each age when it answered: add the time since.
    const since = Math.max(0, Date.now() - this._readAt) / 1000;
    const newestFirst = [...checkpoints].sort(
      (a, b) => b.created - a.created || b.id - a.id
    );
    this._message.textContent =
      newestFirst.length === 0
        ? `No state checkpoints yet for ${this._model.path}. Run a cell with %%checkpoint to take some.`
        : '';
    const rows = newestFirst.map(info => {
      const row = checkpointRow(info, since);
      const li = document.createElement('li');
      li.className = 'nbc-server-row';
      li.title = row.title;
      const head = document.createElement('div');
      head.className = 'nbc-server-row-head';
      const id = document.createElement('span');
      id.className = 'nbc-server-row-id';
      id.textContent = row.label;
      const badge = document.createElement('span');
      badge.className = `nbc-server-row-status nbc-status-${row.tone}`;
      badge.textContent = row.status;
      head.append(this._compare.pickBox(info), id, badge);
      const where = document.createElement('div');
      where.className = 'nbc-server-row-where';
      where.textContent = row.where;
      const what = document.createElement('div');
      what.className = 'nbc-server-row-what';
      what.textContent = row.what;
      li.append(head, where, what);
      return li;
    });
    this._rows.replaceChildren(...rows);
    this._compare.keepOnly(newestFirst);
    this._compare.node.hidden = newestFirst.length < 2;
  }

  private _onStatus(
    _: INotebookCheckpoints,
    status: ICheckpointStatus | null
  ): void {
    this._status = status;
    this._drawLive();
    if (status && this._clock === 0) {
      this._clock = window.setInterval(() => this._drawLive(), 1000);
    }
    if (status && this.isVisible && this._timer === 0) {
      this._timer = window.setTimeout(() => {
        this._timer = 0;
        void this.refresh();
      }, REFRESH_MS);
    }
  }

  private _drawLive(): void {
    const status = this._status;
    this._live.textContent = status
      ? `Latest: ${statusText(status, Date.now())}${
          status.status === 'running' ? ' (cell running)' : ''
        }`
      : '';
    this._live.hidden = !status;
  }

  private _compare: CompareBox;
  private _live: HTMLElement;
  private _rows: HTMLElement;
  private _message: HTMLElement;
  private _status: ICheckpointStatus | null = null;
  private _loading: Promise<void> | null = null;
  private _again = false;
  private _timer = 0;
  private _clock = 0;
  private _tick = 0;
  private _shown: ICheckpointInfo[] = [];
  private _readAt = 0;
}
