/**
 * The status bar item: time since the current notebook's last checkpoint, and the
 * loop progress of a running `%%checkpoint` cell, as the kernel pushes them.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { statusText, statusTitle } from './helpers';
import { checkpointIcon } from './icon';
import {
  ICheckpointManager,
  ICheckpointStatus,
  INotebookCheckpoints
} from './tokens';

export class CheckpointStatusItem extends Widget {
  constructor(
    private readonly _manager: ICheckpointManager,
    onClick: () => void
  ) {
    super();
    this.addClass('nbc-status');
    this.addClass('jp-StatusBar-GroupItem');
    const icon = document.createElement('span');
    icon.className = 'nbc-status-icon';
    checkpointIcon.element({ container: icon, elementPosition: 'center' });
    this._text = document.createElement('span');
    this._text.className = 'jp-StatusBar-TextItem nbc-status-text';
    this.node.append(icon, this._text);
    this.node.addEventListener('click', onClick);
    _manager.currentChanged.connect(this._follow, this);
    this._follow();
  }

  /** Shown only when the current notebook has a checkpoint to talk about. */
  get isActive(): boolean {
    return this._status !== null;
  }

  get activeStateChanged(): ISignal<this, void> {
    return this._activeStateChanged;
  }

  dispose(): void {
    this._stopClock();
    super.dispose();
  }

  private _follow(): void {
    if (this._model) {
      this._model.statusChanged.disconnect(this._onStatus, this);
    }
    this._model = this._manager.current;
    if (this._model) {
      this._model.statusChanged.connect(this._onStatus, this);
    }
    this._onStatus(this._model, this._model?.status ?? null);
  }

  private _onStatus(
    _: INotebookCheckpoints | null,
    status: ICheckpointStatus | null
  ): void {
    const wasActive = this.isActive;
    this._status = status;
    this._render();
    if (status) {
      this._startClock();
    } else {
      this._stopClock();
    }
    if (wasActive !== this.isActive) {
      this._activeStateChanged.emit();
    }
  }

  private _render(): void {
    if (!this._status) {
      this._text.textContent = '';
      this.node.title = '';
      return;
    }
    this._text.textContent = statusText(this._status, Date.now());
    this.node.title = statusTitle(this._status);
  }

  private _startClock(): void {
    if (this._clock === null) {
      this._clock = window.setInterval(() => this._render(), 1000);
    }
  }

  private _stopClock(): void {
    if (this._clock !== null) {
      window.clearInterval(this._clock);
      this._clock = null;
    }
  }

  private _model: INotebookCheckpoints | null = null;
  private _status: ICheckpointStatus | null = null;
  private _text: HTMLElement;
  private _clock: number | null = null;
  private _activeStateChanged = new Signal<this, void>(this);
}
