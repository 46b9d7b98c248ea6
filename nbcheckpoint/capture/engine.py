"""Snapshots taken inside a running cell: the safe-point runtime, its timer, and the final checkpoint."""

from __future__ import annotations

import ast
import base64
import collections
import os
import pickle
import random
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CheckpointError
from ..store import Checkpoint, CheckpointStore, NotebookRef
from .arm import Arming, marker_pairs
from .events import emit
from .iterate import Held, Probe, count, loop, resume_loop, rng_holder
from .names import reachable_names, user_names
from .rewrite import RESERVED_PREFIX, CellPlan
from .writer import (
    FORK_MIN_BYTES,
    InlineWriter,
    Job,
    Outcome,
    Writer,
    choose,
    estimate_bytes,
    fork_unsafe_reason,
    write_after_cell,
)

if TYPE_CHECKING:
    from .changes import ChunkWatch

DUE = "_nbc_due_"
# The status line's "one every ..." is the mean of the last this many intervals.
RECENT_INTERVALS = 5
SP = "__nbc_sp__"
LOOP = "__nbc_loop__"
RESUME_LOOP = "__nbc_resume_loop__"
COUNT = "__nbc_count__"
RUNTIME_NAMES = (DUE, SP, LOOP, RESUME_LOOP, COUNT)
#: A checkpoint due for OVERDUE x every with no safe point reached is reported.
OVERDUE = 3
#: A checkpoint due while the writer still writes the previous one is due again this
#: many seconds later (at most --every): it is taken soon after the writer is done.
BUSY_RETRY = 0.1

KERNEL_STARTED = time.time()
#: The final checkpoint of a cell is written after the cell returns, by a forked child,
#: when pickling it on the main thread would hold the kernel noticeably: large buffers
#: (FORK_MIN_BYTES), many objects (containers holding this many items in all: a list of
#: a million small dicts takes about 1.5 s to pickle), or a checkpoint of this run that
#: took FINAL_AFTER_SECONDS.
FINAL_AFTER_ITEMS = 200_000
FINAL_AFTER_SECONDS = 0.1
_SIZED = (list, tuple, dict, set, frozenset, collections.deque)


class Reporter(Protocol):
    """Where the engine speaks: a live status line, and one-off messages."""

    def status(self, text: str) -> None: ...

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


def kernel_identity() -> dict[str, Any]:
    """Identifies this process, so later kernels can tell checkpoints "from an earlier kernel"."""
    return {"pid": os.getpid(), "host": os.uname().nodename, "started": KERNEL_STARTED}


def from_earlier_kernel(ck: Checkpoint) -> bool:
    m = ck.manifest
    if m is None:
        return True
    return bool(m.kernel.pid != os.getpid() or m.kernel.started != KERNEL_STARTED)


def _run_safepoint(sp: int | None, *pairs: int | None) -> None:
    """``__nbc_sp__``: the running cell's safe point, when a cell is running.

    A module-level function rather than a bound method of the run, so that the namespace
    holds nothing but module functions (pickled by reference by whole-session tools and by
    dill when it saves a function with its globals).
    """
    run = _ACTIVE
    if run is not None:
        run.safepoint(sp, *pairs)


def _resume_loop_with_note(loop_id: int, start: int, iterable: Any) -> Any:
    """``resume_loop``, saying so when skipping meant producing the items again, or when the
    order of the remaining items may not be the interrupted run's."""
    run = _ACTIVE
    rng_state = run.resumed_rng_state(loop_id) if run is not None else None
    began = time.perf_counter()
    iterator, probe = resume_loop(loop_id, start, iterable, rng_state)
    info = run.plan.loops.get(loop_id) if run is not None else None
    label = f"`for {info.target}`" if info is not None else "the loop"
    if probe.consumed_by_iteration:
        took = time.perf_counter() - began
        print(
            f"nbcheckpoint: to resume {label}, its iterable was read through {probe.skipped} items "
            f"({took:.1f} s), since it cannot be indexed; any side effects of producing them happened again.",
            flush=True,
        )
    if run is not None:
        run.check_resumed_order(loop_id, start, iterable, rng_state is not None)
    return Held(iterator), probe


def _held_loop(iterable: Any) -> tuple[Held, Probe]:
    """``__nbc_loop__``: :func:`.iterate.loop`, its iterator held so that it pickles (as None)."""
    iterator, probe = loop(iterable)
    return Held(iterator), probe


def _held_count(start: int = 0) -> tuple[Held, Probe]:
    """``__nbc_count__``: :func:`.iterate.count`, its iterator held so that it pickles (as None)."""
    iterator, probe = count(start)
    return Held(iterator), probe


def install_runtime(ns: MutableMapping[str, Any]) -> None:
    """Put the names instrumented code refers to into the namespace, idle.

    Each is a module-level function (pickled by reference), and what they return to the
    namespace while a loop runs (``_nbc_it<id>_``, ``_nbc_p<id>_``) pickles as None: a
    whole-session tool such as ``dill.dump_module()`` works inside a running cell.
    """
    ns[DUE] = False
    ns[SP] = _run_safepoint
    ns[LOOP] = _held_loop
    ns[RESUME_LOOP] = _resume_loop_with_note
    ns[COUNT] = _held_count


def clear_cell_names(ns: MutableMapping[str, Any]) -> None:
    """Remove the helper variables a rewritten cell left (loop iterators, probes, flags).

    ``_nbc_due_`` stays: functions defined in ``%%checkpoint`` cells test it.
    """
    for name in [n for n in list(ns) if n.startswith(RESERVED_PREFIX) and n != DUE]:
        ns.pop(name, None)


@dataclass
class Options:
    """Settings of one ``%%checkpoint`` run."""

    every: float = 60.0
    keep: int | None = None
    names: list[str] | None = None
    include_credentials: bool = False
    max_size: int | None = None
    mode: str = "auto"


@dataclass
class CellInfo:
    """The cell a run belongs to: its source hash, execution count, first line and frontend id."""

    source_hash: str
    execution_count: int | None
    first_line: str
    cell_names: set[str] = field(default_factory=set)
    # The notebook's cell id when the frontend sends one: it tells an edited cell from another cell.
    cell_id: str | None = None
    # The user's variables when the cell started: a restore says which of them it lacks.
    notebook_names: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source_hash": self.source_hash,
            "execution_count": self.execution_count,
            "first_line": self.first_line,
            "cell_id": self.cell_id,
        }
        if self.notebook_names is not None:
            out["notebook_names"] = self.notebook_names
        return out


class CellRun:
    """One execution of a ``%%checkpoint`` cell: timer, safe points, final checkpoint.

    Everything runs on the main thread except the timer, which only sets the flag
    ``_nbc_due_`` in the namespace (the inserted check costs one global lookup) and pokes
    the main thread to arm the marker lines of tight loops (see :mod:`.arm`), and the
    writer, which may finish a snapshot on a thread or in a forked child.
    """

    def __init__(
        self,
        ns: MutableMapping[str, Any],
        store: CheckpointStore,
        notebook: NotebookRef,
        plan: CellPlan,
        cell: CellInfo,
        options: Options,
        reporter: Reporter,
        hidden: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.ns = ns
        self.store = store
        self.notebook = notebook
        self.plan = plan
        self.cell = cell
        self.options = options
        self.reporter = reporter
        self.hidden = hidden
        self.taken: list[Checkpoint] = []
        self.last_position: dict[str, Any] | None = None
        self.failing: str | None = None
        self.skipped_reported: set[str] = set()
        self.skipped_busy = 0
        self.writer: Writer = InlineWriter(store)
        self.mode_reason = "inline"
        self._stop = threading.Event()
        self._done = threading.Event()
        self._last = time.monotonic()
        self._timer: threading.Thread | None = None
        self.started = time.time()
        self.filename: str | None = None
        self.arming = Arming(lambda: bool(self.ns.get(DUE)), self._marker)
        self._marker_failed = False
        # When the flag was set and no safe point has come yet (None: none due), how many
        # times a checkpoint was overdue by OVERDUE x every, and the longest wait so far.
        self._due_since: float | None = None
        self.overdue = 0
        self.longest_wait = 0.0
        self._resumed: dict[str, Any] | None = None
        # How variables were made (the magics' recipe book): recorded for those skipped.
        self.recipes: Mapping[str, Mapping[str, Any]] | None = None
        self._watch: ChunkWatch | None = None

    # --------------------------------------------------------------- timing
    def start(self, filename: str | None = None) -> None:
        """Start the timer; ``filename`` is what the cell was compiled as (for its marker lines)."""
        install_runtime(self.ns)
        try:
            self.writer, self.mode_reason = choose(
                self.options.mode, self.store, estimate_bytes(self.ns, self.names_now())
            )
        except ValueError as e:
            raise CheckpointError(str(e)) from e
        self.filename = filename
        if self.plan.markers:
            # Even a cell without tight loops may call a function with marker lines.
            reason = self.arming.install()
            if reason is not None and any(lp.tight for lp in self.plan.loops.values()):
                self.reporter.warn(
                    f"nbcheckpoint: no checkpoints inside loops without calls in this run ({reason}); "
                    "run the cell again to get them back."
                )
        self._last = time.monotonic()
        self._timer = threading.Thread(target=self._tick, name="nbcheckpoint-timer", daemon=True)
        self._timer.start()
        global _ACTIVE
        _ACTIVE = self

    def _tick(self) -> None:
        while not self._stop.is_set():
            wait = self._last + self.options.every - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            due_since = self._due_since = time.monotonic()
            self.ns[DUE] = True
            self._done.clear()
            self.arming.poke()
            reported = False
            # Until the main thread reaches a safe point; each poke costs it a few microseconds.
            while not self._done.wait(0.1):
                if self._stop.is_set():
                    return
                self.arming.poke()
                late = time.monotonic() - due_since
                if (
                    not reported
                    and self._due_since is not None
                    and late >= OVERDUE * self.options.every
                ):
                    reported = True
                    self._report_overdue(late)

    def _report_overdue(self, late: float) -> None:
        """From the timer thread: a checkpoint was due long ago and no safe point came."""
        self.overdue += 1
        every = f"{self.options.every:g} s"
        self.reporter.status(
            f"nbcheckpoint: checkpoint overdue: due {late:.0f} s ago (every {every}), "
            f"no safe point reached yet · {len(self.taken)} taken so far"
        )
        if self.overdue == 1:
            # The store is named so the JupyterLab notification can say which checkpoints
            # are late (frontend/comm.py reads the path and the wait back out of this text).
            self.reporter.warn(
                f"nbcheckpoint: a checkpoint (store {self.store.url}) has been due for "
                f"{late:.0f} s (every {every}) and the cell has not reached a safe point: it is inside a long call (C code, or a "
                "function defined outside a %%checkpoint cell). Call nbcheckpoint.safepoint() "
                "once per iteration of that function's loop to get checkpoints there."
            )

    def stop(self) -> None:
        global _ACTIVE
        self._stop.set()
        self.ns[DUE] = False
        self.arming.uninstall()
        if _ACTIVE is self:
            _ACTIVE = None

    # ----------------------------------------------------------- snapshots
    def names_now(self) -> list[str]:
        """The NAMEs given, else what the cell mentions and its functions reach; every import
        in both cases (imports cost nothing, and a user expects them back after a crash)."""
        imports = {n for n, v in list(self.ns.items()) if isinstance(v, types.ModuleType)}
        if self.options.names is not None:
            chosen = {n for n in self.options.names if n in self.ns}
        else:
            chosen = reachable_names(self.cell.cell_names, self.ns)
        return user_names(self.ns, chosen | imports, self.hidden())

    def safepoint(self, sp: int | None, *pairs: int | None) -> None:
        """Called by instrumented code when the flag is set; starts one snapshot."""
        self.ns[DUE] = False
        self.arming.disarm()
        if self._due_since is not None:
            self.longest_wait = max(self.longest_wait, time.monotonic() - self._due_since)
            self._due_since = None
        retry = False
        try:
            self._collect()
            if self.writer.busy():
                # Backpressure: never pile snapshots up behind a slow disk or network. The
                # snapshot is not dropped: it is due again shortly, and taken at the first
                # safe point after the writer is done.
                self.skipped_busy += 1
                retry = True
                return
            job = self._job("running", self._position(sp, pairs))
            if self.writer.mode == "inline":  # saved in this process: its writes are watched
                job.watch = self._chunk_watch()
            self.writer.submit(job)
            self._collect()
        finally:
            now = time.monotonic()
            # The timer's next due time is _last + every: a retry comes after BUSY_RETRY.
            self._last = now - max(0.0, self.options.every - BUSY_RETRY) if retry else now
            self._done.set()

    def _marker(self, frame: types.FrameType, sp: int) -> None:
        """A marker line reached with the trace armed: the same snapshot a flag test would take."""
        try:
            if frame.f_code.co_filename == self.filename:
                self.safepoint(sp, *marker_pairs(self.plan, sp, self.ns))
            else:  # a function from another cell: its ids mean nothing here
                self.safepoint(None)
        except Exception as e:  # never let a snapshot break the user's loop
            if not self._marker_failed:
                self._marker_failed = True
                self.reporter.warn(
                    f"nbcheckpoint: a checkpoint inside a loop failed ({e}); the cell goes on, "
                    "and the next checkpoint is tried when it is due."
                )

    def _job(self, status: str, position: dict[str, Any] | None) -> Job:
        return Job(
            self.ns,
            self.notebook,
            self.names_now(),
            status,
            cell=self.cell.as_dict(),
            position=position,
            kernel=kernel_identity(),
            include_credentials=self.options.include_credentials,
            keep=self.options.keep,
            max_size=self.options.max_size,
            recipes=self.recipes,
        )

    def _chunk_watch(self) -> ChunkWatch:
        """What the cell's in-process saves share to hash only the chunks written since."""
        if self._watch is None:
            from .changes import ChunkWatch

            self._watch = ChunkWatch()
        return self._watch

    def _position(self, sp: int | None, pairs: tuple[int | None, ...]) -> dict[str, Any]:
        counters = [int(c) for c in pairs[0::2] if c is not None]
        lengths = list(pairs[1::2])
        info = self.plan.safepoints.get(sp) if sp is not None else None
        resumable = bool(info and info.resumable and len(counters) == len(info.loops))
        description = describe(self.plan, sp, counters, lengths)
        position: dict[str, Any] = {
            "sp": sp,
            "counters": counters,
            "lengths": lengths,
            "resumable": resumable,
            "description": description,
        }
        if resumable and info is not None:
            states = self._rng_states(info.loops)
            if states:
                position["rng_states"] = states
        return position

    def _rng_states(self, loops: tuple[int, ...]) -> dict[str, str]:
        """The generator state each loop around a position began with (see ``rng_holder``).

        Pickled (a torch state is a tensor) into the signed manifest as base64 text.
        """
        states: dict[str, str] = {}
        for loop_id in loops:
            probe = self.ns.get(f"_nbc_p{loop_id}_")
            state = getattr(probe, "rng_state", None)
            if state is None:
                continue
            try:
                states[str(loop_id)] = base64.b64encode(pickle.dumps(state)).decode("ascii")
            except Exception:  # a state that does not pickle: the resume says so instead
                continue
        return states

    # ------------------------------------------------------------- resuming
    def resumed_position(self) -> dict[str, Any]:
        """The position of the checkpoint this run resumed from ({} if none is found).

        That is this cell's newest unfinished checkpoint written before this run started,
        the one a re-run resumes from.
        """
        if self._resumed is None:
            self._resumed = {}
            try:
                for ck in reversed(self.store.list(self.notebook)):
                    if ck.created >= self.started:
                        continue
                    m = ck.manifest
                    cell, position = (m.cell, m.position) if m is not None else (None, None)
                    if (
                        ck.status in ("running", "interrupted")
                        and cell is not None
                        and cell.source_hash == self.cell.source_hash
                        and position is not None
                    ):
                        self._resumed = {"rng_states": dict(position.rng_states)}
                    break
            except (CheckpointError, OSError):
                pass
        return self._resumed

    def resumed_rng_state(self, loop_id: int) -> Any:
        """The generator state loop ``loop_id`` began with in the interrupted run, or None."""
        encoded = (self.resumed_position().get("rng_states") or {}).get(str(loop_id))
        if not encoded:
            return None
        try:
            return pickle.loads(base64.b64decode(encoded))
        except Exception:
            return None

    def check_resumed_order(self, loop_id: int, start: int, iterable: Any, replayed: bool) -> None:
        """Warn when a resumed loop's remaining items may come in another order.

        The iterable is built again from the restored variables; when it draws its order from
        a random generator that the interrupted run had advanced since the loop began, the
        order differs. A generator the iterable exposes is replayed (``replayed``); any other
        random source is only named.
        """
        info = self.plan.loops.get(loop_id)
        if replayed or info is None:
            return
        label = f"`for {info.target}`"
        holder = rng_holder(iterable)
        if holder is not None:
            source = f"its generator ({type(holder).__name__})"
        else:
            sources = random_sources(info.iter, self.ns)
            sampler = getattr(iterable, "sampler", None)
            if not sources and "Random" in type(sampler).__name__:
                sources = [f"{type(sampler).__name__} (the global random generator)"]
            if not sources:
                return
            source = ", ".join(sources)
        self.reporter.warn(
            f"nbcheckpoint: {label} resumes at item {start + 1} of `{info.iter}`, built again "
            f"from {source}, which the interrupted run had advanced: the remaining items may "
            f"come in another order than they would have. For the same order, build it once "
            f"before the loop (order = ...) and loop over that variable."
        )

    def _collect(self) -> None:
        for outcome in self.writer.poll():
            self._landed(outcome)

    def _landed(self, outcome: Outcome) -> None:
        if outcome.checkpoint is None:
            if self.failing is None:
                self.reporter.warn(
                    f"nbcheckpoint: could not save a checkpoint ({outcome.error}). The cell keeps running; "
                    "checkpoints resume when the store works again."
                )
            self.failing = outcome.error or "unknown error"
            return
        ck = outcome.checkpoint
        if self.failing is not None:
            self.reporter.info("nbcheckpoint: the store works again; checkpoints resumed.")
            self.failing = None
        self.taken.append(ck)
        self.last_position = outcome.job.position
        self._report_left_out(ck)
        emit(ck)
        self.reporter.status(self.status_line(ck))

    def _snapshot(self, status: str, position: dict[str, Any] | None) -> Checkpoint | None:
        """A snapshot taken and written before returning."""
        return self._snapshot_job(self._job(status, position))

    def _snapshot_job(self, job: Job) -> Checkpoint | None:
        before = len(self.taken)
        job.watch = self._chunk_watch()
        writer = InlineWriter(self.store)
        writer.submit(job)
        for outcome in writer.poll():
            self._landed(outcome)
        return self.taken[-1] if len(self.taken) > before else None

    def _final_after_cell(self, job: Job) -> str | None:
        """Why the final checkpoint should be written after the cell returns, or None.

        Only from a forked child (the kernel's memory as it is now, copy-on-write), so
        never on a remote store, where fork is unsafe, or in ``--mode inline``.
        """
        if self.options.mode == "inline" or not self.store.backend.local:
            return None
        if fork_unsafe_reason() is not None:
            return None
        size = estimate_bytes(self.ns, job.names)
        if size >= FORK_MIN_BYTES:
            return f"{size >> 20} MB of arrays"
        items = sum(len(v) for n in job.names if isinstance(v := self.ns.get(n), _SIZED))
        if items >= FINAL_AFTER_ITEMS:
            return f"{items:,} items in lists and dicts"
        took = max(
            ((ck.manifest.stats.duration or 0.0) for ck in self.taken if ck.manifest is not None),
            default=0.0,
        )
        if took >= FINAL_AFTER_SECONDS:
            return f"a checkpoint of this run took {took * 1000:.0f} ms"
        return None

    def _write_after_cell(self, job: Job, why: str) -> None:
        """Fork the final checkpoint's writer and return; its outcome is reported when it lands."""
        try:
            pid = write_after_cell(self.store, job, self._landed_after_cell)
        except (OSError, RuntimeError) as e:  # no fork after all: write it now
            self.reporter.info(f"nbcheckpoint: writing the final checkpoint here ({e}).")
            self._snapshot_job(job)
            return
        taken = len(self.taken)
        so_far = f"{taken} checkpoint{'s' if taken != 1 else ''} so far · " if taken else ""
        self.reporter.status(
            f"nbcheckpoint: {so_far}the final checkpoint is being written after the cell "
            f"(process {pid}; {why}). Saves and restores in this kernel wait for it."
        )

    def _landed_after_cell(self, outcome: Outcome) -> None:
        """On the watcher thread: the final checkpoint's child has ended."""
        report = getattr(self.reporter, "after_cell", None)
        if outcome.checkpoint is None:
            text = (
                f"nbcheckpoint: the final checkpoint of cell {self.cell.first_line!r} could not "
                f"be saved ({outcome.error}); the checkpoints before it are intact."
            )
            if report is not None:
                report(text, True)
            return
        ck = outcome.checkpoint
        self.taken.append(ck)
        emit(ck)
        lines = []
        for kind, name, info in ck.manifest.left_out() if ck.manifest is not None else ():
            if name not in self.skipped_reported:
                self.skipped_reported.add(name)
                lines.append(f"nbcheckpoint: {kind} {name} ({info.type}): {info.reason}")
        if lines and report is not None:
            head = f"nbcheckpoint: the final checkpoint #{ck.id} of cell {self.cell.first_line!r}:"
            report("\n".join([head, *lines]), False)

    def _report_left_out(self, ck: Checkpoint) -> None:
        for kind, name, info in ck.manifest.left_out() if ck.manifest is not None else ():
            if name not in self.skipped_reported:
                self.skipped_reported.add(name)
                self.reporter.info(f"nbcheckpoint: {kind} {name} ({info.type}): {info.reason}")

    def status_line(self, ck: Checkpoint) -> str:
        from ..format import human_bytes

        when = time.strftime("%H:%M:%S", time.localtime(ck.created))
        m = ck.manifest
        duration = (m.stats.duration if m is not None else None) or 0.0
        parts = [
            f"{len(self.taken)} checkpoint{'s' if len(self.taken) != 1 else ''}",
            f"last #{ck.id} at {when} ({human_bytes(ck.total_bytes)}, {duration * 1000:.0f} ms)",
        ]
        if m is not None and m.position is not None and m.position.description:
            parts.append(m.position.description)
        if self.skipped_busy and len(self.taken) > 1:
            # Over the last few: how often they come now (a first, whole write of a large
            # state can take far longer than the ones after it).
            recent = self.taken[-(RECENT_INTERVALS + 1) :]
            first, last = recent[0].created, recent[-1].created
            effective = (last - first) / (len(recent) - 1)
            if effective > self.options.every * 1.5:
                gap = f"{effective:.1f} s" if effective >= 1 else f"{effective * 1000:.0f} ms"
                parts.append(
                    f"one every {gap}: each waited for the previous one to be "
                    f"written (--every {self.options.every:g} s)"
                )
        if self.overdue:
            parts.append(
                f"{self.overdue} overdue (longest wait for a safe point {self.longest_wait:.0f} s)"
            )
        return "nbcheckpoint: " + " · ".join(parts)

    # ------------------------------------------------------------- the end
    def finish(self, error: BaseException | None) -> Checkpoint | None:
        """Final checkpoint when the cell succeeded; otherwise mark the last one interrupted."""
        try:
            return self._finish(error)
        finally:
            clear_cell_names(self.ns)
            if self._watch is not None:
                self._watch.close()

    def _finish(self, error: BaseException | None) -> Checkpoint | None:
        self.stop()
        for outcome in self.writer.drain():
            self._landed(outcome)
        self.writer.close()
        if error is None:
            job = self._job("complete", None)
            why = self._final_after_cell(job)
            if why is not None:
                self._write_after_cell(job, why)
                return None
            return self._snapshot_job(job)
        if self.taken:
            last = self.taken[-1]
            try:
                self.store.set_status(self.notebook, last.id, "interrupted")
            except (CheckpointError, OSError) as e:
                self.reporter.warn(
                    f"nbcheckpoint: could not mark checkpoint #{last.id} interrupted ({e})."
                )
            else:
                where = (self.last_position or {}).get("description") or "its last safe point"
                self.reporter.info(
                    f"nbcheckpoint: checkpoint #{last.id} ({where}) stands; re-run the cell to resume from it."
                )
        return None


def describe(plan: CellPlan, sp: int | None, counters: list[int], lengths: list[Any]) -> str:
    """A position in words: ``for epoch at 57/100 · for batch at 3`` (1-based, like a person counts)."""
    info = plan.safepoints.get(sp) if sp is not None else None
    if info is None or not info.resumable or sp is None:
        return "inside a function"
    return plan.describe(sp, tuple(counters), tuple(lengths))


def _is_random_generator(value: object) -> bool:
    """A random generator object: numpy's, ``random.Random``, or anything with get/set_state."""
    if isinstance(value, random.Random):
        return True
    try:
        if hasattr(value, "bit_generator"):  # numpy.random.Generator
            return True
        return callable(getattr(value, "get_state", None)) and callable(
            getattr(value, "set_state", None)
        )
    except Exception:
        return False


_RANDOM_WORDS = ("shuffle", "sample", "choice", "choices", "permutation", "permuted")


def random_sources(expression: str, ns: Mapping[str, Any]) -> list[str]:
    """The random generators an expression draws from, as it names them.

    Variables holding a generator (``rng`` in ``rng.permutation(n)``) and module-level
    random functions (``np.random.permutation``, ``random.sample``, ``torch.randperm``).

    Examples
    --------
    >>> import random
    >>> random_sources("r.sample(xs, 3)", {"r": random.Random(0), "xs": [1, 2, 3]})
    ['r']
    >>> random_sources("random.sample(xs, 3)", {"random": random})
    ['random.sample']
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in ns:
            if _is_random_generator(ns[node.id]) and node.id not in found:
                found.append(node.id)
        elif isinstance(node, ast.Attribute):
            parts = [node.attr]
            root: ast.expr = node.value
            while isinstance(root, ast.Attribute):
                parts.append(root.attr)
                root = root.value
            if not isinstance(root, ast.Name) or not isinstance(ns.get(root.id), types.ModuleType):
                continue
            dotted = ".".join([root.id, *reversed(parts)])
            words = [root.id, *parts]
            randomish = any(w == "random" or w.startswith("rand") for w in words) or (
                node.attr in _RANDOM_WORDS
            )
            if randomish and not any(f.startswith(dotted) for f in found):
                found = [f for f in found if not dotted.startswith(f)] + [dotted]
    return found


_ACTIVE: CellRun | None = None


def active_run() -> CellRun | None:
    return _ACTIVE


def safepoint() -> None:
    """A safe point for loops that live outside the cell, such as inside your training function.

    Call it once per iteration; it costs almost nothing unless a checkpoint is due
    in a running ``%%checkpoint`` cell. Such checkpoints restore the variables, but a
    re-run cannot resume inside your function: it starts the cell over.

    Examples
    --------
    >>> def train(model, epochs):
    ...     for epoch in range(epochs):
    ...         safepoint()
    """
    run = _ACTIVE
    if run is not None and run.ns.get(DUE):
        run.safepoint(None)
