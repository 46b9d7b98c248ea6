"""How a snapshot leaves the safe point: inline, on a writer thread, or from a forked child.

The main thread must pickle what it saves (only there is the state consistent), but
it need not wait for disks and networks. ``ThreadWriter`` copies the few changed
bytes and lets a thread write them; ``ForkWriter`` forks, so the child serializes its
copy-on-write image while the cell runs on.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CheckpointError
from ..store import Checkpoint, CheckpointStore, NotebookRef
from ..store.hashing import single_threaded
from ..store.records import PendingSave

if TYPE_CHECKING:
    from .changes import ChunkWatch

MODES = ("auto", "inline", "fork")
FORK_MIN_BYTES = 64 << 20
COPY_BUDGET = 256 << 20
FORK_TIMEOUT = 600.0
# A fork that held the kernel this long (its page tables are many) is followed, once the
# child exits, by putting the saved buffers back on huge pages (``ForkWriter._after_child``).
COLLAPSE_AFTER = 0.010
# The next snapshot waits this long at most for that (see ``ForkWriter.busy``).
COLLAPSE_WAIT = 1.0
# What a detached child writes first, once its lease is in the store; how long to wait for it.
ANNOUNCED = b"+"
ANNOUNCE_TIMEOUT = 10.0


@dataclass
class Job:
    """One snapshot to save: which variables, and what to record about it."""

    ns: Mapping[str, Any]
    notebook: NotebookRef
    names: list[str]
    status: str
    cell: dict[str, Any] | None = None
    position: dict[str, Any] | None = None
    kernel: dict[str, Any] | None = None
    include_credentials: bool = False
    keep: int | None = None
    max_size: int | None = None
    base: Checkpoint | None = None
    changed: set[str] | None = None
    # How variables were made: those the snapshot skips are recorded with it.
    recipes: Mapping[str, Mapping[str, Any]] | None = None
    # Write-tracking numbers of the chunks of large buffers (``Scanner.written_now``).
    written: Mapping[tuple[int, int], int] | None = None
    # Or the watch that gives them, asked right before the save and told what it held
    # (a loop's snapshots on this process's main thread; never in a forked child).
    watch: ChunkWatch | None = None


@dataclass
class Outcome:
    """What became of a job: a checkpoint, or an error in words."""

    job: Job
    checkpoint: Checkpoint | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class Writer(Protocol):
    mode: str

    def busy(self) -> bool: ...

    def submit(self, job: Job) -> None: ...

    def poll(self) -> list[Outcome]: ...

    def drain(self, timeout: float | None = None) -> list[Outcome]: ...

    def close(self) -> None: ...


def _prepare(store: CheckpointStore, job: Job, stage: bool = False) -> PendingSave:
    watch = job.watch
    pending = store.prepare(
        job.ns,
        job.notebook,
        job.names,
        status=job.status,
        cell=job.cell,
        position=job.position,
        kernel=job.kernel,
        include_credentials=job.include_credentials,
        base=job.base,
        changed=job.changed,
        recipes=job.recipes,
        written=watch.written() if watch is not None else job.written,
        stage=stage,
    )
    if watch is not None:
        watch.saw(pending.buffers)
    return pending


def _save(store: CheckpointStore, job: Job) -> Checkpoint:
    # Committed at once: new blobs are written while the rest is still pickled.
    return store.commit(_prepare(store, job, stage=True), keep=job.keep, max_size=job.max_size)


def _error_text(error: BaseException) -> str:
    return str(error) if isinstance(error, CheckpointError) else f"{type(error).__name__}: {error}"


class InlineWriter:
    """Everything on the main thread; the simplest, and what the final checkpoint uses."""

    mode = "inline"

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self._done: list[Outcome] = []

    def busy(self) -> bool:
        return False

    def submit(self, job: Job) -> None:
        try:
            self._done.append(Outcome(job, _save(self.store, job)))
        except (CheckpointError, OSError) as e:
            self._done.append(Outcome(job, error=_error_text(e)))

    def poll(self) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def drain(self, timeout: float | None = None) -> list[Outcome]:
        return self.poll()

    def close(self) -> None:
        return None


class ThreadWriter:
    """Pickle and fast-hash on the main thread; write and publish on a writer thread.

    Changed bytes are copied (up to ``budget``) so the cell may mutate them at once;
    a larger change is written before the cell continues.

    Parameters
    ----------
    store : CheckpointStore
    budget : int
        Most bytes copied to let the cell go on while they are written.
    start_later : callable, optional
        ``start_later(fn)`` runs ``fn`` soon on the main thread; the writer thread is started
        from there. Auto mode passes the kernel's event loop, so the write begins once the
        kernel has sent its reply: a thread writing while the kernel replies competes for
        the GIL and added about 2 ms to every small cell. Without it the write starts at once.
    on_done : callable, optional
        Called on the writer thread after each write, landed or failed.
    """

    mode = "inline"

    def __init__(
        self,
        store: CheckpointStore,
        budget: int = COPY_BUDGET,
        start_later: Callable[[Callable[[], None]], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.budget = budget
        self.start_later = start_later
        self.on_done = on_done
        self._lock = threading.Lock()
        self._done: list[Outcome] = []
        self._thread: threading.Thread | None = None
        self._waiting: threading.Thread | None = None  # made, not started yet
        # A write under way. Cleared before ``on_done`` runs, so that a change made while
        # ``on_done`` looks for waiting work is seen by one side or the other.
        self._writing = False

    def busy(self) -> bool:
        with self._lock:
            return self._waiting is not None or self._writing

    def submit(self, job: Job) -> None:
        try:
            pending = _prepare(self.store, job)
        except (CheckpointError, OSError) as e:
            self._finish(Outcome(job, error=_error_text(e)))
            return
        if not pending.detach(self.budget):
            self._commit(job, pending)  # too big to copy: write it now, from live memory
            return
        thread = threading.Thread(
            target=self._commit, args=(job, pending), name="nbcheckpoint-writer", daemon=True
        )
        with self._lock:
            self._writing = True
        if self.start_later is None:
            self._thread = thread
            thread.start()
            return
        with self._lock:
            self._waiting = thread
        try:
            self.start_later(self._start_waiting)
        except Exception:  # a closed event loop: write now rather than never
            self._start_waiting()

    def _start_waiting(self) -> None:
        with self._lock:
            thread, self._waiting = self._waiting, None
        if thread is not None:
            self._thread = thread
            thread.start()

    def _commit(self, job: Job, pending: PendingSave) -> None:
        try:
            ck = self.store.commit(pending, keep=job.keep, max_size=job.max_size)
        except (CheckpointError, OSError) as e:
            self._finish(Outcome(job, error=_error_text(e)))
        except Exception as e:  # a writer thread must never die silently
            self._finish(Outcome(job, error=_error_text(e)))
        else:
            self._finish(Outcome(job, ck))
        if threading.current_thread() is not self._thread:
            return  # written inline, from live memory
        with self._lock:
            self._writing = False
        if self.on_done is not None:
            try:
                self.on_done()
            except Exception:
                pass

    def _finish(self, outcome: Outcome) -> None:
        with self._lock:
            self._done.append(outcome)

    def poll(self) -> list[Outcome]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def drain(self, timeout: float | None = None) -> list[Outcome]:
        # Waiting for a write that waits for the main thread's event loop would never end
        # when called from that thread: start it here instead.
        self._start_waiting()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()

    def close(self) -> None:
        self.drain()


def fork_unsafe_reason() -> str | None:
    """Why forking this process to save would be unsafe, or None when it is fine."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "fork mode needs Linux"
    if os.environ.get("NBCHECKPOINT_NO_FORK"):
        return "NBCHECKPOINT_NO_FORK is set"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    with contextlib.suppress(Exception):
        if cuda is not None and cuda.is_initialized():
            return "CUDA is initialized, and CUDA does not survive fork"
    for name in ("jax", "tensorflow", "cupy"):
        if name in sys.modules:
            return f"{name} is loaded, and its runtime threads do not survive fork"
    return None


class ForkWriter:
    """Fork at the safe point; the child saves its copy-on-write image and exits.

    The child touches no socket, lock, logging or print of the kernel: it saves with
    the store's plain file calls, reports through a pipe, and leaves with ``os._exit``.
    One child at a time; one that runs past ``timeout`` is killed and reported.
    """

    mode = "fork"

    def __init__(
        self, store: CheckpointStore, timeout: float = FORK_TIMEOUT, detach: bool = False
    ) -> None:
        self.store = store
        self.timeout = timeout
        # A detached child leaves the kernel's process group: Jupyter's restart, which
        # kills the group, does not stop a save the cell already returned from.
        self.detach = detach
        self._child: tuple[int, int, float, Job] | None = None
        self._buffer = b""
        self._done: list[Outcome] = []
        # How long the last fork held the kernel, and the thread putting the large buffers
        # back on huge pages after a child ended (see ``_after_child``).
        self.fork_pause = 0.0
        self._collapsing: threading.Thread | None = None
        self._collapse_started = 0.0
        # Each child is waited for by a thread, which also reads its report and the
        # checkpoint it wrote (about 10-30 ms for a 10 GB state): none of that is done at
        # the safe point where the next snapshot is taken. ``_lock`` guards ``_done``.
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._kill_by: float | None = None  # set by ``drain(timeout)``
        self._last_pid: int | None = None

    def busy(self) -> bool:
        """A child is writing, or huge pages are being put back after one (for at most
        ``COLLAPSE_WAIT`` seconds: a fork meanwhile would wait on that work and pause)."""
        watcher = self._watcher
        if watcher is not None and watcher.is_alive():
            return True
        collapsing = self._collapsing
        return (
            collapsing is not None
            and collapsing.is_alive()
            and time.monotonic() - self._collapse_started < COLLAPSE_WAIT
        )

    @property
    def pid(self) -> int | None:
        """The last child forked (writing still, or done since)."""
        return self._last_pid

    def submit(self, job: Job) -> None:
        watcher = self._watcher
        if watcher is not None and watcher.is_alive():
            raise RuntimeError("one checkpoint child at a time")
        _ = self.store.key  # load the signing key before forking, not in the child
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns at any fork of a process with threads (a kernel always has
            # some). The child runs no thread's code: it saves with plain file calls and
            # leaves with os._exit, and ``single_threaded`` keeps its hashing on one thread.
            warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
            forked = time.perf_counter()
            pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 1
            announced = None
            try:
                os.close(read_fd)
                if self.detach:
                    os.setsid()
                single_threaded()
                # Before the pickling: a restore in a new kernel sees this save under way.
                announced = self.store.announce(job.notebook)
                if self.detach:
                    os.write(write_fd, ANNOUNCED)
                known = set(self.store._fast)
                pending = _prepare(self.store, job)
                ck = self.store.commit(pending, keep=job.keep, max_size=job.max_size)
                learned = [[k[0], k[1], v] for k, v in self.store._fast.items() if k not in known]
                spans = [[address, size] for address, size, _ in pending.buffers]
                report = {"id": ck.id, "learned": learned, "spans": spans}
                status = 0
            except BaseException as e:
                report = {"error": _error_text(e)}
            if announced is not None:
                with contextlib.suppress(BaseException):
                    announced.release()
            try:
                data = json.dumps(report).encode()
                view = memoryview(data)
                while view:
                    view = view[os.write(write_fd, view) :]
            finally:
                os._exit(status)
        os.close(write_fd)
        self.fork_pause = time.perf_counter() - forked
        self._buffer = b""
        if self.detach:
            # The cell returns once the child has left the kernel's process group and its
            # lease is in the store: a kill or restart from then on neither stops it nor
            # lets a restore elsewhere miss it. A child that fails first reports instead.
            ready, _, _ = select.select([read_fd], [], [], ANNOUNCE_TIMEOUT)
            first = os.read(read_fd, 1) if ready else b""
            if first != ANNOUNCED:
                self._buffer = first
        os.set_blocking(read_fd, False)
        self._child = (pid, read_fd, time.monotonic(), job)
        self._last_pid = pid
        self._watcher = threading.Thread(
            target=self._reap, args=(True,), name="nbcheckpoint-fork-watch", daemon=True
        )
        self._watcher.start()

    def _read(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._buffer += chunk

    def _reap(self, block: bool) -> None:
        """Wait for the child (on the watcher thread) and put its outcome in ``_done``."""
        if self._child is None:
            return
        pid, fd, started, job = self._child
        while True:
            self._read(fd)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            overdue = time.monotonic() - started > self.timeout
            deadline = self._kill_by
            if overdue or (deadline is not None and time.monotonic() > deadline):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(fd)
                self._child = None
                self._add(
                    Outcome(
                        job,
                        error=(
                            f"the checkpoint writer ran longer than {self.timeout:g} s and was stopped; "
                            "earlier checkpoints are intact"
                        ),
                    )
                )
                return
            if not block:
                return
            time.sleep(0.01)
        self._read(fd)
        os.close(fd)
        self._child = None
        try:
            outcome = self._outcome(job, status)
        except Exception as e:  # a watcher thread must never die with the outcome untold
            outcome = Outcome(job, error=_error_text(e))
        self._add(outcome)

    def _add(self, outcome: Outcome) -> None:
        with self._lock:
            self._done.append(outcome)

    def _outcome(self, job: Job, status: int) -> Outcome:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            why = " (perhaps out of memory)" if sig == signal.SIGKILL else ""
            return Outcome(
                job,
                error=(
                    f"the checkpoint writer was killed by signal {sig}{why}; earlier checkpoints are intact"
                ),
            )
        try:
            report = json.loads(self._buffer or b"{}")
        except ValueError:
            report = {}
        if "id" not in report:
            return Outcome(
                job, error=report.get("error") or f"the checkpoint writer failed (exit {status})"
            )
        self.store.learn({(int(n), str(x)): str(h) for n, x, h in report.get("learned", [])})
        self._after_child(report.get("spans"))
        try:
            return Outcome(job, self.store.read_checkpoint(job.notebook, int(report["id"])))
        except CheckpointError as e:
            return Outcome(job, error=str(e))

    def _after_child(self, spans: Any) -> None:
        """Once a child has exited: map the large buffers it saved with huge pages again.

        The cell's writes while the child lived split the huge pages they touched (see
        :func:`.pages.collapse_huge_pages`), and the next fork would pay for every split
        one: a fork of a 10 GiB state went from 14 ms to 100 ms over a few minutes of
        snapshots. Done on a thread (the GIL released), only when the last fork took
        ``COLLAPSE_AFTER`` or more, one at a time.
        """
        if self.fork_pause < COLLAPSE_AFTER or not isinstance(spans, list):
            return
        if self._collapsing is not None and self._collapsing.is_alive():
            return
        try:
            pairs = [(int(a), int(n)) for a, n in spans]
        except (TypeError, ValueError):
            return
        from .pages import collapse_huge_pages

        self._collapsing = threading.Thread(
            target=collapse_huge_pages, args=(pairs,), name="nbcheckpoint-huge-pages", daemon=True
        )
        self._collapse_started = time.monotonic()
        self._collapsing.start()

    def poll(self) -> list[Outcome]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def drain(self, timeout: float | None = None) -> list[Outcome]:
        """Wait for the child; one still writing after ``timeout`` seconds is stopped."""
        watcher = self._watcher
        if watcher is not None:
            if timeout is not None:
                self._kill_by = time.monotonic() + timeout
            watcher.join()
            self._kill_by = None
        return self.poll()

    def close(self) -> None:
        self.drain()


# ----------------------------------------------------- writes after the cell
# Final checkpoints written by detached children after their cell returned, each watched
# by a thread that reaps the child and hands its outcome on.
_BACKGROUND: list[threading.Thread] = []
_BACKGROUND_LOCK = threading.Lock()


def write_after_cell(store: CheckpointStore, job: Job, on_done: Callable[[Outcome], None]) -> int:
    """Fork a detached child that saves ``job`` while the kernel goes on; returns its pid.

    ``on_done`` gets the outcome on a watcher thread once the child has ended. Until
    then :func:`settle` waits for it: whatever saves or restores next comes after it.
    """
    writer = ForkWriter(store, detach=True)
    writer.submit(job)
    pid = writer.pid or 0

    def watch() -> None:
        for outcome in writer.drain():
            with contextlib.suppress(Exception):  # a report must not kill the watcher
                on_done(outcome)

    thread = threading.Thread(target=watch, name="nbcheckpoint-final", daemon=True)
    with _BACKGROUND_LOCK:
        _BACKGROUND.append(thread)
    thread.start()
    return pid


def writing_after_cell() -> bool:
    """Whether a final checkpoint is still being written after its cell."""
    with _BACKGROUND_LOCK:
        _BACKGROUND[:] = [t for t in _BACKGROUND if t.is_alive()]
        return bool(_BACKGROUND)


def settle(timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> bool:
    """Wait for the final checkpoints still being written; True once none is.

    ``on_wait`` is called once, when there is something to wait for.
    """
    me = threading.current_thread()  # a watcher reporting its own outcome waits for no one
    with _BACKGROUND_LOCK:
        threads = [t for t in _BACKGROUND if t.is_alive() and t is not me]
    if threads and on_wait is not None:
        on_wait()
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


def choose(mode: str, store: CheckpointStore, estimate: int) -> tuple[Writer, str]:
    """The writer for ``mode`` and the reason it was picked (shown by ``%checkpoint config``)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    unsafe = fork_unsafe_reason()
    if not store.backend.local:
        unsafe = (
            unsafe or "fork mode needs a local store (object-store clients do not survive fork)"
        )
    if mode == "fork":
        if unsafe:
            return ThreadWriter(store), f"inline: {unsafe}"
        return ForkWriter(store), "fork: as asked"
    if mode == "inline":
        return ThreadWriter(store), "inline: as asked"
    if unsafe:
        return ThreadWriter(store), f"inline: {unsafe}"
    if estimate >= FORK_MIN_BYTES:
        return ForkWriter(store), f"fork: the state is large ({estimate >> 20} MB)"
    return ThreadWriter(store), f"inline: the state is small ({estimate >> 20} MB)"


def estimate_bytes(ns: MutableMapping[str, Any], names: list[str]) -> int:
    """A cheap size estimate: the buffers of arrays and bytes among the variables."""
    total = 0
    for name in names:
        value = ns.get(name)
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int):
            total += nbytes
        elif isinstance(value, (bytes, bytearray)):
            total += len(value)
        else:
            memory = getattr(value, "memory_usage", None)  # pandas
            if callable(memory):
                with contextlib.suppress(Exception):
                    total += int(memory(deep=False).sum())
    return total
