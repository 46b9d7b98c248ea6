"""Compare two checkpoints, or a checkpoint and the live namespace, variable by variable, from manifests alone.

Nothing is unpickled: the store is untrusted, and a diff must be cheap. Each side is the
signed manifest's metadata (type, pickled size, shape and dtype when recorded, and the
content addresses of the group that holds the variable). A variable is *changed* when its
type, shape or dtype differ, or when its group's content addresses differ. Variables pickled
together (they share objects) have one set of addresses: when such a group changed, each of
its variables is reported as changed with ``certain`` False ("one of them changed").

The live side ("now") is what a save would record at this moment: the namespace is
pickled and addressed as :meth:`CheckpointStore.prepare` does, written nowhere, so its
addresses compare exactly with a checkpoint's.

Examples
--------
>>> from nbcheckpoint.store.manifest import Manifest, NotebookInfo, Variable, Group
>>> def ck(ident, **sizes):
...     groups = tuple(Group((n,), f"{s:064x}") for n, s in sizes.items())
...     variables = {n: Variable("int", s, i) for i, (n, s) in enumerate(sizes.items())}
...     return Manifest(ident, NotebookInfo("k", "k.ipynb"), 1.0, "manual",
...                     groups=groups, variables=variables)
>>> d = diff_sides(side_of(ck(1, a=1, b=2)), side_of(ck(2, b=3, c=4)))
>>> [(r.name, r.change) for r in d.rows]
[('b', 'changed'), ('c', 'added'), ('a', 'removed')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedManifest, UntrustedCheckpoint
from ..format import human_bytes, printable, table
from .identity import NotebookRef
from .manifest import Manifest

#: The kinds of change, in the order a diff lists them.
CHANGES = ("changed", "added", "removed", "not saved", "same")


@dataclass(frozen=True)
class Entry:
    """One variable on one side of a diff, as its manifest describes it."""

    type: str
    size: int
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    content: tuple[str, ...] = ()  # the addresses of its group's pickle and buffers
    together: tuple[str, ...] = ()  # the other variables pickled in the same group
    saved: bool = True
    reason: str | None = None  # why it was not saved

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "size": self.size,
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
            "saved": self.saved,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Side:
    """What one checkpoint (or "now") holds, by variable name."""

    label: str  # "#12" or "now"
    entries: Mapping[str, Entry]
    shapes_known: bool = True  # False for a manifest older than format 2.1


@dataclass(frozen=True)
class Row:
    """One variable's change between ``before`` and ``after``."""

    name: str
    change: str  # one of CHANGES
    before: Entry | None
    after: Entry | None
    certain: bool = True
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "change": self.change,
            "certain": self.certain,
            "before": None if self.before is None else self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Diff:
    """Every variable of two sides, with what changed; ``rows`` by change, then name."""

    before: str
    after: str
    rows: tuple[Row, ...] = ()
    method: str = ""
    shapes_known: bool = True

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(CHANGES, 0)
        for row in self.rows:
            out[row.change] += 1
        return out

    def summary(self) -> str:
        """``#3 -> #5: 1 changed, 2 added, 0 removed, 4 same``."""
        counts = self.counts()
        parts = [f"{counts[c]} {c}" for c in ("changed", "added", "removed")]
        if counts["not saved"]:
            parts.append(f"{counts['not saved']} not saved")
        parts.append(f"{counts['same']} same")
        return f"{self.before} -> {self.after}: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "method": self.method,
            "shapes_known": self.shapes_known,
            "summary": self.summary(),
            "counts": self.counts(),
            "rows": [row.to_dict() for row in self.rows],
        }


def side_of(manifest: Manifest, label: str | None = None) -> Side:
    """A checkpoint's side of a diff, from its checked manifest."""
    entries: dict[str, Entry] = {}
    for name, v in manifest.variables.items():
        group = manifest.groups[v.group]
        entries[name] = Entry(
            type=v.type,
            size=v.size,
            shape=v.shape,
            dtype=v.dtype,
            content=(group.pickle, *group.buffers),
            together=tuple(n for n in group.names if n != name),
        )
    _add_modules(entries, manifest.modules)
    for _kind, name, info in manifest.left_out():
        entries.setdefault(name, Entry(info.type, 0, saved=False, reason=info.reason))
    return Side(label or f"#{manifest.id}", entries, shapes_known=manifest.format_minor >= 1)


def side_of_body(body: Mapping[str, Any], label: str = "now") -> Side:
    """The side of a manifest body this process just built (``PendingSave.body``): trusted,
    so read as it is; a body from the store goes through :func:`side_of`."""
    groups = body["groups"]
    entries: dict[str, Entry] = {}
    for name, v in body["variables"].items():
        group = groups[v["group"]]
        shape = v.get("shape")
        entries[name] = Entry(
            type=v["type"],
            size=v["size"],
            shape=None if shape is None else tuple(shape),
            dtype=v.get("dtype"),
            content=(group["pickle"], *group["buffers"]),
            together=tuple(n for n in group["names"] if n != name),
        )
    _add_modules(entries, body["modules"])
    for kind in ("skipped", "withheld"):
        for name, info in sorted(body[kind].items()):
            entries.setdefault(name, Entry(info["type"], 0, saved=False, reason=info["reason"]))
    return Side(label, entries)


def _add_modules(entries: dict[str, Entry], modules: Mapping[str, str]) -> None:
    for name, module in modules.items():
        entries[name] = Entry("module", 0, dtype=None, content=(f"import {module}",))


def live_side(
    store: Any,
    namespace: Mapping[str, Any],
    notebook: NotebookRef,
    names: Iterable[str],
    *,
    include_credentials: bool = False,
) -> Side:
    """The "now" side: the namespace pickled and addressed as a save would do it, nothing written.

    Costs what the pickling part of a save costs (large arrays unchanged since a save are
    recognised by their fast hash and not hashed again).
    """
    pending = store.prepare(
        namespace, notebook, list(names), include_credentials=include_credentials
    )
    side = side_of_body(pending.body)
    pending.data.clear()  # drop the views of live memory now
    return side


def read_side(store: Any, notebook: NotebookRef | str, ident: int) -> Side:
    """Checkpoint ``ident``'s side, from its manifest (signature checked, no blob read).

    Raises what :meth:`CheckpointStore.read_checkpoint` raises, each naming ``ident``:
    ``CheckpointNotFound``, ``UntrustedCheckpoint``, ``MalformedManifest``, ``NewerFormat``.
    """
    try:
        ck = store.read_checkpoint(notebook, ident)
    except UntrustedCheckpoint as e:
        # Its own text is about restoring (--trust); a comparison has no such way round.
        e.args = (
            f"Checkpoint #{ident} is not trusted: {e.reason}. Only signed checkpoints are "
            "compared: give this machine the signing key of the one that saved it "
            "(NBCHECKPOINT_KEY_FILE or NBCHECKPOINT_KEY; `%checkpoint config` there shows where it is).",
        )
        raise
    if ck.manifest is None:  # pragma: no cover - read_checkpoint raises instead
        raise MalformedManifest(ident, ck.problem or "it cannot be read")
    return side_of(ck.manifest)


def diff_checkpoints(store: Any, notebook: NotebookRef | str, before: int, after: int) -> Diff:
    """Checkpoint ``before`` against checkpoint ``after`` of ``notebook``, from their manifests."""
    return diff_sides(read_side(store, notebook, before), read_side(store, notebook, after))


def diff_sides(before: Side, after: Side, method: str = "") -> Diff:
    """Compare two sides variable by variable.

    Examples
    --------
    >>> a = Side("#1", {"x": Entry("numpy.ndarray", 80, (10,), "float64", ("h1",))})
    >>> b = Side("#2", {"x": Entry("numpy.ndarray", 160, (20,), "float64", ("h2",))})
    >>> row = diff_sides(a, b).rows[0]
    >>> row.change, row.notes
    ('changed', ('shape (10,) -> (20,)',))
    """
    rows = []
    for name in sorted(set(before.entries) | set(after.entries)):
        rows.append(_row(name, before.entries.get(name), after.entries.get(name), before, after))
    rows.sort(key=lambda r: (CHANGES.index(r.change), r.name))
    return Diff(
        before.label,
        after.label,
        tuple(rows),
        method or "content addresses from the signed manifests",
        before.shapes_known and after.shapes_known,
    )


def _row(name: str, a: Entry | None, b: Entry | None, before: Side, after: Side) -> Row:
    if a is None:
        return Row(name, "added", None, b)
    if b is None:
        return Row(name, "removed", a, None)
    if not (a.saved and b.saved):
        missing = [(s.label, e) for s, e in ((before, a), (after, b)) if not e.saved]
        why = tuple(f"not saved in {label}: {e.reason}" for label, e in missing)
        return Row(name, "not saved", a, b, notes=why)
    notes: list[str] = []
    if a.type != b.type:
        notes.append(f"type {a.type} -> {b.type}")
    if a.shape != b.shape and a.shape is not None and b.shape is not None:
        notes.append(f"shape {_shape(a.shape)} -> {_shape(b.shape)}")
    if a.dtype != b.dtype and a.dtype is not None and b.dtype is not None:
        notes.append(f"dtype {a.dtype} -> {b.dtype}")
    if notes:
        return Row(name, "changed", a, b, notes=tuple(notes))
    if a.content == b.content:
        return Row(name, "same", a, b)
    together = sorted(set(a.together) | set(b.together))
    if together:
        # One pickle holds them all: which of them changed cannot be told from addresses.
        note = f"saved together with {', '.join(together)}: one of them changed"
        return Row(name, "changed", a, b, certain=False, notes=(note,))
    return Row(name, "changed", a, b)


def _shape(shape: tuple[int, ...]) -> str:
    """``(3,)`` and ``(2, 4)``, as NumPy writes shapes."""
    return str(tuple(shape))


def describe_entry(entry: Entry | None) -> str:
    """``numpy.ndarray (2, 3) float64``, for a table cell; empty for a missing side.

    Examples
    --------
    >>> describe_entry(Entry("numpy.ndarray", 48, (2, 3), "float64"))
    'numpy.ndarray (2, 3) float64'
    """
    if entry is None:
        return ""
    parts = [entry.type]
    if entry.shape is not None:
        parts.append(_shape(entry.shape))
    if entry.dtype is not None:
        parts.append(entry.dtype)
    return " ".join(parts)


def size_change(row: Row) -> str:
    """``80 B -> 160 B``, or one size for a variable on one side only."""
    a, b = row.before, row.after
    if a is not None and b is not None and a.saved and b.saved:
        if a.size == b.size:
            return human_bytes(a.size)
        return f"{human_bytes(a.size)} -> {human_bytes(b.size)}"
    one = b if b is not None and b.saved else a
    return human_bytes(one.size) if one is not None and one.saved else ""


def render(diff: Diff, show_same: bool = False) -> str:
    """The diff as terminal text: a summary line, then a table of the variables that differ.

    Names and types come from the store: control characters are escaped (see ``printable``).
    """
    lines = [printable(diff.summary())]
    rows = [r for r in diff.rows if show_same or r.change != "same"]
    if rows:
        lines.append(
            table(
                [
                    [
                        r.name,
                        r.change if r.certain else f"{r.change}?",
                        describe_entry(r.before),
                        describe_entry(r.after),
                        size_change(r),
                        "; ".join(r.notes),
                    ]
                    for r in rows
                ],
                ["variable", "change", diff.before, diff.after, "size", "notes"],
            )
        )
    if not diff.shapes_known:
        lines.append(
            "shape unknown: a checkpoint older than nbcheckpoint's format 2.1 records no "
            "shapes or dtypes; content changes still show."
        )
    return "\n".join(lines)


__all__ = [
    "CHANGES",
    "Diff",
    "Entry",
    "Row",
    "Side",
    "describe_entry",
    "diff_checkpoints",
    "diff_sides",
    "live_side",
    "read_side",
    "render",
    "side_of",
    "side_of_body",
    "size_change",
]
