/**
 * After a kernel restart: offer to restore the latest checkpoint, and report restores.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';

import {
  IProblemMessage,
  latest,
  plainText,
  problemText,
  offerRestoreSetting,
  offerText,
  OfferRestore
} from './helpers';
import { ICheckpointManager, INotebookCheckpoints } from './tokens';

/** How long a restore may take before "Restoring…" is shown, and how long that stays up. */
const IN_PROGRESS_AFTER = 1000;
const IN_PROGRESS_AT_LEAST = 1000;

/**
 * Restore in the notebook's kernel and say how it went, in one notification.
 *
 * A restore that takes long shows "Restoring…" first, which then turns into the result. A
 * quick one shows only the result: JupyterLab draws a toast asynchronously, and an update
 * made before the toast is drawn is lost (the toast stayed at "Restoring…" for good).
 */
export async function restoreWithNotice(
  model: INotebookCheckpoints,
  id?: number,
  key?: string
): Promise<void> {
  let notice: string | null = null;
  let shownAt = 0;
  const timer = window.setTimeout(() => {
    notice = Notification.emit(
      `Restoring ${id === undefined ? 'the latest state checkpoint' : `state checkpoint #${id}`} of ${model.path}…`,
      'in-progress',
      { autoClose: false }
    );
    shownAt = Date.now();
  }, IN_PROGRESS_AFTER);
  const say = async (
    message: string,
    type: 'success' | 'error',
    autoClose: number | false
  ): Promise<void> => {
    window.clearTimeout(timer);
    if (notice === null) {
      Notification.emit(message, type, { autoClose });
      return;
    }
    const wait = shownAt + IN_PROGRESS_AT_LEAST - Date.now();
    if (wait > 0) {
      await new Promise(resolve => window.setTimeout(resolve, wait));
    }
    Notification.update({ id: notice, message, type, autoClose });
  };
  try {
    const result = await model.restore(id, key);
    await say(result.summary, 'success', 10000);
    void model.refresh();
  } catch (reason) {
    const message = reason instanceof Error ? reason.message : String(reason);
    await say(`Restore failed: ${message}`, 'error', false);
  }
}

/** Offers a restore once per restart of any open notebook's kernel, as `offerRestore` says. */
export class RestartOffer {
  constructor(
    manager: ICheckpointManager,
    private readonly _openPanel: (model: INotebookCheckpoints) => void
  ) {
    manager.restarted.connect((_, model) => void this._onRestarted(model));
    // Restored from anywhere (the panel's banner, %checkpoint restore, the palette):
    // the offer is answered.
    manager.restored.connect((_, model) => this.dismiss(model));
  }

  /** Take back the offer for `model`'s restart, if one is shown. */
  dismiss(model: INotebookCheckpoints): void {
    const id = this._offers.get(model);
    if (id !== undefined) {
      this._offers.delete(model);
      Notification.dismiss(id);
    }
  }

  /** The `offerRestore` setting: ask, always, never. */
  mode: OfferRestore = 'ask';

  setMode(value: unknown): void {
    this.mode = offerRestoreSetting(value);
  }

  private async _onRestarted(model: INotebookCheckpoints): Promise<void> {
    if (this.mode === 'never') {
      return;
    }
    let newest;
    try {
      newest = latest(await model.list());
    } catch (reason) {
      console.warn(
        'nbcheckpoint: could not list checkpoints after a restart',
        reason
      );
      return;
    }
    if (!newest || model.isDisposed) {
      return;
    }
    void model.refresh();
    // Checkpoints filed under an older name (before the notebook had its id) are
    // restored from that key, by number; the notebook's own are restored as "the latest".
    const legacy =
      newest.key && newest.key !== model.notebookId ? newest.key : undefined;
    const restore = () =>
      restoreWithNotice(model, legacy ? newest.id : undefined, legacy);
    if (this.mode === 'always') {
      await restore();
      return;
    }
    // A second restart replaces the offer of the first one.
    const previous = this._offers.get(model);
    if (previous) {
      Notification.dismiss(previous);
    }
    const id = Notification.info(offerText(newest), {
      autoClose: false,
      actions: [
        {
          label: 'Restore',
          caption: 'Run %checkpoint restore in the new kernel',
          displayType: 'accent',
          callback: () => {
            this._offers.delete(model);
            void restore();
          }
        },
        {
          label: 'Open panel',
          caption: 'Show the State checkpoints panel of this notebook',
          callback: () => {
            this._offers.delete(model);
            this._openPanel(model);
          }
        }
      ]
    });
    this._offers.set(model, id);
  }

  private _offers = new Map<INotebookCheckpoints, string>();
}

/**
 * A kernel's warning (a store that cannot be written, a checkpoint that failed) as a
 * JupyterLab notification, once per notebook and message: the cell's output may be
 * scrolled away, and the loop runs on without the checkpoints the user counts on.
 */
export class ProblemNotices {
  constructor(
    manager: ICheckpointManager,
    private readonly _openPanel: (model: INotebookCheckpoints) => void
  ) {
    manager.problem.connect((_, { model, problem }) =>
      this._show(model, problem)
    );
  }

  private _show(model: INotebookCheckpoints, problem: IProblemMessage): void {
    const message = problemText(model.path, problem);
    let seen = this._seen.get(model);
    if (!seen) {
      seen = new Set();
      this._seen.set(model, seen);
    }
    if (seen.has(message)) {
      return;
    }
    seen.add(message);
    Notification.warning(message, {
      autoClose: false,
      actions: [
        {
          label: 'Details',
          caption: 'The whole message, as printed under the cell',
          callback: () =>
            void showDialog({
              title: `State checkpoints of ${model.path}`,
              body: plainText(problem.text),
              buttons: [Dialog.okButton({ label: 'Close' })]
            })
        },
        {
          label: 'Open panel',
          caption: 'Show the State checkpoints panel of this notebook',
          callback: () => this._openPanel(model)
        }
      ]
    });
  }

  private _seen = new WeakMap<INotebookCheckpoints, Set<string>>();
}
