/**
 * The "Checkpoints" panel in the right sidebar: the kernel's own ipywidgets panel, for the active notebook.
 *
 * The panel is rendered by the notebook's kernel (`%checkpoint panel`, executed silently)
 * into an OutputArea that uses the notebook's rendermime, which knows the widget
 * renderer. One OutputArea per notebook document is kept while it is open, so
 * switching notebooks does not create a new widget (and a new event subscriber) in
 * the kernel each time; a kernel change or restart renders it again.
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { OutputArea, OutputAreaModel } from '@jupyterlab/outputarea';
import { KernelMessage } from '@jupyterlab/services';
import { refreshIcon, ToolbarButton } from '@jupyterlab/ui-components';
import { Panel, Widget } from '@lumino/widgets';

import { PANEL_CODE } from './helpers';
import { checkpointIcon } from './icon';
import {
  ICheckpointManager,
  ICheckpointSidebar,
  INotebookCheckpoints,
  NotebookContext
} from './tokens';

/** What the sidebar holds for one open notebook. */
class View {
  constructor(
    readonly model: INotebookCheckpoints,
    panel: NotebookPanel
  ) {
    this.area = new OutputArea({
      // Our own code produced this output: trusted, so widgets and HTML render.
      model: new OutputAreaModel({ trusted: true }),
      rendermime: panel.content.rendermime
    });
    this.area.addClass('nbc-sidebar-output');
    model.restarted.connect(() => {
      this.generation += 1;
    });
  }

  readonly area: OutputArea;
  /** Which kernel (id and restart count) the shown output came from. */
  renderedFor: string | null = null;
  generation = 0;
  busy = false;

  key(): string | null {
    const kernel = this.model.context.sessionContext.session?.kernel;
    return kernel ? `${kernel.id}:${this.generation}` : null;
  }

  dispose(): void {
    this.area.dispose();
  }
}

export class CheckpointSidebar extends Panel implements ICheckpointSidebar {
  constructor(
    private readonly _tracker: INotebookTracker,
    private readonly _manager: ICheckpointManager
  ) {
    super();
    this.id = 'nbcheckpoint-sidebar';
    this.addClass('nbc-sidebar');
    this.title.icon = checkpointIcon;
    this.title.caption = 'Checkpoints';

    const header = new Widget();
    header.addClass('nbc-sidebar-header');
    const title = document.createElement('h2');
    title.textContent = 'Checkpoints';
    this._name = document.createElement('span');
    this._name.className = 'nbc-sidebar-notebook';
    header.node.append(title, this._name);
    const reload = new ToolbarButton({
      icon: refreshIcon,
      tooltip: 'Show the panel again, from the kernel',
      onClick: () => this.reload()
    });
    reload.addClass('nbc-sidebar-reload');
    const top = new Panel();
    top.addClass('nbc-sidebar-top');
    top.addWidget(header);
    top.addWidget(reload);
    this.addWidget(top);

    this._note = new Widget();
    this._note.addClass('nbc-sidebar-note');
    this.addWidget(this._note);
    this._body = new Panel();
    this._body.addClass('nbc-sidebar-body');
    this.addWidget(this._body);

    _tracker.currentChanged.connect(() => this._follow());
    this._follow();
  }

  reload(): void {
    const view = this._current;
    if (view) {
      view.renderedFor = null;
      void this._update();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._views.forEach(view => view.dispose());
    this._views.clear();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this._update();
  }

  /** Show the current notebook's view, making it on first sight. */
  private _follow(): void {
    const panel = this._tracker.currentWidget;
    const previous = this._current;
    this._current = panel ? this._view(panel) : null;
    if (previous && previous !== this._current) {
      this._body.layout?.removeWidget(previous.area);
    }
    if (this._current && this._current.area.parent !== this._body) {
      this._body.addWidget(this._current.area);
    }
    this._name.textContent = panel ? panel.context.path : '';
    this._name.title = this._name.textContent;
    if (!panel) {
      this._say('Open a notebook to see its checkpoints.');
    }
    void this._update();
  }

  private _view(panel: NotebookPanel): View {
    const context = panel.context;
    let view = this._views.get(context);
    if (!view) {
      const created = new View(this._manager.get(panel), panel);
      const rerender = () => {
        if (this._current === created) {
          void this._update();
        }
      };
      context.sessionContext.kernelChanged.connect(rerender);
      created.model.restarted.connect(rerender);
      context.disposed.connect(() => {
        this._views.delete(context);
        if (this._current === created) {
          this._current = null;
          this._say('Open a notebook to see its checkpoints.');
        }
        created.dispose();
      });
      this._views.set(context, created);
      view = created;
    }
    return view;
  }

  /** Render the current view if it is shown and stale. */
  private async _update(): Promise<void> {
    const view = this._current;
    if (!view || !this.isVisible || view.busy) {
      return;
    }
    const session = view.model.context.sessionContext;
    let attempted: string | null = null;
    view.busy = true;
    try {
      await session.ready;
      const kernel = session.session?.kernel;
      const key = view.key();
      if (!kernel || key === null) {
        this._say('This notebook has no kernel: start one to see its panel.');
        return;
      }
      if (view.renderedFor === key) {
        this._say('');
        return;
      }
      attempted = key;
      view.renderedFor = key;
      const info = await kernel.info;
      if (info.language_info.name !== 'python') {
        this._say(
          `The panel needs an IPython kernel; this notebook runs ${info.language_info.name}.`
        );
        return;
      }
      view.area.model.clear();
      this._say(
        kernel.status === 'busy'
          ? 'The panel appears when the running cell finishes…'
          : 'Loading the panel from the kernel…'
      );
      const future = kernel.requestExecute({
        code: PANEL_CODE,
        silent: true,
        store_history: false,
        stop_on_error: false
      });
      view.area.future = future;
      // `%load_ext` prints a line about earlier checkpoints, which the panel's own
      // banner already says: the sidebar shows the panel, errors and warnings only.
      const show = future.onIOPub;
      future.onIOPub = msg => {
        if (KernelMessage.isStreamMsg(msg) && msg.content.name === 'stdout') {
          return;
        }
        return show(msg);
      };
      await future.done;
      if (this._current === view) {
        this._say('');
      }
    } catch (reason) {
      view.renderedFor = null;
      if (this._current === view) {
        this._say(`Could not show the panel: ${reason}`);
      }
    } finally {
      view.busy = false;
    }
    // The notebook may have changed kernel (or restarted) while we waited.
    if (this._current === view && view.key() !== attempted) {
      void this._update();
    }
  }

  private _say(text: string): void {
    this._note.node.textContent = text;
    this._note.setHidden(text === '');
  }

  private _views = new Map<NotebookContext, View>();
  private _current: View | null = null;
  private _name: HTMLElement;
  private _note: Widget;
  private _body: Panel;
}
