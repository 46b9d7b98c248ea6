"""The checkpoint panel: a notebook's history, its variables, restore, delete, pin, and live updates."""

from __future__ import annotations

import re
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from html import escape, unescape
from typing import Any, Protocol

from ipywidgets import HTML, Button, HBox, Layout, Output, SelectMultiple, ToggleButtons, VBox

from ..capture import events
from ..capture.engine import from_earlier_kernel
from ..capture.names import user_names
from ..capture.recipes import describe as describe_recipe
from ..errors import CheckpointError
from ..format import human_bytes, plural
from ..store import Checkpoint, CheckpointStore, NotebookRef, Restored
from ..store.diff import Side, live_side
from . import live as live_updates
from . import rows
from .chart import Point, history_svg
from .diff import DiffView
from .style import CSS

HIDDEN = "none"


class PanelHost(Protocol):
    """What the panel needs from the ``%checkpoint`` magics (kept as a protocol: no IPython here)."""

    @property
    def user_ns(self) -> dict[str, Any]: ...

    def open_store(self, override: str | None = None) -> CheckpointStore: ...

    def notebook_ref(self) -> NotebookRef: ...

    def apply(self, restored: Restored) -> list[str]: ...

    def describe_restore(self, restored: Restored) -> str: ...

    def hidden_names(self) -> set[str]: ...


def _button(label: str, tooltip: str, icon: str = "", style: str = "") -> Button:
    return Button(
        description=label,
        tooltip=tooltip,
        icon=icon,
        button_style=style,
        layout=Layout(width="auto"),
    )


def _default_describe(restored: Restored) -> str:
    names = sorted(restored.values)
    return f"Restored checkpoint #{restored.checkpoint.id}: {plural(len(names), 'variable')} ({', '.join(names)})."


def _plain(html: str) -> str:
    text = re.sub(r"<li>", "\n  ", html)
    return unescape(re.sub(r"<[^>]+>", "", text)).strip()


class CheckpointPanel(VBox):  # type: ignore[misc]  # ipywidgets ships no type hints
    """A notebook's checkpoints as a widget: history, variables, actions, restart banner, chart.

    Parameters
    ----------
    store : the checkpoint store to show.
    notebook : the notebook whose checkpoints to show.
    namespace : the user namespace restores go into (used to warn before overwriting).
    apply : puts a restored checkpoint into the namespace (default: ``namespace.update``).
    describe : turns a restore into the sentence shown (default: a short summary).
    live : follow checkpoints as a running ``%%checkpoint`` cell takes them. The cell's
        thread only queues each one; a background thread (:mod:`.live`) shows it, and
        keeps the relative times current. A panel with no view left (its output cleared)
        stops following until it is shown again.
    clock : the time source for "3 min ago" (tests pass a fixed one).
    hidden : names in ``namespace`` that are not the user's (IPython's), left out of "now".

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> nb = NotebookRef.from_path("demo.ipynb")
    >>> _ = store.save({"x": 1}, nb)
    >>> panel = CheckpointPanel(store, nb, namespace={}, live=False)
    >>> panel.ids
    [1]
    >>> panel.restore_all_button.click()
    >>> "Restored checkpoint #1" in panel.message.value
    True
    """

    def __init__(
        self,
        store: CheckpointStore,
        notebook: NotebookRef,
        *,
        namespace: MutableMapping[str, Any] | None = None,
        apply: Callable[[Restored], object] | None = None,
        describe: Callable[[Restored], str] | None = None,
        live: bool = True,
        clock: Callable[[], float] = time.time,
        earlier: Callable[[Checkpoint], bool] = from_earlier_kernel,
        hidden: Callable[[], Iterable[str]] = lambda: (),
        recompute: Callable[[Checkpoint, Callable[[str], None]], None] | None = None,
        lazy: bool = False,
    ) -> None:
        self.store = store
        self.lazy = lazy  # restore large arrays by mapping them (see store/pager.py)
        self.notebook = notebook
        self.namespace: MutableMapping[str, Any] = namespace if namespace is not None else {}
        self._apply = apply or self._update_namespace
        self._describe = describe or _default_describe
        self._clock = clock
        self._earlier = earlier
        self._hidden = hidden
        self._recompute = recompute
        self._checkpoints: list[Checkpoint] = []
        self._by_id: dict[int, Checkpoint] = {}
        self._disk_bytes: int | None = None
        self._pending: Callable[[], None] | None = None
        self._syncing = False
        self._banner_done = events.restored_here(notebook.key)
        self._live = live
        # Held by whoever renders or changes the panel's state: the main thread (clicks)
        # or the live thread (new checkpoints, ticks). Never taken by the event itself.
        self._lock = threading.RLock()
        self._inbox: deque[Checkpoint] = deque()
        self._following = False
        self._reload_wanted = False

        self.header = HTML()
        self.banner_text = HTML()
        self.banner_restore = _button(
            "Restore", "Put this checkpoint's variables back into the kernel", "undo", "warning"
        )
        self.banner_dismiss = _button("Dismiss", "Hide this message", "times")
        self.banner = HBox([self.banner_text, self.banner_restore, self.banner_dismiss])
        self.columns = HTML(
            f'<div class="nbc-mono nbc-cols">{escape(rows.header_line(rows.HISTORY_COLUMNS))}</div>'
        )
        self.history = ToggleButtons(
            options=[],
            layout=Layout(width="100%", max_height="270px", overflow="auto"),
        )
        self.empty = HTML()
        self.restore_all_button = _button(
            "Restore all",
            "Put every variable of the selected checkpoint back into the kernel",
            "undo",
            "primary",
        )
        self.restore_selected_button = _button(
            "Restore selected",
            "Put only the variables selected below back into the kernel",
            "check-square-o",
        )
        self.delete_button = _button(
            "Delete",
            "Remove the selected checkpoint (asks first; its data is freed at the next gc)",
            "trash",
            "danger",
        )
        self.pin_button = _button(
            "Pin",
            "Pinned checkpoints are never removed by retention (--keep, max size)",
            "thumb-tack",
        )
        self.refresh_button = _button("Refresh", "Read the store again", "refresh")
        self.recompute_button = _button(
            "Recompute",
            "Re-run the recorded statements that made the variables this checkpoint could not "
            "save, after restoring it (shows them and asks first)",
            "cogs",
        )
        self.actions = HBox(
            [
                self.restore_all_button,
                self.restore_selected_button,
                self.delete_button,
                self.pin_button,
                self.refresh_button,
                self.recompute_button,
            ]
        )
        self.confirm_text = HTML()
        self.confirm_yes = _button("Yes", "Go ahead", "check", "danger")
        self.confirm_no = _button("No", "Cancel", "times")
        self.confirm_box = HBox([self.confirm_text, self.confirm_yes, self.confirm_no])
        self.message = HTML()
        self.details = HTML()
        self.variables = SelectMultiple(
            options=[],
            rows=8,
            layout=Layout(width="100%"),
            tooltip="Select variables (Shift/Ctrl-click) for Restore selected",
        )
        self.variable_columns = HTML(
            f'<div class="nbc-mono nbc-cols">{escape(rows.header_line(rows.VARIABLE_COLUMNS))}</div>'
        )
        self.chart = HTML()
        self.out = Output()
        # Compare the selected checkpoint with another or with "now" (logic in widgets/diff.py).
        self.diff = DiffView(
            store, notebook, selected=lambda: self.history.value, live=self._live_side
        )

        self.add_class("nbc-panel")
        self.history.add_class("nbc-history")
        self.variables.add_class("nbc-vars")
        self.banner.add_class("nbc-banner")
        self.confirm_box.add_class("nbc-confirm")
        self.details.add_class("nbc-details")
        self.variable_columns.add_class("nbc-vcols")
        self.message.add_class("nbc-message")
        # Each table's header and rows in one box that scrolls sideways as one (style.py).
        self.history_table = VBox([self.columns, self.history])
        self.history_table.add_class("nbc-table")
        self.variables_table = VBox([self.variable_columns, self.variables])
        self.variables_table.add_class("nbc-table")

        self.history.observe(self._on_select, names="value")
        self.variables.observe(self._on_variables, names="value")
        self.banner_restore.on_click(self._on_banner_restore)
        self.banner_dismiss.on_click(self._on_banner_dismiss)
        self.restore_all_button.on_click(self._on_restore_all)
        self.restore_selected_button.on_click(self._on_restore_selected)
        self.delete_button.on_click(self._on_delete)
        self.pin_button.on_click(self._on_pin)
        self.refresh_button.on_click(self._on_refresh)
        self.recompute_button.on_click(self._on_recompute)
        self.confirm_yes.on_click(self._on_confirm_yes)
        self.confirm_no.on_click(self._on_confirm_no)

        super().__init__(
            children=[
                HTML(CSS),
                self.header,
                self.banner,
                self.history_table,
                self.empty,
                self.actions,
                self.confirm_box,
                self.message,
                self.details,
                self.variables_table,
                self.diff,
                self.chart,
                self.out,
            ],
            layout=Layout(width="100%"),
        )
        self._show(self.confirm_box, False)
        self._run("read the store", self.reload)
        if live:
            self._follow(True)
            # The frontend counts the views shown (0 once the output is cleared).
            self._view_count = 0
            self.observe(self._on_views, names="_view_count")

    @classmethod
    def from_magics(cls, host: PanelHost, store: str | None = None) -> CheckpointPanel:
        """The panel for the notebook the ``%checkpoint`` magics serve (``store`` overrides the URL)."""
        return cls(
            host.open_store(store),
            host.notebook_ref(),
            namespace=host.user_ns,
            apply=host.apply,
            describe=host.describe_restore,
            hidden=host.hidden_names,
            recompute=getattr(host, "recompute_text", None),
            lazy=bool(getattr(host, "lazy_restore", False)),
        )

    # ------------------------------------------------------------ state
    @property
    def ids(self) -> list[int]:
        """The ids shown, newest first."""
        return [int(value) for _, value in self.history.options]

    @property
    def selected(self) -> Checkpoint | None:
        value = self.history.value
        return self._by_id.get(int(value)) if value is not None else None

    def __repr__(self) -> str:
        # What a frontend without widgets (nbconvert, a terminal) shows instead of the panel.
        n = len(self._checkpoints)
        return (
            f"<CheckpointPanel: {n} checkpoint{'s' if n != 1 else ''} of {self.notebook.path}; "
            "open the notebook in JupyterLab or Notebook 7 to use it>"
        )

    @property
    def last_message(self) -> str:
        """The panel's latest result or error sentence, as plain text."""
        return _plain(self.message.value)

    @property
    def question(self) -> str | None:
        """The pending Yes/No question, as plain text, or None."""
        return _plain(self.confirm_text.value) if self._pending is not None else None

    def select(self, ident: int) -> None:
        """Select checkpoint ``ident``, as clicking its row does."""
        self.history.value = ident

    def previous_of(self, ck: Checkpoint) -> Checkpoint | None:
        """The checkpoint listed just before ``ck`` (the one its changes are measured against)."""
        older = [c for c in self._checkpoints if c.id < ck.id]
        return older[-1] if older else None

    def _update_namespace(self, restored: Restored) -> None:
        """The default ``apply``: the values into the namespace, and the restart offer answered."""
        self.namespace.update(restored.values)
        events.emit(restored.checkpoint, events.RESTORED)

    def _live_side(self) -> Side:
        """The "now" side of a comparison: the namespace as a save would record it, nothing written."""
        ns = self.namespace
        names = user_names(ns, list(ns), self._hidden())
        return live_side(self.store, ns, self.notebook, names)

    def close(self) -> None:
        """Stop following new checkpoints and close every widget of the panel."""
        self._follow(False)
        for widget in self._owned():
            widget.close()
        super().close()
        self.layout.close()

    def _owned(self) -> Iterable[Any]:
        """Every widget the panel made, with their layouts and styles (widgets too)."""
        stack = list(self.children)
        while stack:
            widget = stack.pop()
            stack.extend(getattr(widget, "children", ()))
            for part in ("layout", "style"):
                if getattr(widget, part, None) is not None:
                    yield getattr(widget, part)
            yield widget

    # ------------------------------------------------------------ reading
    def reload(self, *, disk: bool = True) -> None:
        """Read the checkpoint list again (and the store's size on disk unless ``disk`` is False)."""
        self._checkpoints = sorted(self.store.list(self.notebook), key=lambda c: c.id)
        self._by_id = {c.id: c for c in self._checkpoints}
        if disk or self._disk_bytes is None:
            self._disk_bytes = self.store.disk_usage()
        self._render()

    def _render(self, select: int | None = None, *, keep_selected: bool = False) -> None:
        """Show the checkpoint list; ``keep_selected`` leaves the variable list (and the
        user's choice of variables in it) alone when the same checkpoint stays selected."""
        now = self._clock()
        before = self.history.value
        has_rows = self._render_rows(now, select)
        self.diff.set_ids([c.id for c in reversed(self._checkpoints)])
        self._show(self.columns, has_rows)
        self._show(self.history, has_rows)
        self._show(self.empty, not has_rows)
        self.empty.value = (
            ""
            if has_rows
            else f"No checkpoints yet for <code>{escape(self.notebook.path)}</code>. "
            "Run a long cell with <code>%%checkpoint</code>, or <code>%checkpoint save</code>."
        )
        self.header.value = self._header_html()
        self.chart.value = history_svg(
            [Point(c.id, c.total_bytes, rows.duration(c) or 0.0) for c in self._checkpoints]
        )
        self._render_banner(now)
        if not (keep_selected and self.history.value == before and before is not None):
            self._render_selected()

    def _render_rows(self, now: float, select: int | None = None) -> bool:
        """The history rows (their relative times too); True when there is any."""
        newest_first = list(reversed(self._checkpoints))
        wanted = select if select is not None else self.history.value
        if wanted not in self._by_id:
            wanted = newest_first[0].id if newest_first else None
        # Each row's changes are measured against the row below it (the one listed before).
        previous = [*newest_first[1:], None]
        options = [
            (rows.history_row(c, self._earlier, now, p), c.id)
            for c, p in zip(newest_first, previous)
        ]
        self._syncing = True
        try:
            # Not under hold_trait_notifications: its cross-validation checks the old value
            # against the new options.
            if options != list(self.history.options):
                self.history.options = options
            self.history.tooltips = [
                rows.history_tooltip(c, self._earlier, p) for c, p in zip(newest_first, previous)
            ]
            self.history.value = wanted
        finally:
            self._syncing = False
        return bool(options)

    def _header_html(self) -> str:
        n = len(self._checkpoints)
        unverified = [c for c in self._checkpoints if not c.verified]
        if not n:
            signatures = "no signatures to check"
        elif not unverified:
            signatures = '<span class="nbc-ok">signatures verify</span>'
        else:
            listed = ", ".join(f"#{c.id} ({escape(c.problem or '?')})" for c in unverified[:3])
            signatures = (
                f'<span class="nbc-error">{len(unverified)} of {n} do not verify: {listed}</span>'
            )
        size = human_bytes(self._disk_bytes) if self._disk_bytes is not None else "?"
        return (
            # "State": never confused with JupyterLab's own (file) checkpoints.
            f'<b title="Saved kernel variables, not the notebook file">State checkpoints</b> '
            f"of <code>{escape(self.notebook.path)}</code><br>"
            f"store <code>{escape(self.store.url)}</code> · "
            f"{plural(n, 'checkpoint')} · "
            f'<span title="blobs are shared by every notebook of the store">{size} on disk</span>'
            f" · {signatures}"
        )

    def _banner_target(self) -> Checkpoint | None:
        """The newest usable checkpoint, when the newest one of all is from an earlier kernel."""
        if self._banner_done or not self._checkpoints:
            return None
        if not self._earlier(self._checkpoints[-1]):
            return None
        for ck in reversed(self._checkpoints):
            if ck.verified and self._earlier(ck):
                return ck
        return None

    def _render_banner(self, now: float) -> None:
        target = self._banner_target()
        self._show(self.banner, target is not None)
        if target is None:
            return
        self.banner_text.value = f"<b>The kernel restarted.</b> Restore #{target.id} ({escape(rows.where(target, now))})?"
        self.banner_restore.description = f"Restore #{target.id}"
        count = len(target.manifest.variables) if target.manifest is not None else 0
        self.banner_restore.tooltip = (
            f"Put the {plural(count, 'variable')} of checkpoint #{target.id} back into the kernel"
        )

    def _render_selected(self) -> None:
        ck = self.selected
        for button in (self.restore_all_button, self.delete_button, self.pin_button):
            button.disabled = ck is None
        self.recompute_button.disabled = not self._recipes(ck)
        if ck is None:
            self.details.value = ""
            self._set_variables([])
            self.pin_button.description = "Pin"
            return
        self.pin_button.description = "Unpin" if ck.pinned else "Pin"
        self.pin_button.icon = "unlock" if ck.pinned else "thumb-tack"
        self.pin_button.tooltip = (
            f"Let retention remove #{ck.id} again"
            if ck.pinned
            else f"Keep #{ck.id}: retention (--keep, max size) never removes a pinned checkpoint"
        )
        self.details.value = self._details_html(ck)
        self._set_variables(rows.variable_rows(ck, self.previous_of(ck)))

    def _details_html(self, ck: Checkpoint) -> str:
        status = rows.status_text(ck, self._earlier)
        parts = [
            f"<b>#{ck.id}</b> · taken {rows.exact_time(ck.created) if ck.created else '?'}"
            f" · {escape(status if status != rows.EARLIER else f'{ck.status}, from an earlier kernel')}"
        ]
        if rows.cell_text(ck):
            parts.append(f"cell <code>{escape(rows.cell_text(ck))}</code>")
        if rows.position_text(ck):
            parts.append(escape(rows.position_text(ck)))
        if ck.pinned:
            parts.append("pinned")
        html = " · ".join(parts)
        if not ck.verified:
            html += f'<div class="nbc-error">Does not verify: {escape(ck.problem or "?")}</div>'
        left_out = rows.left_out(ck)
        if left_out:
            items = "".join(
                f"<li>{kind}: <code>{escape(name)}</code> ({escape(type_)}): {escape(reason)}</li>"
                for kind, name, type_, reason in left_out
            )
            html += f'<div class="nbc-warn">Not saved:</div><ul>{items}</ul>'
        return html

    def _set_variables(self, options: list[tuple[str, str]]) -> None:
        self._syncing = True
        try:
            self.variables.options = options
            self.variables.value = ()
            self.variables.rows = min(max(len(options), 2), 12)
        finally:
            self._syncing = False
        self._show(self.variables, bool(options))
        self._show(self.variable_columns, bool(options))
        self.restore_selected_button.disabled = True

    # ------------------------------------------------------------ events
    def _on_select(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        self._cancel_pending()
        self._run("show the checkpoint", self._render_selected)

    def _on_variables(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.restore_selected_button.disabled = not change["new"]

    def _on_checkpoint(self, ck: Checkpoint) -> None:
        """A running cell took a checkpoint (called on the kernel's main thread, inside the
        user's loop): queue it for the live thread; no store read, no rendering here."""
        if ck.notebook != self.notebook.key:
            return
        self._inbox.append(ck)
        live_updates.thread().request(self)

    def _on_restored(self, ck: Checkpoint) -> None:
        """Variables were restored (here, by ``%checkpoint restore`` or from JupyterLab):
        the restart banner has been answered."""
        if ck.notebook == self.notebook.key and not self._banner_done:
            self._banner_done = True
            live_updates.thread().request(self)

    def catch_up(self) -> None:
        """Show the queued checkpoints, or read the store again when asked (live thread)."""
        with self._lock:
            if self._reload_wanted:
                self._reload_wanted = False
                self._inbox.clear()  # the reload reads them
                self._quietly("read the store", self.reload)
                return
            landed = []
            while self._inbox:
                landed.append(self._inbox.popleft())
            if not landed:
                self._quietly("hide the banner", lambda: self._render_banner(self._clock()))
                return
            newest = self._checkpoints[-1].id if self._checkpoints else None
            follow = self.history.value is None or self.history.value == newest
            for ck in landed:
                if ck.id in self._by_id:
                    continue
                if self._disk_bytes is not None and ck.manifest is not None:
                    # Not a walk over every blob: only what this checkpoint added.
                    self._disk_bytes += ck.manifest.stats.bytes_written
                self._checkpoints.append(ck)
                self._by_id[ck.id] = ck
            self._checkpoints.sort(key=lambda c: c.id)
            self._quietly(
                "show the new checkpoint",
                lambda: self._render(select=landed[-1].id if follow else None, keep_selected=True),
            )

    def tick(self) -> None:
        """Bring "3 min ago" up to date (live thread)."""
        with self._lock:
            if self._checkpoints:
                now = self._clock()
                self._quietly("update the times", lambda: self._render_rows(now))
                self._quietly("update the times", lambda: self._render_banner(now))

    def _follow(self, on: bool) -> None:
        if on and not self._following:
            events.subscribe(self._on_checkpoint)
            events.subscribe(self._on_restored, events.RESTORED)
            live_updates.thread().watch(self)
        elif not on and self._following:
            events.unsubscribe(self._on_checkpoint)
            events.unsubscribe(self._on_restored, events.RESTORED)
            live_updates.thread().unwatch(self)
        self._following = on

    def _on_views(self, change: dict[str, Any]) -> None:
        old, new = change["old"] or 0, change["new"] or 0
        if new == 0 and old > 0:
            self._follow(False)  # cleared output: nothing to keep current
        elif new > 0 and not self._following and self._live:
            self._follow(True)
            self._reload_wanted = True  # it missed checkpoints while hidden
            live_updates.thread().request(self)

    def _on_refresh(self, _button: Button) -> None:
        def refresh() -> None:
            self.reload()
            n = len(self._checkpoints)
            self._say(f"Refreshed: {n} checkpoint{'s' if n != 1 else ''}.")

        self._run("refresh", refresh)

    def _on_banner_dismiss(self, _button: Button) -> None:
        self._banner_done = True
        self._show(self.banner, False)

    def _on_banner_restore(self, _button: Button) -> None:
        target = self._banner_target()
        if target is None:
            self._say("There is no checkpoint from an earlier kernel to restore.", "error")
            return
        self._ask_restore(target, None)

    def _on_restore_all(self, _button: Button) -> None:
        ck = self.selected
        if ck is None:
            self._say("Select a checkpoint first.", "error")
            return
        self._ask_restore(ck, None)

    def _on_restore_selected(self, _button: Button) -> None:
        ck = self.selected
        names = list(self.variables.value)
        if ck is None or not names:
            self._say("Select a checkpoint and some of its variables first.", "error")
            return
        self._ask_restore(ck, names)

    def _on_delete(self, _button: Button) -> None:
        ck = self.selected
        if ck is None:
            self._say("Select a checkpoint first.", "error")
            return
        note = " It is pinned." if ck.pinned else ""

        def delete() -> None:
            self.store.delete(self.notebook, ck.id)
            self.reload()
            self._say(f"Deleted checkpoint #{ck.id}; its data is freed at the next gc.", "ok")

        self._confirm(
            f"Delete checkpoint #{ck.id} ({escape(rows.where(ck, self._clock()))})?{note}",
            f"Delete #{ck.id}",
            "delete the checkpoint",
            delete,
        )

    def _on_pin(self, _button: Button) -> None:
        ck = self.selected
        if ck is None:
            self._say("Select a checkpoint first.", "error")
            return

        def pin() -> None:
            was_pinned = ck.pinned  # the reload below updates ``ck`` itself
            self.store.pin(self.notebook, ck.id, not was_pinned)
            self.reload(disk=False)
            if was_pinned:
                self._say(f"Unpinned #{ck.id}: retention may remove it again.", "ok")
            else:
                self._say(f"Pinned #{ck.id}: retention never removes it.", "ok")

        self._cancel_pending()
        self._run("pin the checkpoint", pin)

    def _recipes(self, ck: Checkpoint | None) -> list[str]:
        """The lines that show ``ck``'s recipes, or none when there is nothing to recompute."""
        m = ck.manifest if ck is not None else None
        if m is None or self._recompute is None or not any(r.steps for r in m.recipes.values()):
            return []
        return [line for n in sorted(m.skipped) for line in describe_recipe(n, m.recipes.get(n))]

    def _on_recompute(self, _button: Button) -> None:
        ck = self.selected
        lines = self._recipes(ck)
        if ck is None or not lines or self._recompute is None:
            self._say("This checkpoint has no recipe to run.", "error")
            return
        recompute = self._recompute
        self._confirm(
            f"Run these statements from your cells? They may have side effects."
            f"<pre>{escape(chr(10).join(lines))}</pre>",
            "Recompute",
            "recompute",
            # The host runs the statements on the kernel's main thread (a click arrives on
            # another one) and reports when they are done.
            lambda: recompute(ck, lambda text: self._say(text, "ok")),
        )

    def _on_confirm_yes(self, _button: Button) -> None:
        action, self._pending = self._pending, None
        self._show(self.confirm_box, False)
        if action is not None:
            action()

    def _on_confirm_no(self, _button: Button) -> None:
        self._cancel_pending()
        self._say("Cancelled; nothing was changed.")

    # ------------------------------------------------------------ actions
    def _ask_restore(self, ck: Checkpoint, names: list[str] | None) -> None:
        m = ck.manifest
        everything = [*m.variables, *m.modules] if m is not None else []
        wanted = names if names is not None else everything
        replaced = sorted(n for n in wanted if self._would_replace(ck, n))

        def restore() -> None:
            restored = self.store.load(self.notebook, ck.id, names, lazy=self.lazy)
            self._apply(restored)
            self._banner_done = True
            self._render_banner(self._clock())
            self._say(self._describe(restored), "ok")

        if not replaced:
            self._cancel_pending()
            self._run("restore", restore)
            return
        shown = ", ".join(replaced[:8]) + (
            f" and {len(replaced) - 8} more" if len(replaced) > 8 else ""
        )
        self._confirm(
            f"Restore #{ck.id}? It replaces {len(replaced)} variable"
            f"{'s' if len(replaced) != 1 else ''} you have now: <code>{escape(shown)}</code>.",
            f"Restore #{ck.id}",
            "restore",
            restore,
        )

    def _would_replace(self, ck: Checkpoint, name: str) -> bool:
        if name not in self.namespace:
            return False
        module = ck.manifest.modules.get(name) if ck.manifest is not None else None
        current = self.namespace[name]
        # Importing the same module again replaces nothing.
        return not (
            module is not None
            and isinstance(current, types.ModuleType)
            and current.__name__ == module
        )

    def _confirm(self, text: str, yes: str, what: str, action: Callable[[], None]) -> None:
        """Show the inline Yes/No row; ``action`` runs (guarded) only on Yes."""
        self._pending = lambda: self._run(what, action)
        self.confirm_text.value = text
        self.confirm_yes.description = yes
        self.confirm_yes.tooltip = f"Yes: {yes}"
        self._show(self.confirm_box, True)
        self.message.value = ""

    def _cancel_pending(self) -> None:
        self._pending = None
        self._show(self.confirm_box, False)

    def _run(self, what: str, action: Callable[[], None]) -> None:
        """Run a handler; any error becomes one sentence in the panel, never a traceback."""
        with self._lock, self.out:
            self._quietly(what, action)

    def _quietly(self, what: str, action: Callable[[], object]) -> None:
        """``action``, its error said in one sentence. No ``Output`` capture: on the live
        thread that would route the running cell's own output into the panel."""
        try:
            action()
        except CheckpointError as e:
            self._say(str(e), "error")
        except Exception as e:
            self._say(f"Could not {what}: {type(e).__name__}: {e}", "error")

    def _say(self, text: str, kind: str = "") -> None:
        first, *rest = text.splitlines() or [""]
        html = escape(first)
        if rest:
            items = "".join(f"<li>{escape(r.strip())}</li>" for r in rest if r.strip())
            html += f"<ul>{items}</ul>"
        css = f"nbc-{kind}" if kind else "nbc-info"
        self.message.value = f'<div class="{css}">{html}</div>'

    @staticmethod
    def _show(widget: Any, visible: bool) -> None:
        widget.layout.display = None if visible else HIDDEN
