"""Auto mode: after a cell, save what changed in the namespace, written on a thread.

The cell's text is not trusted to say what changed (see :mod:`.changes`): each save
follows a scan of every variable. A save is pickled on the main thread, where the
namespace is consistent, and written by a :class:`~.writer.ThreadWriter`, so the next
cell starts at once. While the writer is busy, changes wait; they go at the start of
the next cell, or as soon as the writer is done and the kernel idle, or at exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..store import Checkpoint, CheckpointStore, NotebookRef
from ..store.hashing import single_threaded
from .changes import Scan, Scanner
from .engine import kernel_identity
from .events import emit
from .names import user_names
from .writer import InlineWriter, Job, Outcome, ThreadWriter, Writer

# Seconds after a cell's end before its scan runs on the kernel's event loop.
SETTLE_DELAY = 0.01


@dataclass
class AutoSettings:
    """What each auto save records and keeps; read afresh at every save."""

    include_credentials: bool = False
    keep: int | None = None
    max_size: int | None = None


class AutoSaver:
    """The auto-save state machine of one namespace.

    Parameters
    ----------
    ns : the user namespace.
    open_store, notebook, hidden, settings : called at each save for the current
        store, notebook, hidden names and :class:`AutoSettings`.
    event_loop : returns the kernel's event loop (an object with ``add_callback``)
        or None (a terminal, tests): writes then start at once.
    warn : prints a line for the user.

    Examples
    --------
    >>> saver = AutoSaver(ns, store_for_url, lambda: ref, set, AutoSettings)  # doctest: +SKIP
    >>> saver.cell_finished({"first_line": "x = 1"})  # doctest: +SKIP
    >>> saver.collect(wait=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        ns: MutableMapping[str, Any],
        open_store: Callable[[], CheckpointStore],
        notebook: Callable[[], NotebookRef],
        hidden: Callable[[], Iterable[str]],
        settings: Callable[[], AutoSettings],
        event_loop: Callable[[], Any] = lambda: None,
        warn: Callable[[str], None] = print,
        recipes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.recipes = recipes
        self.ns = ns
        self.open_store = open_store
        self.notebook = notebook
        self.hidden = hidden
        self.settings = settings
        self.event_loop = event_loop
        self.warn = warn
        self.enabled = False
        self.in_cell = False
        self.base: Checkpoint | None = None
        # Names changed since ``base`` was taken and not yet in a save under way.
        self.pending: set[str] = set()
        self.cell: dict[str, Any] | None = None
        # The cell whose scan waits for the kernel to reply (see ``cell_finished``).
        self.due: dict[str, Any] | None = None
        self.writer: ThreadWriter | None = None
        # Made at the first scan: a kernel that never turns auto mode on sets up no
        # write tracking.
        self.scanner: Scanner | None = None
        self.last_scan: Scan | None = None
        self.scan_seconds = 0.0
        self._warned = False
        self._scan_warned = False

    # ------------------------------------------------------------ cells
    def cell_started(self) -> None:
        """Before a cell: a scan or save still waiting goes now, since nothing has run
        since the last cell ended and the namespace is still as it left it."""
        self.in_cell = True
        if self.due is not None:
            self._settle()
        elif self.enabled and self.pending and self.cell is not None:
            self.flush()

    def cell_finished(self, cell: dict[str, Any] | None, save: bool) -> None:
        """After a cell (``save``: auto mode is on and the cell ran long enough): scan the
        namespace and save what changed. A cell that raised is saved too: what it changed
        before raising is what the namespace holds now.

        In a kernel the scan and the pickling wait until the kernel has replied (the
        event loop runs them next, on this thread, before any other cell): the cell's
        reply is not held up. Without an event loop they run at once.
        """
        self.in_cell = False
        if not save:
            return
        self.due = cell or {}
        loop = self.event_loop()
        if loop is None:
            self._settle()
            return
        # The reply is queued on the loop too, and leaves at one of its next turns: a
        # callback added now could run before it. A short delay lets it go first; a
        # cell that comes sooner scans at its start (``cell_started``).
        later = getattr(loop, "call_later", None)
        if callable(later):
            later(SETTLE_DELAY, self._settle_idle)
        else:
            loop.add_callback(self._settle_idle)

    def _settle_idle(self) -> None:
        if not self.in_cell and self.due is not None:
            self._settle()

    def _settle(self) -> None:
        """Scan and save, for the cell that ended last."""
        cell, self.due = self.due, None
        self.scan()
        self.cell = cell
        self.flush()

    def settle(self, wait: bool = True) -> None:
        """Run what waits now: the last cell's scan, the save of what changed, and (with
        ``wait``) the writes, until nothing is left. For tests and benchmarks."""
        if self.due is not None:
            self._settle()
        self.collect(wait=wait)
        if self.enabled and self.pending and self.cell is not None:
            self.flush()
            self.collect(wait=wait)

    def scan(self) -> set[str]:
        """Compare every variable with the last scan; the changed names join ``pending``."""
        started = time.perf_counter()
        names = self._names()
        try:
            if self.scanner is None:
                self.scanner = Scanner()
            current = self.scanner.scan(self.ns, names)
        except Exception as e:  # a fault of ours must not lose a change
            # Nothing is known: everything counts as changed, and the next scan starts over.
            self.last_scan = None
            self.pending |= set(names)
            if not self._scan_warned:
                self.warn(
                    f"nbcheckpoint: auto mode could not compare variables ({type(e).__name__}: "
                    f"{e}); it saves all of them after each cell instead."
                )
            self._scan_warned = True
            self.scan_seconds = time.perf_counter() - started
            return set(names)
        base = self.base.manifest if self.base is not None else None
        skipped = base.skipped if base is not None else ()
        changed = current.changed_since(self.last_scan, skipped)
        self.last_scan = current
        self.pending |= changed & set(names)
        self.scan_seconds = time.perf_counter() - started
        return changed

    def mark_changed(self, names: Iterable[str]) -> None:
        """Names changed behind the scan's back (a restore): saved with the next changes."""
        self.pending |= set(names)

    def _names(self) -> list[str]:
        return user_names(self.ns, list(self.ns), self.hidden())

    # ------------------------------------------------------------ saving
    def flush(self, writer: Writer | None = None) -> None:
        """Start the pending save, unless the writer is still busy with the previous one.

        Then the changes wait, and go at the start of the next cell or when the writer is
        done, whichever comes first: a cell never waits for a disk.
        """
        if writer is None:
            store = self.open_store()
            if self.writer is None or self.writer.store is not store:
                self.collect(wait=True)
                self.writer = ThreadWriter(
                    store, start_later=self._when_idle, on_done=self._after_write
                )
            writer = self.writer
        if writer.busy():
            self.collect()
            return
        # Only now: a write that ends between a look at its outcome and the look at
        # ``busy`` would leave ``base`` one checkpoint behind, and the groups reused
        # from it stale. A writer that is not busy has handed over every outcome.
        self.collect()
        names = self._names()
        base = self.base
        if base is not None and not self.pending & set(names) and set(names) == _held(base):
            self.pending = set()
            return  # nothing changed: the last checkpoint still holds
        changed, self.pending = self.pending, set()
        settings = self.settings()
        writer.submit(
            Job(
                self.ns,
                self.notebook(),
                names,
                "auto",
                cell=self.cell,
                kernel=kernel_identity(),
                include_credentials=settings.include_credentials,
                keep=settings.keep,
                max_size=settings.max_size,
                base=base,
                changed=changed,
                recipes=self.recipes,
                written=self.scanner.written_now() if self.scanner is not None else None,
            )
        )
        self.collect()

    def collect(self, wait: bool = False) -> None:
        """Take in the saves that finished (all of them, with ``wait``)."""
        if self.writer is None:
            return
        outcomes = self.writer.drain() if wait else self.writer.poll()
        for outcome in outcomes:
            self._landed(outcome)

    def _landed(self, outcome: Outcome) -> None:
        if outcome.checkpoint is not None:
            self.base = outcome.checkpoint
            emit(outcome.checkpoint)
            return
        self.pending |= set(outcome.job.changed or ())
        if self.base is not None or not self._warned:
            self.warn(
                f"nbcheckpoint: auto checkpoint failed ({outcome.error}); your work is unaffected."
            )
        self._warned = True

    def _when_idle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main thread once the kernel has replied to the current request."""
        loop = self.event_loop()
        if loop is None:
            fn()
        else:
            loop.add_callback(fn)

    def _after_write(self) -> None:
        """Writer thread: changes that waited for this write go as soon as the kernel is idle,
        not only when the next cell starts (which may be never: a user who walks away)."""
        if self.pending:
            loop = self.event_loop()
            if loop is not None:
                loop.add_callback(self._idle_flush)

    def _idle_flush(self) -> None:
        if self.enabled and not self.in_cell and self.pending and self.cell is not None:
            self.flush()

    def at_exit(self, wait: float = 4.0) -> None:
        """Kernel shutdown or restart: wait up to ``wait`` seconds for the write under way,
        then save the changes still waiting for it on this thread. Jupyter kills a kernel
        that takes more than 5 s to stop; a write cut short leaves earlier checkpoints
        intact."""
        try:
            if self.writer is not None:
                for outcome in self.writer.drain(wait):
                    self._landed(outcome)
            # Thread pools refuse work once the interpreter is shutting down: from here
            # on, everything runs on this thread, the last thing the kernel does.
            single_threaded()
            if self.due is not None:  # the last cell's scan had not run yet
                cell, self.due = self.due, None
                self.scan()
                self.cell = cell
            if self.writer is None and not self.pending:
                return
            writer = self.writer or ThreadWriter(self.open_store())
            waiting = self.enabled and self.pending and self.cell is not None
            if waiting and not writer.busy():
                inline = InlineWriter(writer.store)
                self.flush(inline)
                for outcome in inline.poll():
                    self._landed(outcome)
        except Exception:
            pass


def _held(ck: Checkpoint) -> set[str]:
    """Every name a checkpoint accounts for: saved, imported, or left out with a reason."""
    m = ck.manifest
    if m is None:
        return set(ck.variables)
    return set(ck.variables) | set(m.modules) | set(m.skipped) | set(m.withheld)
