"""Text of the panel: one fixed-width line per checkpoint and per variable, tooltips and summaries."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..format import cell_label, human_bytes, plural, printable, relative_time
from ..store import Checkpoint
from ..store.manifest import Manifest, NotebookInfo


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    right: bool = False


HISTORY_COLUMNS = (
    Column("id", 8),
    Column("time", 11),
    Column("cell", 24),
    Column("position", 24),
    Column("status", 14),
    Column("vars", 4, right=True),
    # Bytes of this checkpoint's data that the one listed before it does not have: the
    # same measure as a variable's "changed" (its blobs differ), summed.
    Column("changed", 8, right=True),
    Column("total", 8, right=True),
    Column("took", 7, right=True),
)
VARIABLE_COLUMNS = (
    Column("name", 18),
    Column("type", 22),
    Column("size", 8, right=True),
    Column("since previous", 16),
)
EARLIER = "earlier kernel"


def fit(text: str, width: int, right: bool = False) -> str:
    """``text`` cut with an ellipsis or padded to exactly ``width`` characters.

    Examples
    --------
    >>> fit("for epoch in range(100):", 10)
    'for epoch…'
    >>> fit("7", 3, right=True)
    '  7'
    """
    text = printable(" ".join(str(text).split()))
    if len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return text.rjust(width) if right else text.ljust(width)


def line(cells: Sequence[str], columns: Sequence[Column]) -> str:
    """Cells laid out in fixed-width columns, two spaces apart (for a monospace font)."""
    return "  ".join(fit(c, col.width, col.right) for c, col in zip(cells, columns)).rstrip()


def header_line(columns: Sequence[Column]) -> str:
    return line([c.title for c in columns], columns)


def exact_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _manifest(ck: Checkpoint) -> Manifest:
    """The manifest, or an empty one standing in for a checkpoint that cannot be read."""
    if ck.manifest is not None:
        return ck.manifest
    return Manifest(id=ck.id, notebook=NotebookInfo(ck.notebook, ""), created=0.0, status="manual")


def cell_text(ck: Checkpoint, width: int = 40) -> str:
    """``"for epoch in range(100):" [5]``: the same cell reads the same across runs.
    The first line is cut so that the whole label fits in about ``width`` characters."""
    cell = _manifest(ck).cell
    if cell is None:
        return ""
    run = len(f" [{cell.execution_count}]") if cell.execution_count is not None else 0
    return cell_label(cell.execution_count, cell.first_line, cell.cell_id, max(width - run - 2, 8))


def changed_bytes(ck: Checkpoint, previous: Checkpoint | None) -> int:
    """Bytes of ``ck``'s blobs that ``previous`` does not have (all of them for the first).

    A variable is "changed" when its group's blobs differ (:func:`change_since`), so this
    is the size of what changed, counted once for data shared between variables.
    """
    blobs = _manifest(ck).blobs
    before = _manifest(previous).blobs if previous is not None else {}
    return sum(size for h, size in blobs.items() if h not in before)


def position_text(ck: Checkpoint) -> str:
    position = _manifest(ck).position
    return (position.description or "") if position is not None else ""


def status_text(ck: Checkpoint, earlier: Callable[[Checkpoint], bool]) -> str:
    """The status column: running, interrupted, complete, manual, auto, or ``earlier kernel``;
    DAMAGED or NEWER FORMAT for one that cannot be read, UNVERIFIED for one not signed here."""
    if ck.manifest is None:
        return ck.status.upper()
    if not ck.verified:
        return "UNVERIFIED"
    return EARLIER if earlier(ck) else ck.status


def duration(ck: Checkpoint) -> float | None:
    return _manifest(ck).stats.duration


def history_row(
    ck: Checkpoint,
    earlier: Callable[[Checkpoint], bool],
    now: float,
    previous: Checkpoint | None = None,
) -> str:
    ident = f"#{ck.id}" + (" pin" if ck.pinned else "")
    return line(
        [
            ident,
            relative_time(ck.created, now) if ck.created else "?",
            cell_text(ck, HISTORY_COLUMNS[2].width),
            position_text(ck),
            status_text(ck, earlier),
            str(len(_manifest(ck).variables)),
            human_bytes(changed_bytes(ck, previous)),
            human_bytes(ck.total_bytes),
            seconds(duration(ck)),
        ],
        HISTORY_COLUMNS,
    )


def history_tooltip(
    ck: Checkpoint, earlier: Callable[[Checkpoint], bool], previous: Checkpoint | None = None
) -> str:
    """What hovering a row shows: the exact time and everything the row had to cut short."""
    lines = [f"Checkpoint #{ck.id}, taken {exact_time(ck.created) if ck.created else '?'}"]
    cell = _manifest(ck).cell
    if cell_text(ck):
        lines.append(
            f"cell {cell_text(ck)}" + (f" (id {cell.cell_id})" if cell and cell.cell_id else "")
        )
    if position_text(ck):
        lines.append(position_text(ck))
    status = f"status: {ck.status}"
    if earlier(ck):
        pid = _manifest(ck).kernel.pid
        status += f", from an earlier kernel (pid {'?' if pid is None else pid})"
    lines.append(status)
    if not ck.verified:
        lines.append(f"does not verify: {ck.problem}")
    since = f"since #{previous.id}" if previous is not None else "(the first one)"
    lines.append(
        f"{plural(len(_manifest(ck).variables), 'variable')}, {human_bytes(ck.total_bytes)}; "
        f"{human_bytes(changed_bytes(ck, previous))} changed {since}, "
        f"{human_bytes(ck.new_bytes)} written new to the store; "
        f"snapshot took {seconds(duration(ck)) or '?'}"
    )
    if ck.pinned:
        lines.append("pinned: retention never removes it")
    return "\n".join(lines)


def _group_hashes(ck: Checkpoint, name: str) -> tuple[str, ...] | None:
    m = _manifest(ck)
    info = m.variables.get(name)
    if info is None:
        return None
    group = m.groups[info.group]  # the manifest check keeps the index in range
    return (group.pickle, *group.buffers)


def change_since(ck: Checkpoint, previous: Checkpoint | None, name: str) -> str:
    """Whether ``name`` changed since ``previous``, by the blob hashes of its pickled group.

    Variables pickled together share a group, so a change to one marks its partners too.
    """
    if previous is None:
        return "first checkpoint"
    if name not in _manifest(previous).variables:
        return "new"
    before, after = _group_hashes(previous, name), _group_hashes(ck, name)
    if before is None or after is None:
        return "?"
    return "unchanged" if before == after else "changed"


def variable_rows(ck: Checkpoint, previous: Checkpoint | None) -> list[tuple[str, str]]:
    """(line, name) for each variable and import of ``ck``, sorted by name."""
    m = _manifest(ck)
    rows = []
    for name, info in sorted(m.variables.items()):
        rows.append(
            (
                line(
                    [name, info.type, human_bytes(info.size), change_since(ck, previous, name)],
                    VARIABLE_COLUMNS,
                ),
                name,
            )
        )
    for name, module in sorted(m.modules.items()):
        rows.append((line([name, f"module {module}", "", "import"], VARIABLE_COLUMNS), name))
    return rows


def left_out(ck: Checkpoint) -> list[tuple[str, str, str, str]]:
    """(kind, name, type, reason) of each skipped or withheld variable."""
    return [(kind, name, e.type, e.reason) for kind, name, e in _manifest(ck).left_out()]


def where(ck: Checkpoint, now: float) -> str:
    """``"for epoch in range(100):" [5], 3 min ago, for epoch at 57/100``: a checkpoint in a few words."""
    bits = []
    if cell_text(ck):
        bits.append(cell_text(ck))
    if ck.created:
        bits.append(relative_time(ck.created, now))
    if position_text(ck):
        bits.append(position_text(ck))
    return ", ".join(bits)
