"""gc beside writers, whatever the clocks say; unreadable manifests keep their blobs; retention that scales, and its defaults."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import blob_paths

from nbcheckpoint.errors import StoreWriteError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store import store as store_module
from nbcheckpoint.store.leases import LEASE_TTL, LEASES, Lease, StoreClock
from nbcheckpoint.store.store import DEFAULT_KEEP, UNLIMITED, digest

SKEW = 2 * 3600.0  # the gc's machine is two hours ahead of the store's clock


def _skew_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading of this process's clock is two hours ahead; the store's (the file
    system's or the S3 server's) is not."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + SKEW)


def _age(store: CheckpointStore, path: str, seconds: float) -> None:
    full = os.path.join(store.backend.root, *path.split("/"))  # type: ignore[attr-defined]
    st = os.stat(full)
    os.utime(full, (st.st_atime - seconds, st.st_mtime - seconds))


def _put_blob(store: CheckpointStore, data: bytes) -> str:
    h = digest(data)
    store._write_blob(h, memoryview(data))
    return h


def _blob_names(store: CheckpointStore) -> set[str]:
    return {p.replace("/", "").removeprefix("blobs") for p in blob_paths(store.backend)}


# ---------------------------------------------------------- writer beside gc
def _writer_beside_gc(url: str, nb: NotebookRef, saves: int, grace: float) -> dict[str, int]:
    """One thread saves ``saves`` checkpoints while another runs gc(grace) without pause.

    The writer also makes garbage that its next save reuses (a checkpoint of another
    notebook, deleted at once, holding the array the next save holds): gc sees those
    blobs unreferenced exactly while the next save counts on them.
    """
    writer_store = CheckpointStore(url)
    gc_store = CheckpointStore(url, clock=time.time)
    other = NotebookRef.from_path("/elsewhere/scratch.ipynb")
    acked: dict[int, int] = {}
    errors: list[BaseException] = []
    withdrawn = 0
    gc_runs = 0
    done = threading.Event()

    def state(seq: int) -> dict[str, Any]:
        rng = np.random.default_rng(seq)
        return {"seq": seq, "data": rng.standard_normal(3000), "big": rng.standard_normal(70_000)}

    def writer() -> None:
        nonlocal withdrawn
        try:
            for seq in range(saves):
                garbage = writer_store.save(state(seq + 1), other, keep=UNLIMITED)
                writer_store.delete(other, garbage.id)
                while True:
                    try:
                        ck = writer_store.save(state(seq), nb, keep=UNLIMITED)
                        break
                    except StoreWriteError:
                        withdrawn += 1  # never acknowledged: saved again, as a user would
                acked[ck.id] = seq
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def collector() -> None:
        nonlocal gc_runs
        try:
            while not done.is_set():
                gc_store.gc(grace=grace)
                gc_runs += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=collector)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    assert len(acked) == saves
    reader = CheckpointStore(url)
    for ident, seq in acked.items():  # every acknowledged checkpoint restores, whole
        values = reader.load(nb, ident).values
        want = state(seq)
        assert values["seq"] == seq
        np.testing.assert_array_equal(values["data"], want["data"])
        np.testing.assert_array_equal(values["big"], want["big"])
    assert [p for p in reader.verify() if p.notebook == nb.key] == []
    return {"gc_runs": gc_runs, "withdrawn": withdrawn}


def test_gc_with_a_clock_two_hours_ahead_loses_no_acknowledged_checkpoint(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skew_this_machine(monkeypatch)
    counts = _writer_beside_gc(local_store_url, nb, saves=45, grace=store_module.DEFAULT_GRACE)
    assert counts["gc_runs"] >= 3, counts
    print(f"\nskewed gc beside a writer: {counts}")


def test_gc_with_no_grace_beside_a_writer_loses_no_acknowledged_checkpoint(
    local_store_url: str, nb: NotebookRef
) -> None:
    counts = _writer_beside_gc(local_store_url, nb, saves=45, grace=0)
    assert counts["gc_runs"] >= 3, counts
    print(f"\ngc --grace 0 beside a writer: {counts}")


# ------------------------------------------------------ leases and the clock
def test_a_young_blob_is_spared_by_the_stores_clock_not_this_machines(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb)
    _skew_this_machine(monkeypatch)
    young = _put_blob(store, b"a blob whose manifest is still being written")
    # This machine says the blob is two hours old; the store says seconds.
    assert store.gc(grace=60).removed_blobs == 0
    assert young in _blob_names(store)
    _age(store, f"blobs/{young[:2]}/{young[2:]}", 120)
    assert store.gc(grace=60).removed_blobs == 1
    assert young not in _blob_names(store)
    assert store.load(nb).values == {"x": 1}


def test_a_live_lease_protects_its_blobs_even_with_no_grace(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb)
    blob = _put_blob(store, b"written long ago by a save still in progress")
    _age(store, f"blobs/{blob[:2]}/{blob[2:]}", 10 * 3600)
    lease = Lease.take(store.backend, nb.key, [blob])
    report = store.gc(grace=0)
    assert report.removed_blobs == 0 and blob in _blob_names(store)
    lease.release()
    assert store.gc(grace=0).removed_blobs == 1
    assert blob not in _blob_names(store)
    assert store.backend.listdir(LEASES) == []  # gc's own marker is gone too


def test_leases_of_dead_writers_expire(local_store_url: str, nb: NotebookRef) -> None:
    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb)
    old = _put_blob(store, b"blob of a writer on another machine that died")
    dead = _put_blob(store, b"blob of a writer on this machine that died")
    for h in (old, dead):
        _age(store, f"blobs/{h[:2]}/{h[2:]}", 10 * 3600)
    # Another host's lease, older than the lease TTL on the store's clock.
    far = f"{LEASES}/otherhost-1-{'0' * 32}.save"
    store.backend.create(far, lambda f: f.write(json.dumps({"blobs": [old]}).encode()))
    # A lease of this host whose process is gone (a young one).
    ended = subprocess.Popen([sys.executable, "-c", "pass"])  # (not fork: threads run here)
    ended.wait()
    pid = ended.pid
    mine = f"{LEASES}/{socket.gethostname()}-{pid}-{'1' * 32}.save"
    store.backend.create(mine, lambda f: f.write(json.dumps({"blobs": [dead]}).encode()))
    # While young and of a live host, a lease holds.
    assert store.gc(grace=0).removed_blobs == 1 and old in _blob_names(store)
    _age(store, far, LEASE_TTL + 60)
    assert store.gc(grace=0).removed_blobs == 1
    assert not {old, dead} & _blob_names(store)
    assert store.backend.listdir(LEASES) == []


def test_a_save_writes_its_lease_before_any_blob_and_removes_it_after_the_manifest(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    store.save({"warm": 1}, nb)
    events: list[str] = []
    real_link, real_unlink = os.link, os.unlink

    def at(path: Any, dir_fd: int | None) -> str:
        """The full path an ``*at`` call sees (the local backend opens folders by fd)."""
        if dir_fd is None:
            return os.fspath(path)
        return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fspath(path))

    def link(src: str, dst: str, **kw: Any) -> None:
        real_link(src, dst, **kw)
        events.append("link " + os.path.relpath(at(dst, kw.get("dst_dir_fd")), local_store_url))

    def unlink(path: Any, **kw: Any) -> None:
        real_unlink(path, **kw)
        rel = os.path.relpath(at(path, kw.get("dir_fd")), local_store_url)
        if not rel.startswith("tmp"):
            events.append("unlink " + rel)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "unlink", unlink)
    store.save({"a": np.arange(50_000), "b": [1, 2]}, nb)
    monkeypatch.undo()
    kinds = [e.split()[0] + " " + e.split()[1].split("/")[0] for e in events]
    assert kinds[0] == "link leases"
    manifest = kinds.index("link notebooks")
    assert kinds.index("unlink leases") > manifest
    assert all(k == "link blobs" for k in kinds[1:manifest])


def test_a_save_that_ends_while_a_gc_runs_leaves_its_lease_until_that_gc_is_done(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb)
    # A gc that read the manifests before this save published, and is still deleting.
    running = StoreClock.read(store.backend)
    ck = store.save({"y": np.arange(1000)}, nb)
    [lease] = [n for n in store.backend.listdir(LEASES) if n.endswith(".save")]
    assert json.loads(store.backend.read(f"{LEASES}/{lease}"))["published"] is True
    assert set(ck.body["blobs"]) <= set(
        json.loads(store.backend.read(f"{LEASES}/{lease}"))["blobs"]
    )
    store.gc(grace=0)  # another gc: the older one may still need the lease
    assert lease in store.backend.listdir(LEASES)
    running.done()
    store.gc(grace=0)  # every gc older than the lease is done: it goes
    assert store.backend.listdir(LEASES) == []
    # Without a gc running, a save removes its lease at once.
    store.save({"z": 2}, nb)
    assert store.backend.listdir(LEASES) == []
    assert store.load(nb, ck.id).values["y"].tolist() == list(range(1000))


# ----------------------------------------------- manifests gc cannot read
def _manifest_path(nb: NotebookRef, ident: int) -> str:
    return f"notebooks/{nb.key}/manifests/{ident:08d}.ckpt"


@pytest.mark.parametrize("kind", ["newer format", "unsigned junk", "damaged"])
def test_blobs_of_a_manifest_gc_cannot_read_are_kept(
    store: CheckpointStore, nb: NotebookRef, kind: str
) -> None:
    arr = np.random.default_rng(0).standard_normal(20_000)
    ck = store.save({"arr": arr}, nb)
    store.save({"other": 1}, nb)
    path = _manifest_path(nb, ck.id)
    data = store.backend.read(path)
    magic, header, raw = data.split(b"\n", 2)
    if kind == "newer format":
        body = json.loads(raw)
        body["format"] = 99
        body["stored_as"] = "something this version does not know"
        new_raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        head = json.loads(header)
        head["len"] = len(new_raw)
        head["sig"] = store.key.sign(new_raw)
        data = magic + b"\n" + json.dumps(head).encode() + b"\n" + new_raw
    elif kind == "unsigned junk":
        data = b"\x00\xffnot a manifest at all, but it names " + raw[raw.index(b'"blobs"') :]
    else:
        data = data[: len(data) - 5]
    store.backend.delete(path)
    store.backend.create(path, lambda f: f.write(data))
    before = _blob_names(store)
    assert set(ck.body["blobs"]) <= before
    store.gc(grace=0)
    assert set(ck.body["blobs"]) <= _blob_names(store)
    # Retention counts them as in use too: none of their bytes looks free.
    assert store._measure_usage() >= sum(b["size"] for b in ck.body["blobs"].values())


# -------------------------------------------------------------- retention
def test_retain_by_size_reads_each_manifest_once(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = CheckpointStore(local_store_url)
    for i in range(60):
        writer.save({"a": np.full(2000, float(i))}, nb, keep=UNLIMITED, max_size=UNLIMITED)
    fresh = CheckpointStore(local_store_url)  # nothing cached
    reads: list[str] = []
    real_read = fresh.backend.read

    def read(path: str, **kw: Any) -> bytes:
        if "/manifests/" in path:
            reads.append(path)
        return real_read(path, **kw)

    monkeypatch.setattr(fresh.backend, "read", read)
    # Exactly what the newest 20 use (blobs they share, such as the random state, once).
    last = {
        h: b["size"]
        for i in range(41, 61)
        for h, b in writer.read_checkpoint(nb, i).body["blobs"].items()
    }
    removed = fresh.retain(nb, max_size=sum(last.values()), grace=math.inf)
    assert removed == list(range(1, 41))
    assert fresh._manifest_ids(nb.key) == list(range(41, 61))
    # Each once to size them (60), and the 20 left once more by the gc that follows;
    # it used to be every manifest once per removal (40 x 60 = 2,400).
    assert len(reads) == 60 + 20, len(reads)
    assert set(reads) == {_manifest_path(nb, i) for i in range(1, 61)}


def test_saves_keep_the_newest_twenty_and_pins_by_default(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    for i in range(5):
        store.save({"i": i}, nb)
    store.pin(nb, 2)
    for i in range(5, DEFAULT_KEEP + 10):
        store.save({"i": i}, nb)
    ids = store._manifest_ids(nb.key)
    assert ids == [2, *range(11, DEFAULT_KEEP + 11)]
    assert store.load(nb, 2).values == {"i": 1}


def test_saves_hold_the_store_under_the_default_cap_measuring_rarely(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    each = store.save({"a": np.full(10_000, -1.0)}, nb).total_bytes
    cap = int(each * 5.5)
    monkeypatch.setattr(store_module, "DEFAULT_MAX_SIZE", cap)
    scans: list[int] = []
    real = store._all_manifest_blobs

    def scan(use_cache: bool = False) -> Any:
        scans.append(len(store._manifest_ids(nb.key)))
        return real(use_cache)

    monkeypatch.setattr(store, "_all_manifest_blobs", scan)
    for i in range(30):
        store.save({"a": np.full(10_000, float(i))}, nb)
    ids = store._manifest_ids(nb.key)
    assert 4 <= len(ids) <= 6 and ids[-1] == 31
    assert CheckpointStore(local_store_url)._measure_usage() <= cap
    # The first save measured the store; under the cap, saves only add what they wrote
    # to the estimate and read no manifest: the first scan is when it is crossed.
    assert scans and scans[0] >= 5, scans


# -------------------------------------------------------------- S3 (moto)
s3_missing = importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    if s3_missing and os.environ.get("CI") != "true":
        pytest.skip("needs nbcheckpoint[s3] and moto[server] (make test installs both)")
    from s3_server import shared_server

    server = shared_server()
    with server.activate():
        yield server


def test_s3_gc_skewed_and_without_grace_beside_a_writer_loses_nothing(
    s3: Any, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3.new_store_url()
    _skew_this_machine(monkeypatch)
    counts = _writer_beside_gc(url, nb, saves=15, grace=0)
    assert counts["gc_runs"] >= 2, counts
    print(f"\nS3: skewed gc --grace 0 beside a writer: {counts}")
    # Leases left as published (a gc was running) go at the next gc, and so do the blobs
    # of the deleted checkpoints.
    # S3 times have one-second steps: blobs from the gc marker's own second are spared, so
    # gc again until they go (bounded).
    reader = CheckpointStore(url)
    used = {h for c in reader.list() for h in c.body["blobs"]}
    deadline = time.monotonic() + 30
    reader.gc(grace=0)
    while _s3_blob_names(reader) != used and time.monotonic() < deadline:
        time.sleep(0.25)
        reader.gc(grace=0)
    assert reader.backend.listdir(LEASES) == []
    assert _s3_blob_names(reader) == used


def _s3_blob_names(store: CheckpointStore) -> set[str]:
    return {
        prefix + rest
        for prefix in store.backend.listdir("blobs")
        for rest in store.backend.listdir(f"blobs/{prefix}")
    }


# ------------------------------------- a save waits for the gcs that may not have seen it
def _save_in_thread(
    store: CheckpointStore, value: dict[str, Any], nb: NotebookRef
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def save() -> None:
        try:
            result["ck"] = store.save(value, nb, keep=UNLIMITED)
        except StoreWriteError as e:
            result["error"] = e

    thread = threading.Thread(target=save)
    thread.start()
    return thread, result


def _lease_visible(store: CheckpointStore) -> None:
    deadline = time.monotonic() + 60
    while not any(n.endswith(".save") for n in store.backend.listdir(LEASES)):
        assert time.monotonic() < deadline, "the save never took its lease"
        time.sleep(0.01)


def test_a_save_that_reuses_a_blob_waits_for_a_gc_that_may_not_have_seen_its_lease(
    local_store_url: str, nb: NotebookRef
) -> None:
    # The race S3 showed under load: a gc reads the leases (none yet), a save takes its
    # lease, finds a garbage blob present and reuses it, publishes, checks the blob is still
    # there, and is acknowledged; then the gc, which had judged the blob unused, deletes it.
    store = CheckpointStore(local_store_url)
    other = NotebookRef.from_path("/elsewhere/scratch.ipynb")
    value = {"big": np.arange(70_000.0)}
    garbage = store.save(value, other, keep=UNLIMITED)
    store.delete(other, garbage.id)
    blobs = set(garbage.body["blobs"])
    gc_clock = StoreClock.read(store.backend)  # a gc that has already looked at the leases

    thread, result = _save_in_thread(store, value, nb)
    _lease_visible(store)
    thread.join(timeout=2.0)
    assert thread.is_alive(), f"the save returned while a gc older than it ran: {result}"
    for h in blobs:  # the gc deletes what it judged unused before the lease existed
        store.backend.delete(f"blobs/{h[:2]}/{h[2:]}")
    gc_clock.done()
    thread.join(timeout=60)
    assert not thread.is_alive()
    if "ck" in result:  # put back from bytes in hand: then it must load whole
        loaded = CheckpointStore(local_store_url).load(nb, result["ck"].id).values
        np.testing.assert_array_equal(loaded["big"], value["big"])
    else:
        assert "a gc removed a blob" in str(result["error"])
        assert CheckpointStore(local_store_url).list(nb) == []


def test_a_save_does_not_wait_for_a_dead_gc(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbcheckpoint.store.leases as leases_module

    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb, keep=UNLIMITED)  # the store exists
    # One gc of another host whose marker stopped changing, one of this host whose process
    # is gone: neither is waited for (the first after GC_STALE, here 0.3 s).
    monkeypatch.setattr(leases_module, "GC_STALE", 0.3)
    store.backend.create(f"{LEASES}/elsewhere-4242-{'a' * 32}.gc", lambda f: None)
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
        except ProcessLookupError:
            break
        dead += 1
    store.backend.create(f"{LEASES}/{socket.gethostname()}-{dead}-{'b' * 32}.gc", lambda f: None)
    thread, result = _save_in_thread(store, {"x": 2}, nb)
    thread.join(timeout=60)
    assert not thread.is_alive() and "ck" in result, result


def test_a_running_gc_renews_its_marker(
    local_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbcheckpoint.store.leases as leases_module

    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, NotebookRef.from_path("/a/b.ipynb"), keep=UNLIMITED)
    clock = StoreClock.read(store.backend)
    path = os.path.join(store.backend.root, *clock.path.split("/"))  # type: ignore[attr-defined]
    st = os.stat(path)
    os.utime(path, (st.st_atime - 100, st.st_mtime - 100))
    before = os.stat(path).st_mtime
    clock.renew_if_due()  # not due yet
    assert os.stat(path).st_mtime == before
    monkeypatch.setattr(leases_module, "GC_RENEW", 0.0)
    clock.renew_if_due()
    assert os.stat(path).st_mtime > before
    assert clock.now == pytest.approx(before + 100, abs=1)  # the gc's "now" stays its start
    clock.done()


def test_a_save_does_not_wait_for_the_gc_of_a_killed_unreaped_process(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SIGKILLed kernel stays a zombie until its manager reaps it; its gc marker is dead.
    import subprocess

    import nbcheckpoint.store.leases as leases_module

    monkeypatch.setattr(leases_module, "GC_STALE", 3600.0)  # only the zombie test can end it
    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb, keep=UNLIMITED)
    child = subprocess.Popen(["sleep", "0"])
    try:
        deadline = time.monotonic() + 30
        stat = Path(f"/proc/{child.pid}/stat")
        while b") Z" not in stat.read_bytes():
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        marker = f"{socket.gethostname()}-{child.pid}-{'c' * 32}.gc"
        store.backend.create(f"{LEASES}/{marker}", lambda f: None)
        thread, result = _save_in_thread(store, {"x": 2}, nb)
        thread.join(timeout=30)
        assert not thread.is_alive() and "ck" in result, result
        # And any gc removes the dead marker.
        store.gc(grace=0)
        assert marker not in store.backend.listdir(LEASES)
    finally:
        child.wait()


def test_gc_removes_a_marker_no_gc_renewed_for_long(local_store_url: str, nb: NotebookRef) -> None:
    import nbcheckpoint.store.leases as leases_module

    store = CheckpointStore(local_store_url)
    store.save({"x": 1}, nb, keep=UNLIMITED)
    old = f"elsewhere-4242-{'d' * 32}.gc"
    young = f"elsewhere-4243-{'e' * 32}.gc"
    for name in (old, young):
        store.backend.create(f"{LEASES}/{name}", lambda f: None)
    _age(store, f"{LEASES}/{old}", leases_module.GC_MARKER_TTL + 60)
    store.gc(grace=0)
    left = store.backend.listdir(LEASES)
    assert old not in left and young in left
