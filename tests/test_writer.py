"""Snapshot writers: a thread that writes while the cell runs, a forked child, and their guards."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types
import warnings

import numpy as np
import pytest

from nbcheckpoint.capture import writer as writer_mod
from nbcheckpoint.capture.writer import ForkWriter, InlineWriter, Job, ThreadWriter, choose
from nbcheckpoint.store import CheckpointStore, NotebookRef

NB = NotebookRef.from_path("/tmp/writer-tests.ipynb")


@pytest.fixture
def store(tmp_path):
    return CheckpointStore(str(tmp_path / "store"))


def job(ns, status="running", names=None):
    return Job(ns, NB, list(names or ns), status)


def test_inline_writer_saves_at_once(store):
    w = InlineWriter(store)
    w.submit(job({"x": [1, 2]}))
    [outcome] = w.poll()
    assert outcome.checkpoint is not None
    assert store.load(NB).values == {"x": [1, 2]}


def test_thread_writer_copies_changed_bytes_so_the_cell_may_mutate(store):
    a = np.zeros(2_000_000)
    ns = {"a": a}
    w = ThreadWriter(store)
    w.submit(job(ns))
    a[:] = 7  # the cell goes on at once and changes the array
    [outcome] = w.drain(30)
    assert outcome.error is None
    restored = store.load(NB, outcome.checkpoint.id).values["a"]
    assert not restored.any()


def test_thread_writer_over_budget_writes_before_returning(store):
    ns = {"a": np.ones(100_000)}
    w = ThreadWriter(store, budget=0)
    w.submit(job(ns))
    assert not w.busy()  # nothing left for a thread: it was written on the spot
    [outcome] = w.poll()
    assert outcome.checkpoint is not None


def test_thread_writer_is_busy_while_writing(store, monkeypatch):
    release = threading.Event()
    real_commit = store.commit

    def slow_commit(*args, **kwargs):
        release.wait(10)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(store, "commit", slow_commit)
    w = ThreadWriter(store)
    w.submit(job({"x": 1}))
    assert w.busy()
    release.set()
    [outcome] = w.drain(10)
    assert outcome.checkpoint is not None and not w.busy()


def test_thread_writer_can_wait_for_the_event_loop_to_start_writing(store):
    later: list = []
    done: list[str] = []
    w = ThreadWriter(
        store,
        start_later=later.append,
        on_done=lambda: done.append(threading.current_thread().name),
    )
    a = np.zeros(1_000_000)
    w.submit(job({"a": a}))
    assert len(later) == 1 and w.busy() and not done
    assert store.list(NB) == []  # nothing is written until the loop runs the callback
    a[:] = 3  # the next cell mutates: the detached copy is what gets written
    later[0]()  # the kernel's event loop, once the reply is out
    [outcome] = w.drain(30)
    assert outcome.checkpoint is not None and not w.busy()
    assert not store.load(NB, outcome.checkpoint.id).values["a"].any()
    assert done == ["nbcheckpoint-writer"]
    later[0]()  # a late callback after the write started does nothing
    assert w.poll() == []


def test_thread_writer_drain_does_not_wait_for_a_loop_that_is_blocked(store):
    # drain() on the main thread while the callback sits in that thread's event loop:
    # it must start the write itself instead of waiting forever.
    w = ThreadWriter(store, start_later=lambda fn: None)
    w.submit(job({"x": 1}))
    [outcome] = w.drain(30)
    assert outcome.checkpoint is not None and not w.busy()


def test_fork_snapshot_is_the_state_at_the_safe_point(store):
    a = np.arange(3_000_000, dtype=np.float64)
    log = [0]
    ns = {"a": a, "log": log}
    w = ForkWriter(store)
    w.submit(job(ns))
    # The parent mutates right away, while the child is still serializing.
    a *= -1
    log.append(1)
    [outcome] = w.drain(60)
    assert outcome.error is None, outcome.error
    values = store.load(NB, outcome.checkpoint.id).values
    assert np.array_equal(values["a"], np.arange(3_000_000, dtype=np.float64))
    assert values["log"] == [0]


def test_fork_child_learns_fast_hashes_back(store):
    ns = {"a": np.ones(1_000_000)}
    w = ForkWriter(store)
    w.submit(job(ns))
    [first] = w.drain(60)
    assert first.checkpoint is not None
    w.submit(job(ns))
    [second] = w.drain(60)
    # The array was recognised as unchanged; the manifest and random states (PyTorch's
    # too, when another test imported it) are what is new.
    assert second.checkpoint.new_bytes < 20_000


def test_fork_child_does_not_deadlock_on_a_lock_held_by_another_thread(store):
    # A kernel's threads (IOPub, heartbeat, a user's data loader) hold locks all the time.
    # (logging's lock is different: logging takes it around fork itself, so fork waits.)
    busy = threading.Lock()
    held = threading.Event()
    done = threading.Event()

    def hold_lock():
        with busy:
            held.set()
            done.wait(30)

    t = threading.Thread(target=hold_lock, daemon=True)
    t.start()
    assert held.wait(5)
    try:
        w = ForkWriter(store, timeout=20)
        w.submit(job({"x": list(range(1000))}))
        [outcome] = w.drain(30)
        assert outcome.error is None, outcome.error
        assert busy.locked()  # the other thread still held it throughout
    finally:
        done.set()
        t.join(5)


class NeedsHeldLock:
    """Pickling it takes a lock that another thread of the parent holds: the child would hang."""

    lock = threading.Lock()

    def __reduce__(self):
        with NeedsHeldLock.lock:
            return (NeedsHeldLock, ())


def test_fork_child_past_its_timeout_is_killed_and_reported(store):
    store.save({"x": 1}, NB)  # an earlier checkpoint that must stay intact
    NeedsHeldLock.lock.acquire()
    try:
        w = ForkWriter(store, timeout=1.0)
        w.submit(job({"stuck": NeedsHeldLock()}))
        [outcome] = w.drain(10)
    finally:
        NeedsHeldLock.lock.release()
    assert outcome.checkpoint is None
    assert "ran longer than 1 s" in outcome.error and "intact" in outcome.error
    assert store.load(NB).values == {"x": 1}
    assert not store.verify()


class KillsTheChild:
    """Stands in for the out-of-memory killer: SIGKILLs whichever process pickles it, except the test."""

    parent = os.getpid()

    def __reduce__(self):
        if os.getpid() != KillsTheChild.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return (KillsTheChild, ())


def test_fork_child_killed_by_sigkill_is_reported_and_earlier_checkpoints_stay(store):
    first = store.save({"x": 1}, NB)
    w = ForkWriter(store)
    w.submit(job({"victim": KillsTheChild(), "x": 2}))
    [outcome] = w.drain(30)
    assert outcome.checkpoint is None
    assert "signal 9" in outcome.error and "out of memory" in outcome.error
    assert store.load(NB).checkpoint.id == first.id
    assert not store.verify()
    store.gc(grace=0)  # leftovers of the dead child go
    assert not os.listdir(os.path.join(store.backend.root, "tmp"))


def test_fork_child_errors_come_back_in_words(store, monkeypatch):
    monkeypatch.setattr(
        store, "commit", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left"))
    )
    w = ForkWriter(store)
    w.submit(job({"x": 1}))
    [outcome] = w.drain(30)
    assert outcome.checkpoint is None and "No space left" in outcome.error


def test_one_child_at_a_time(store):
    NeedsHeldLock.lock.acquire()
    try:
        w = ForkWriter(store, timeout=1)
        w.submit(job({"stuck": NeedsHeldLock()}))
        assert w.busy()
        with pytest.raises(RuntimeError, match="one checkpoint child"):
            w.submit(job({"x": 1}))
    finally:
        NeedsHeldLock.lock.release()
    w.drain(10)


def test_cuda_guard_falls_back_to_inline(store, monkeypatch):
    fake_torch = types.ModuleType("torch")
    fake_torch.cuda = types.SimpleNamespace(is_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    w, why = choose("fork", store, 10 << 30)
    assert isinstance(w, ThreadWriter) and "CUDA" in why


def test_auto_picks_fork_for_large_state_and_inline_for_small(store, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    for name in ("jax", "tensorflow", "cupy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    big, why_big = choose("auto", store, writer_mod.FORK_MIN_BYTES)
    small, why_small = choose("auto", store, 1000)
    assert isinstance(big, ForkWriter) and "large" in why_big
    assert isinstance(small, ThreadWriter) and "small" in why_small
    memory_store = CheckpointStore(f"memory://writer-{time.time_ns()}")
    w, why = choose("auto", memory_store, 10 << 30)
    assert isinstance(w, ThreadWriter) and "local store" in why
    with pytest.raises(ValueError, match="unknown mode"):
        choose("sideways", store, 0)


def test_fork_snapshot_of_restored_arrays_is_copy_on_write(store):
    # Restored arrays live in anonymous maps: they must be private, or a forked child
    # would see the parent's changes.
    store.save({"a": np.arange(2_000_000, dtype=np.float64)}, NB)
    a = store.load(NB).values["a"]
    w = ForkWriter(store)
    w.submit(job({"a": a}))
    a[:] = -1
    [outcome] = w.drain(60)
    assert outcome.error is None, outcome.error
    assert np.array_equal(
        store.load(NB, outcome.checkpoint.id).values["a"], np.arange(2_000_000, dtype=np.float64)
    )


# ------------------------------------------------ the final checkpoint, after the cell
def test_a_detached_child_leaves_the_group_and_is_in_the_store_before_submit_returns(
    store, monkeypatch
):
    from nbcheckpoint.store import store as store_module

    real = store_module.CheckpointStore.commit

    def slow_commit(self, pending, **kw):  # in the child: hold the save back
        time.sleep(1.0)
        return real(self, pending, **kw)

    monkeypatch.setattr(store_module.CheckpointStore, "commit", slow_commit)
    w = ForkWriter(store, detach=True)
    w.submit(job({"x": 1}, status="complete"))
    pid = w.pid
    assert pid is not None
    # Before submit returned: its own session (a killpg of ours misses it), its lease.
    assert os.getsid(pid) == pid != os.getsid(0)
    assert store.savers(NB, 600) == [pid]
    assert store.savers(NotebookRef.from_path("/tmp/another.ipynb"), 600) == []
    [outcome] = w.drain(60)
    assert outcome.checkpoint is not None and outcome.checkpoint.status == "complete"
    assert store.savers(NB, 600) == []


def test_write_after_cell_reports_and_settle_waits(store):
    seen = []
    pid = writer_mod.write_after_cell(store, job({"y": [1, 2]}, "complete"), seen.append)
    assert pid > 0
    assert writer_mod.settle(timeout=60)
    assert not writer_mod.writing_after_cell()
    [outcome] = seen
    assert outcome.checkpoint is not None
    assert store.load(NB).values == {"y": [1, 2]}


def test_write_after_cell_failure_comes_back_in_words(store, monkeypatch):
    def refuse(*a, **kw):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(store, "commit", refuse)
    seen = []
    writer_mod.write_after_cell(store, job({"y": 1}, "complete"), seen.append)
    assert writer_mod.settle(timeout=60)
    [outcome] = seen
    assert outcome.checkpoint is None and "Read-only file system" in (outcome.error or "")


def test_a_watcher_that_opens_the_store_while_reporting_does_not_wait_for_itself(store):
    # The outcome goes to listeners on the watcher thread; one that settles (opens the
    # store through the magics) must not join its own thread.
    seen = []

    def on_done(outcome):
        seen.append(writer_mod.settle(timeout=5))

    writer_mod.write_after_cell(store, job({"y": 1}, "complete"), on_done)
    assert writer_mod.settle(timeout=60)
    assert seen == [True]


def _huge_kb(address: int) -> int | None:
    """AnonHugePages of the mapping holding ``address`` (kB), from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return None


def test_huge_pages_split_by_writes_during_a_fork_are_put_back():
    """The cell's writes while a fork child lives split huge pages; once it has exited,
    collapse_huge_pages maps them huge again, and what the memory holds is unchanged."""
    from nbcheckpoint.capture.pages import HUGE, collapse_huge_pages

    a = np.random.default_rng(5).random((64 << 20) // 8)  # NumPy asks for huge pages
    lo = -(-a.ctypes.data // HUGE) * HUGE
    interior = ((a.ctypes.data + a.nbytes) // HUGE * HUGE - lo) >> 10  # kB in whole huge pages
    middle = lo + HUGE
    before = _huge_kb(middle)  # of the whole mapping, which may hold more than this array
    if not before or before < interior // 2:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            pytest.skip(f"no transparent huge pages for this array (THP: {f.read().strip()})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        time.sleep(1.0)
        os._exit(0)
    a[:: 4096 // 8] += 1.0  # one write per page while the child shares them: all split
    expected = a.copy()
    os.waitpid(pid, 0)
    split = _huge_kb(middle)
    assert split is not None and split <= before - interior // 2, (before, split, interior)
    assert collapse_huge_pages([(a.ctypes.data, a.nbytes)]) == interior << 10
    after = _huge_kb(middle)
    assert after is not None and after >= interior and after > split, (split, after, interior)
    assert np.array_equal(a, expected)
    assert collapse_huge_pages([(a.ctypes.data, 100)]) == 0  # no whole huge page in it


def test_a_slow_fork_puts_the_saved_buffers_back_on_huge_pages_after_the_child(store, monkeypatch):
    from nbcheckpoint.capture import pages

    asked: list[list[tuple[int, int]]] = []
    monkeypatch.setattr(pages, "collapse_huge_pages", lambda spans: asked.append(spans) or 0)
    big = np.ones(2_000_000)  # 16 MB: a chunked buffer
    w = ForkWriter(store)
    monkeypatch.setattr(writer_mod, "COLLAPSE_AFTER", 0.0)  # as if every fork were slow
    w.submit(job({"big": big}))
    [outcome] = w.drain(60)
    assert outcome.checkpoint is not None
    w._collapsing.join(10)
    assert asked == [[(big.ctypes.data, big.nbytes)]]
    asked.clear()
    monkeypatch.setattr(writer_mod, "COLLAPSE_AFTER", 1e9)  # a quick fork: nothing to do
    w.submit(job({"big": big}))
    w.drain(60)
    assert asked == []


def test_the_next_snapshot_waits_a_little_for_huge_pages_to_be_put_back(store, monkeypatch):
    """A fork while Linux copies pages back into huge ones would wait on that work: the
    writer counts as busy meanwhile, for COLLAPSE_WAIT seconds at most."""
    from nbcheckpoint.capture import pages

    release = threading.Event()
    monkeypatch.setattr(pages, "collapse_huge_pages", lambda spans: release.wait(10))
    monkeypatch.setattr(writer_mod, "COLLAPSE_AFTER", 0.0)
    w = ForkWriter(store)
    w.submit(job({"big": np.ones(2_000_000)}))
    [outcome] = w.drain(60)
    assert outcome.checkpoint is not None
    assert w.busy()  # putting huge pages back
    monkeypatch.setattr(writer_mod, "COLLAPSE_WAIT", 0.0)
    assert not w.busy()  # waited long enough: the next snapshot goes ahead
    release.set()
    w._collapsing.join(10)
    monkeypatch.setattr(writer_mod, "COLLAPSE_WAIT", 60.0)
    assert not w.busy()
