/**
 * The "State checkpoints" panel in the right sidebar, for the active notebook.
 *
 * Two views of the same checkpoints, one per open notebook document:
 * - the server's list (`serverlist.ts`), which needs no kernel: shown first, while
 *   a cell runs, with no kernel, and whenever the kernel's panel is not up;
 * - the kernel's own ipywidgets panel (`%checkpoint panel`, executed silently),
 *   rendered into an OutputArea with the notebook's rendermime, which knows the
 *   widget renderer. It replaces the list once it has rendered.
 *
 * Each notebook's view stays in the sidebar while the notebook is open, hidden when
 * another notebook is current: switching notebooks neither creates a new widget (and
 * a new event subscriber) in the kernel nor detaches the widget views. A kernel change
 * or restart renders the kernel panel again; the list fills in meanwhile.
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { OutputArea, OutputAreaModel } from '@jupyterlab/outputarea';
import { KernelMessage } from '@jupyterlab/services';
import { refreshIcon, ToolbarButton } from '@jupyterlab/ui-components';
import { Panel, Widget } from '@lumino/widgets';

import { PANEL_CODE, SIDEBAR_TITLE } from './helpers';
import { checkpointIcon } from './icon';
import { ServerList } from './serverlist';
import {
  ICheckpointManager,
  ICheckpointSidebar,
  INotebookCheckpoints,
  NotebookContext
} from './tokens';

/** How long the kernel panel waits for the kernel to learn its notebook's id. */
const IDENTITY_WAIT_MS = 10000;

/** What the sidebar holds for one open notebook. */
class View extends Panel {
  constructor(
    readonly model: INotebookCheckpoints,
    panel: NotebookPanel
  ) {
    super();
    this.addClass('nbc-sidebar-view');
    this.note = new Widget();
    this.note.addClass('nbc-sidebar-note');
    this.list = new ServerList(model);
    this.area = new OutputArea({
      // Our own code produced this output: trusted, so widgets and HTML render.
      model: new OutputAreaModel({ trusted: true }),
      rendermime: panel.content.rendermime
    });
    this.area.addClass('nbc-sidebar-output');
    // Scroll events do not bubble: listen in the capture phase for the panel's lists.
    this.area.node.addEventListener('scroll', followColumns, true);
    this.addWidget(this.note);
    this.addWidget(this.list);
    this.addWidget(this.area);
    this.showPanel(false);
    model.restarted.connect(() => {
      this.generation += 1;
    });
  }

  readonly note: Widget;
  readonly list: ServerList;
  readonly area: OutputArea;
  /** Which kernel (id and restart count) the shown output came from. */
  renderedFor: string | null = null;
  generation = 0;
  busy = false;

  key(): string | null {
    const kernel = this.model.context.sessionContext.session?.kernel;
    return kernel ? `${kernel.id}:${this.generation}` : null;
  }

  /** The kernel's panel when it has rendered, else the server's list. */
  showPanel(shown: boolean): void {
    this.area.setHidden(!shown);
    this.list.setHidden(shown);
    if (!shown) {
      void this.list.refresh();
    }
  }

  say(text: string): void {
    this.note.node.textContent = text;
    this.note.setHidden(text === '');
  }
}

/**
 * Keep a list's column header in step when the list scrolls sideways in a narrow
 * sidebar: the history's header sits just above it, the variables' header just above
 * the variables (both are the panel's `.nbc-cols` lines).
 */
function followColumns(event: Event): void {
  const list = event.target as HTMLElement;
  if (!(list instanceof HTMLElement)) {
    return;
  }
  const owner = list.closest('.nbc-history, .nbc-vars');
  if (!owner) {
    return;
  }
  let header: Element | null = owner.previousElementSibling;
  while (header && !header.querySelector('.nbc-cols')) {
    header = header.previousElementSibling;
  }
  const cols = header?.querySelector('.nbc-cols') as HTMLElement | null;
  if (cols) {
    cols.scrollLeft = list.scrollLeft;
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
    this.title.caption = `${SIDEBAR_TITLE}: the kernel's variables, saved while cells run`;

    const header = new Widget();
    header.addClass('nbc-sidebar-header');
    const title = document.createElement('h2');
    title.textContent = SIDEBAR_TITLE;
    this._name = document.createElement('span');
    this._name.className = 'nbc-sidebar-notebook';
    header.node.append(title, this._name);
    const reload = new ToolbarButton({
      icon: refreshIcon,
      tooltip:
        'Read the state checkpoints again (server list and kernel panel)',
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
      void view.list.refresh();
      void this._update();
    }
  }

  protected onAfterShow(): void {
    void this._update();
  }

  /** Show the current notebook's view (making it on first sight), hide the others. */
  private _follow(): void {
    const panel = this._tracker.currentWidget;
    this._current = panel ? this._view(panel) : null;
    for (const view of this._views.values()) {
      view.setHidden(view !== this._current);
    }
    this._name.textContent = panel ? panel.context.path : '';
    this._name.title = this._name.textContent;
    this._say(panel ? '' : 'Open a notebook to see its state checkpoints.');
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
      context.pathChanged.connect(() => {
        if (this._current === created) {
          this._name.textContent = context.path;
          this._name.title = context.path;
        }
      });
      context.disposed.connect(() => {
        this._views.delete(context);
        if (this._current === created) {
          this._current = null;
          this._say('Open a notebook to see its state checkpoints.');
        }
        created.dispose();
      });
      this._views.set(context, created);
      this._body.addWidget(created);
      view = created;
    }
    return view;
  }

  /** Render the current view's kernel panel if the sidebar is shown and it is stale. */
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
        view.showPanel(false);
        view.say(
          'No kernel: the list comes from the server. Start a kernel for the full panel.'
        );
        return;
      }
      if (view.renderedFor === key) {
        return;
      }
      attempted = key;
      view.renderedFor = key;
      view.showPanel(false);
      const info = await kernel.info;
      if (info.language_info.name !== 'python') {
        view.say(
          `The full panel needs an IPython kernel; this notebook runs ${info.language_info.name}.`
        );
        return;
      }
      // After a restart or at page load the kernel is being told which notebook it
      // runs: the panel must read the store under that notebook's id.
      // (Bounded: a kernel that never answers must not keep the panel away.)
      await Promise.race([
        view.model.identified,
        new Promise(resolve => setTimeout(resolve, IDENTITY_WAIT_MS))
      ]);
      view.area.model.clear();
      view.say(
        kernel.status === 'busy'
          ? 'A cell is running: the list comes from the server, and the full panel opens when the cell ends.'
          : 'Loading the full panel from the kernel…'
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
      const reply = await future.done;
      if (view.renderedFor === key) {
        view.showPanel(
          reply.content.status === 'ok' && view.area.model.length > 0
        );
        view.say(
          reply.content.status === 'ok'
            ? ''
            : 'The kernel could not show its panel: the list comes from the server.'
        );
      }
    } catch (reason) {
      view.renderedFor = null;
      view.showPanel(false);
      view.say(`Could not show the kernel's panel: ${reason}`);
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
