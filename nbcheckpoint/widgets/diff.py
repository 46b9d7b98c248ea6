"""The panel's comparison: the selected checkpoint against another one or "now", as a table of variables."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from ipywidgets import HTML, Button, Dropdown, HBox, Layout, Output, VBox

from ..errors import CheckpointError
from ..store import CheckpointStore, NotebookRef
from ..store.diff import Diff, Side, describe_entry, diff_sides, read_side, size_change

NOW = "now"

_CELL = "text-align: left; vertical-align: top; padding: 2px 6px 2px 0; overflow-wrap: anywhere"
_COLOURS = {
    "changed": "var(--jp-warn-color1, #b26a00)",
    "added": "var(--jp-success-color1, #2e7d32)",
    "removed": "var(--jp-error-color1, #c62828)",
}


def diff_html(diff: Diff, show_same: bool = False) -> str:
    """The diff as an HTML table; every text from the store is escaped.

    Examples
    --------
    >>> from nbcheckpoint.store.diff import Entry
    >>> d = diff_sides(Side("#1", {}), Side("#2", {"<b>": Entry("int", 28)}))
    >>> "&lt;b&gt;" in diff_html(d) and "<b>" not in diff_html(d).split("</b>", 1)[1]
    True
    """
    rows = [r for r in diff.rows if show_same or r.change != "same"]
    head = f"<b>{escape(diff.summary())}</b>"
    if not diff.shapes_known:
        head += "<br><i>shape unknown: the older checkpoint records no shapes or dtypes</i>"
    if not rows:
        return f'<div class="nbc-diff">{head}<br>No variable differs.</div>'
    cells = []
    for r in rows:
        change = r.change if r.certain else f"{r.change}?"
        colour = _COLOURS.get(r.change, "inherit")
        before, after = describe_entry(r.before), describe_entry(r.after)
        # Details stacked in one column: the table fits a 400 px sidebar.
        lines = (
            [f"{diff.before}: {before}", f"{diff.after}: {after}"]
            if before and after and before != after
            else [before or after]
        )
        lines += [size_change(r), *r.notes]
        details = "".join(f"<div>{escape(line)}</div>" for line in lines if line)
        cells.append(
            f'<tr data-name="{escape(r.name)}" data-change="{escape(r.change)}"'
            ' style="border-bottom: 1px solid var(--jp-border-color2, #ddd)">'
            f'<td style="{_CELL}"><code>{escape(r.name)}</code></td>'
            f'<td style="{_CELL}; color: {colour}; white-space: nowrap">{escape(change)}</td>'
            f'<td style="{_CELL}">{details}</td></tr>'
        )
    header = "".join(
        f'<th style="{_CELL}">{escape(h)}</th>' for h in ("variable", "change", "details")
    )
    return (
        f'<div class="nbc-diff">{head}'
        '<table class="nbc-diff-table" style="border-collapse: collapse; font-size: 12px;'
        ' width: 100%">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(cells)}</tbody></table></div>"
    )


class DiffView(VBox):  # type: ignore[misc]  # ipywidgets ships no type hints
    """Compare #N with #M or with now: the variables added, removed and changed, from the manifests.

    Parameters
    ----------
    store, notebook : where the checkpoints are.
    selected : the checkpoint selected in the panel (None: nothing selected).
    live : the "now" side (the kernel's variables as a save would record them); None
        leaves "now" out of the choices.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> nb = NotebookRef.from_path("demo.ipynb")
    >>> _ = store.save({"x": 1}, nb); _ = store.save({"x": 2, "y": 3}, nb)
    >>> view = DiffView(store, nb, selected=lambda: 2, live=None)
    >>> view.set_ids([2, 1])
    >>> view.against.value = 1
    >>> view.compare_button.click()
    >>> view.diff.summary()
    '#1 -> #2: 1 changed, 1 added, 0 removed, 0 same'
    """

    def __init__(
        self,
        store: CheckpointStore,
        notebook: NotebookRef,
        *,
        selected: Callable[[], int | None],
        live: Callable[[], Side] | None = None,
    ) -> None:
        self.store = store
        self.notebook = notebook
        self._selected = selected
        self._live = live
        self.diff: Diff | None = None
        self.against = Dropdown(
            description="Compare with",
            options=[],
            layout=Layout(width="auto"),
            style={"description_width": "initial"},
        )
        self.compare_button = Button(
            description="Compare",
            tooltip="Show the variables added, removed and changed between the selected "
            "checkpoint and this one (read from the records, nothing is loaded)",
            icon="exchange",
            layout=Layout(width="auto"),
        )
        self.result = HTML()
        self.out = Output()
        self.compare_button.on_click(self._on_compare)
        self.add_class("nbc-diff-view")
        super().__init__(
            children=[HBox([self.against, self.compare_button]), self.result, self.out]
        )

    def set_ids(self, ids: list[int]) -> None:
        """The checkpoints to offer (newest first), after "now" when the kernel's are available."""
        keep = self.against.value
        options: list[tuple[str, object]] = []
        if self._live is not None:
            options.append(("now (the kernel's variables)", NOW))
        options.extend((f"#{i}", i) for i in ids)
        self.against.options = options
        values = [value for _, value in options]
        self.against.value = keep if keep in values else (values[0] if values else None)
        self.compare_button.disabled = not values

    def compare(self, other: int | str) -> Diff:
        """The selected checkpoint against ``other`` (an id, or ``"now"``); older one first."""
        ident = self._selected()
        if ident is None:
            raise CheckpointError("Select a checkpoint in the list first.")
        ident = int(ident)
        if other == NOW:
            if self._live is None:
                raise CheckpointError("The kernel's variables are not available here.")
            before, after = read_side(self.store, self.notebook, ident), self._live()
        else:
            first, second = sorted((ident, int(other)))
            before = read_side(self.store, self.notebook, first)
            after = read_side(self.store, self.notebook, second)
        self.diff = diff_sides(before, after)
        self.result.value = diff_html(self.diff)
        return self.diff

    def _on_compare(self, _button: Button) -> None:
        # Any error is one sentence in the view, never a traceback.
        with self.out:
            try:
                self.compare(self.against.value)
            except CheckpointError as e:
                self._fail(str(e))
            except Exception as e:
                self._fail(f"{type(e).__name__}: {e}")

    def _fail(self, text: str) -> None:
        self.diff = None
        self.result.value = f'<div class="nbc-error">Could not compare: {escape(text)}</div>'
