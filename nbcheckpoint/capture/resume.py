"""Whether a re-run cell resumes from its newest checkpoint: a plan to resume, or why not.

Also works out what a restore left out: the variables the notebook has, or had in other
checkpoints, that the restored checkpoint does not hold.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import CheckpointError
from ..store import Checkpoint, CheckpointStore, NotebookRef, Restored
from ..store.manifest import CellInfo
from .rewrite import Instrumented, Position, instrument


@dataclass
class ResumePlan:
    """Resume the cell: restore ``restored``, then run ``instrumented`` from ``position``."""

    restored: Restored
    position: Position
    instrumented: Instrumented
    message: str


@dataclass
class Refusal:
    """The newest checkpoint is an unfinished run of this cell, but the cell starts over."""

    checkpoint_id: int
    message: str


def plan_resume(
    store: CheckpointStore,
    nb: NotebookRef,
    source_hash: str,
    cell_id: str | None,
    module: ast.Module,
    *,
    markers: bool = False,
    lazy: bool = False,
) -> ResumePlan | Refusal | None:
    """Plan the resume of a re-run cell, when the newest checkpoint is an unfinished run of it.

    Returns None when there is nothing to resume (no checkpoint, the last run finished, or
    the newest checkpoint is another cell's), a ``Refusal`` saying why the cell starts over
    when it is this cell's but cannot resume, else a ``ResumePlan`` with the variables
    loaded and the cell instrumented to continue from the recorded position.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> plan_resume(store, NotebookRef.from_path("nb.ipynb"), "hash", None, ast.parse("x = 1"))
    """
    latest_id = store.latest_id(nb)
    if latest_id is None:
        return None
    try:
        latest = store.read_checkpoint(nb, latest_id)
    except CheckpointError:
        return None
    if latest.status not in ("running", "interrupted"):
        return None
    m = latest.manifest
    if m is None:
        return None
    last_cell = m.cell or CellInfo()
    again = "Run %checkpoint restore to get its variables back."
    if last_cell.source_hash != source_hash:
        if cell_id and last_cell.cell_id == cell_id:
            return Refusal(
                latest.id,
                f"nbcheckpoint: this cell changed since checkpoint #{latest.id}, so it runs from "
                f"the start. {again}",
            )
        return None
    position = m.position
    if position is None or not position.resumable or position.sp is None:
        return Refusal(
            latest.id,
            f"nbcheckpoint: checkpoint #{latest.id} was taken inside a function, where a cell "
            f"cannot resume; the cell runs from the start. {again}",
        )
    try:
        restored = store.load(nb, latest.id, lazy=lazy)
    except CheckpointError as e:
        return Refusal(
            latest.id,
            f"nbcheckpoint: cannot resume from checkpoint #{latest.id} ({e}); starting over.",
        )
    pos = Position(sp=position.sp, counters=position.counters)
    try:
        instrumented = instrument(module, resume=pos, markers=markers)
    except ValueError as e:
        return Refusal(
            latest.id,
            f"nbcheckpoint: cannot resume from checkpoint #{latest.id} ({e}); starting over.",
        )
    where = position.description or "its last safe point"
    count = len(restored.values)
    message = (
        f"Resuming from checkpoint #{latest.id}: {where}, {count} variable{'s' * (count != 1)} "
        "restored (--no-resume starts over)."
    )
    return ResumePlan(restored, pos, instrumented, message)


def _shown(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass
class LeftOut:
    """What a restore did not bring back, though the notebook has or had it."""

    here: list[str] = field(default_factory=list)  # in the namespace now: kept as they are
    elsewhere: dict[str, int] = field(default_factory=dict)  # name -> newest checkpoint with it
    lost: list[str] = field(default_factory=list)  # the notebook had them; no checkpoint has

    def lines(self, ck: Checkpoint) -> list[str]:
        """Short lines for the restore message, saying what to do next.

        Examples
        --------
        >>> from types import SimpleNamespace as NS
        >>> from nbcheckpoint.store.manifest import CellInfo, Manifest, NotebookInfo
        >>> m = Manifest(id=4, notebook=NotebookInfo("k", "k.ipynb"), created=1.0,
        ...              status="running", cell=CellInfo(first_line="x = 1"))
        >>> ck = NS(id=4, variables={"x": {}, "y": {}}, manifest=m, status="running")
        >>> print("\\n".join(LeftOut(["model"], {"history": 3}, ["data"]).lines(ck)))
        Not in checkpoint #4: data, history, model (that cell saved only x, y).
          model: kept as it is now.
          history: checkpoint #3 has it: %checkpoint restore 3 history
          data: in no checkpoint; run the cells that define it again.
        """
        missing = [*self.here, *self.elsewhere, *self.lost]
        if not missing:
            return []
        held = _shown(ck.variables) or "no variables"
        m = ck.manifest
        by_cell = m is not None and m.cell is not None and ck.status not in ("auto", "manual")
        whose = "that cell saved only" if by_cell else "it holds only"
        out = [f"Not in checkpoint #{ck.id}: {_shown(missing)} ({whose} {held})."]
        if self.here:
            verb = "kept as it is now" if len(self.here) == 1 else "kept as they are now"
            out.append(f"  {_shown(self.here)}: {verb}.")
        by_id: dict[int, list[str]] = {}
        for name, ident in self.elsewhere.items():
            by_id.setdefault(ident, []).append(name)
        for ident, names in sorted(by_id.items(), reverse=True):
            has = "has it" if len(names) == 1 else "has them"
            out.append(
                f"  {_shown(names)}: checkpoint #{ident} {has}: "
                f"%checkpoint restore {ident} {' '.join(sorted(names)[:12])}"
            )
        if self.lost:
            them = "it" if len(self.lost) == 1 else "them"
            out.append(
                f"  {_shown(self.lost)}: in no checkpoint; run the cells that define {them} again."
            )
        return out


def left_out(restored: Restored, now: Iterable[str], others: Iterable[Checkpoint] = ()) -> LeftOut:
    """The user variables a full restore did not bring back.

    ``now`` are the namespace's user names after the restore; the checkpoint records the
    names the notebook had when its cell ran (``cell.notebook_names``); ``others`` are the
    notebook's other checkpoints, which may hold what this one does not.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> from nbcheckpoint.store.manifest import CellInfo, Manifest, NotebookInfo
    >>> cell = CellInfo(notebook_names=("x", "data", "history"))
    >>> m = Manifest(id=4, notebook=NotebookInfo("k", "k.ipynb"), created=1.0, status="complete",
    ...              cell=cell)
    >>> ck = NS(id=4, variables={"x": {}}, manifest=m, status="complete")
    >>> r = NS(checkpoint=ck, values={"x": 1}, failed={})
    >>> old = NS(id=3, variables={"x": {}, "history": {}})
    >>> left_out(r, ["x", "model"], [old])
    LeftOut(here=['model'], elsewhere={'history': 3}, lost=['data'])
    """
    ck = restored.checkpoint
    m = ck.manifest
    accounted = set(ck.variables) | set(restored.failed)
    if m is not None:
        accounted |= set(m.modules) | set(m.skipped) | set(m.withheld)
    now_set = set(now)
    here = sorted(now_set - accounted)
    gone = accounted | now_set
    others = sorted((c for c in others if c.id != ck.id), key=lambda c: c.id, reverse=True)
    recorded = m.cell.notebook_names if m is not None and m.cell is not None else None
    if recorded is not None:  # the names the notebook had when the cell ran
        candidates = set(recorded)
    elif ck.status in ("auto", "manual"):
        candidates = set()  # it saved every variable, or those the user named on purpose
    else:  # a cell checkpoint of an older version: what other checkpoints hold
        candidates = {n for c in others for n in c.variables}
    elsewhere: dict[str, int] = {}
    lost = []
    for name in sorted(candidates - gone):
        newest = next((c.id for c in others if name in c.variables), None)
        if newest is None:
            lost.append(name)
        else:
            elsewhere[name] = newest
    return LeftOut(here, elsewhere, lost)
