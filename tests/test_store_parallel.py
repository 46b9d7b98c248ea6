"""Hashing beside the pickler, and blob folders synced once per save: same results, same safety."""

from __future__ import annotations

import errno
import os
import pickle
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from helpers import assert_same

import nbcheckpoint.store.store as store_module
from nbcheckpoint.errors import StoreWriteError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.backends import FolderSync
from nbcheckpoint.store.serializer import serialize
from nbcheckpoint.store.store import CHUNK_SIZE, _HashQueue, fast_hash


@pytest.fixture
def nb(tmp_path: Path) -> NotebookRef:
    return NotebookRef.from_path(str(tmp_path / "parallel.ipynb"))


def _state(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "big": rng.standard_normal(3 * CHUNK_SIZE // 8 + 1000),  # chunked: 4 pieces
        "mid": rng.standard_normal(20_000),  # one buffer over the fast-hash threshold
        "tiny": np.arange(10),
        "objs": [{"i": i, "name": f"item{i}"} for i in range(5000)],
        "text": "hello",
    }


def _addressing(body: dict[str, Any]) -> tuple[Any, Any]:
    groups = sorted((sorted(g["names"]), g["pickle"], g["buffers"]) for g in body["groups"])
    return groups, sorted(body["blobs"].items())


def test_fast_hash_is_xxh3_128_for_every_kind_of_buffer() -> None:
    data = np.random.default_rng(1).integers(0, 255, 1 << 20, dtype=np.uint8)
    readonly = np.frombuffer(data.tobytes(), dtype=np.uint8)
    floats = np.linspace(0.0, 1.0, 100_000)
    for buf in (
        memoryview(b""),
        memoryview(b"abc"),
        memoryview(data),
        memoryview(readonly),  # a read-only buffer
        memoryview(floats),  # not bytes: format "d"
        memoryview(floats).cast("B")[3:70_001],  # an unaligned slice
    ):
        expected = xxhash.xxh3_128_hexdigest(buf.tobytes())
        assert fast_hash(buf) == expected
    with pytest.raises(BufferError):  # as python-xxhash: the pickler keeps contiguous ones only
        fast_hash(memoryview(floats[::2]))


def test_hashing_on_threads_gives_the_same_addresses_as_on_one(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state()
    threaded = CheckpointStore(local_store_url).prepare(state, nb)
    monkeypatch.setitem(store_module.THREADS, "enabled", False)
    alone = CheckpointStore(local_store_url).prepare(state, nb)
    assert _addressing(threaded.body) == _addressing(alone.body)
    assert threaded.learned == alone.learned
    [big] = [g for g in threaded.body["groups"] if "big" in g["names"]]
    assert 4 in big["chunks"]  # the variables share one group (the walk stops early)


def test_unchanged_buffers_are_recognised_after_a_save(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    state = _state()
    store.save(state, nb)
    again = store.prepare(state, nb)
    # Only data under the fast-hash threshold is offered again (it costs no write either).
    assert again.data and all(v.nbytes < store_module.FAST_HASH_MIN for v in again.data.values())
    state["big"][5] = -1.0  # one chunk changes
    changed = store.prepare(state, nb)
    assert sum(v.nbytes == CHUNK_SIZE for v in changed.data.values()) == 1
    ck = store.commit(changed)
    assert_same(store.load(nb, ck.id).values, state)


def test_an_error_while_hashing_reaches_the_caller(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    real = store._address
    calls = []

    def failing(view: memoryview) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise RuntimeError("hash failed")
        return real(view)

    monkeypatch.setattr(store, "_address", failing)
    with pytest.raises(RuntimeError, match="hash failed"):
        store.prepare(_state(), nb)
    monkeypatch.setattr(store, "_address", real)
    ck = store.save(_state(), nb)  # nothing was left stuck
    assert_same(store.load(nb, ck.id).values, _state())


def test_one_core_hashes_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert store_module._hash_threads() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert store_module._hash_threads() == 2
    monkeypatch.setitem(store_module.THREADS, "enabled", False)
    assert store_module._hash_threads() == 0


def test_hash_queue_keeps_order_and_stops_after_an_error() -> None:
    queue = _HashQueue(lambda view: bytes(view)[::-1], 2)
    for i in range(200):
        queue.add(memoryview(f"item {i}".encode()))
    assert queue.finish() == [f"item {i}".encode()[::-1] for i in range(200)]
    started = []

    def work(view: memoryview) -> None:
        started.append(bytes(view))
        if bytes(view) == b"3":
            raise ValueError("three")

    failing = _HashQueue(work, 0)  # on the caller's thread only: deterministic
    for i in range(10):
        failing.add(memoryview(str(i).encode()))
    with pytest.raises(ValueError, match="three"):
        failing.finish()
    assert started == [b"0", b"1", b"2", b"3"]


def test_buffers_of_a_pickling_attempt_that_was_redone_are_not_used(
    local_store_url: str, nb: NotebookRef
) -> None:
    """The C pickler hands over the array, then fails on the lock; dill pickles the group again."""
    arr = np.random.default_rng(2).standard_normal(2 * CHUNK_SIZE // 8 + 77)
    lock = threading.Lock()
    state = {"arr": arr, "holder": [arr, lock]}
    seen: list[memoryview] = []
    snap = serialize(state, on_buffer=seen.append)
    [group] = snap.groups
    assert group.pickler == "dill"
    assert len(seen) > len(group.buffers)  # the failed attempt's buffers were offered too
    store = CheckpointStore(local_store_url)
    ck = store.save(state, nb)
    [entry] = ck.body["groups"]
    assert entry["chunks"] == [3]
    values = store.load(nb, ck.id).values
    assert np.array_equal(values["arr"], arr)
    assert values["holder"][0] is values["arr"]


def test_buffers_come_before_the_slow_pickling_of_containers() -> None:
    arr = np.arange(100_000.0)
    objs = [{"i": i} for i in range(20_000)]
    order: list[str] = []
    state = {"objs": objs, "arr": arr, "both": [objs, arr]}  # one group
    snap = serialize(state, on_buffer=lambda buf: order.append("buffer"))
    [group] = snap.groups
    assert group.names == ["objs", "arr", "both"]  # the recorded order is unchanged
    assert order == ["buffer"]
    loaded = pickle.loads(group.payload, buffers=group.buffers)
    assert list(loaded) == ["arr", "objs", "both"]  # pickled: arrays first
    assert loaded["both"][0] is loaded["objs"] and loaded["both"][1] is loaded["arr"]


# ------------------------------------------------------------ folder fsyncs
def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _at(path: Any, dir_fd: int | None) -> str:
    """The full path of ``path`` as an ``*at`` call sees it (the store opens folders by fd)."""
    return os.fspath(path) if dir_fd is None else os.path.join(_fd_path(dir_fd), path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_each_blob_folder_is_synced_once_after_its_links_and_before_the_manifest(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    store.save({"warm": 1}, nb)  # the store's own folders exist already
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        path = _fd_path(fd)
        real_fsync(fd)
        with lock:
            events.append(("fsync", path))

    def link(src: str, dst: str, **kw: Any) -> None:
        real_link(src, dst, **kw)
        with lock:
            events.append(("link", _at(dst, kw.get("dst_dir_fd"))))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    state = {"a": np.random.default_rng(3).standard_normal(5 * CHUNK_SIZE // 8), "b": [1, 2]}
    ck = store.save(state, nb)
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(os, "link", real_link)

    blobs_root = os.path.join(local_store_url, "blobs")
    manifest = [i for i, (kind, p) in enumerate(events) if kind == "link" and p.endswith(".ckpt")]
    assert len(manifest) == 1
    blob_links = [
        (i, p) for i, (kind, p) in enumerate(events) if kind == "link" and p.startswith(blobs_root)
    ]
    assert len(blob_links) >= 6
    folder_syncs: dict[str, list[int]] = {}
    for i, (kind, p) in enumerate(events):
        if kind == "fsync" and os.path.dirname(p) == blobs_root:
            folder_syncs.setdefault(p, []).append(i)
    for i, path in blob_links:
        syncs = folder_syncs[os.path.dirname(path)]
        assert len(syncs) == 1, f"{os.path.dirname(path)} synced {len(syncs)} times"
        assert i < syncs[0] < manifest[0]
    assert_same(store.load(nb, ck.id).values, state)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_new_stores_blob_folders_are_made_durable_with_one_fsync_of_their_parent(
    tmp_path: Path, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first save into a new store makes dozens of blobs/xx folders: their entries in
    # blobs/ become durable with one fsync of blobs/ before the manifest, not one per mkdir.
    store = CheckpointStore(str(tmp_path / "new-store"))
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_fsync, real_mkdir, real_link = os.fsync, os.mkdir, os.link

    def record(kind: str, path: str) -> None:
        with lock:
            events.append((kind, path))

    def fsync(fd: int) -> None:
        path = _fd_path(fd)
        real_fsync(fd)
        record("fsync", path)

    def mkdir(path: Any, *args: Any, **kw: Any) -> None:
        real_mkdir(path, *args, **kw)
        record("mkdir", _at(path, kw.get("dir_fd")))

    def link(src: str, dst: str, **kw: Any) -> None:
        real_link(src, dst, **kw)
        record("link", _at(dst, kw.get("dst_dir_fd")))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "link", link)
    rng = np.random.default_rng(5)
    state = {f"a{i}": rng.standard_normal(2000 + i) for i in range(40)}
    ck = store.save(state, nb)
    monkeypatch.undo()

    blobs_root = os.path.join(str(tmp_path / "new-store"), "blobs")
    made = [
        i
        for i, (kind, p) in enumerate(events)
        if kind == "mkdir" and os.path.dirname(p) == blobs_root
    ]
    assert len(made) >= 20  # 40 blobs land in many of the 256 folders
    parent_syncs = [i for i, (kind, p) in enumerate(events) if kind == "fsync" and p == blobs_root]
    manifest = [i for i, (kind, p) in enumerate(events) if kind == "link" and p.endswith(".ckpt")]
    assert len(parent_syncs) == 1, f"blobs/ synced {len(parent_syncs)} times"
    assert max(made) < parent_syncs[0] < manifest[0]
    assert_same(store.load(nb, ck.id).values, state)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_blobs_found_in_the_store_have_their_folders_synced_before_the_manifest(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer may have linked a blob and not yet synced its folder: sync it too."""
    state = {"a": np.random.default_rng(5).standard_normal(3 * CHUNK_SIZE // 8), "n": 1}
    CheckpointStore(local_store_url).save(state, nb)
    other = CheckpointStore(local_store_url)  # another kernel: it wrote none of them
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def link(src: str, dst: str, **kw: Any) -> None:
        real_link(src, dst, **kw)
        events.append(("link", _at(dst, kw.get("dst_dir_fd"))))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    ck = other.save(state, nb)
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(os, "link", real_link)
    assert ck.new_bytes == 0
    # The links: the save's lease (written before any blob), then the manifest.
    [manifest] = [i for i, (kind, p) in enumerate(events) if kind == "link" and p.endswith(".ckpt")]
    synced = {p for kind, p in events[:manifest] if kind == "fsync"}
    for h in ck.body["blobs"]:
        assert os.path.join(local_store_url, "blobs", h[:2]) in synced, h
    # Once synced, the same instance trusts them: the next save syncs no blob folder.
    events.clear()
    monkeypatch.setattr(os, "fsync", fsync)
    other.save(state, nb)
    monkeypatch.setattr(os, "fsync", real_fsync)
    blobs_root = os.path.join(local_store_url, "blobs")
    assert not [p for kind, p in events if kind == "fsync" and p.startswith(blobs_root)]


def test_a_failed_folder_sync_removes_the_new_blobs_and_publishes_nothing(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    first = {"x": np.arange(1000.0)}
    store.save(first, nb)
    before = set(_blob_files(local_store_url))
    real_sync, real_fsync = FolderSync.sync, os.fsync
    fsyncs: list[str] = []

    def fsync(fd: int) -> None:
        fsyncs.append(_fd_path(fd))
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def failing_sync(self: FolderSync) -> None:
        os.fsync = fsync  # only the folder fsyncs fail, not the blob files' own
        try:
            real_sync(self)
        finally:
            os.fsync = real_fsync

    monkeypatch.setattr(FolderSync, "sync", failing_sync)
    state = {"x": np.random.default_rng(4).standard_normal(3 * CHUNK_SIZE // 8)}
    with pytest.raises(StoreWriteError, match=os.strerror(errno.EIO)):
        store.save(state, nb)
    monkeypatch.setattr(FolderSync, "sync", real_sync)
    # Folders are synced on up to 8 threads: those already in flight fail too, but no folder
    # is synced twice, and none is started after the failure.
    assert len(fsyncs) == len(set(fsyncs)), "a failed folder fsync was retried"
    assert 1 <= len(fsyncs) <= 8, "folder fsyncs were started after the failure"
    assert store._manifest_ids(nb.key) == [1]
    assert set(_blob_files(local_store_url)) == before, "blobs of the failed save remain"
    assert store.verify() == []
    ck = store.save(state, nb)  # the same instance: nothing it remembers is lost
    assert ck.id == 2
    assert_same(CheckpointStore(local_store_url).load(nb).values, state)
    assert store.verify() == []


def _blob_files(url: str) -> list[str]:
    root = Path(url, "blobs")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------ compression
@pytest.mark.parametrize(
    ("kind", "codec"),
    [("random", 0), ("smooth", 2), ("smooth bytes", 1), ("half", 0)],
)
def test_a_chunk_is_compressed_when_the_whole_of_it_gains_enough(
    local_store_url: str, nb: NotebookRef, kind: str, codec: int
) -> None:
    """On a local disk zstd must shrink a chunk to a quarter; the probe only spares the hopeless.

    Numbers are byte-shuffled first (codec 2); bytes, which have nothing to regroup, are not.
    """
    rng = np.random.default_rng(6)
    n = CHUNK_SIZE // 8
    if kind == "random":
        arr = rng.standard_normal(n)
    elif kind == "smooth":
        arr = np.repeat(np.arange(n // 512, dtype=np.float64), 512)
    elif kind == "smooth bytes":
        arr = np.repeat(np.arange(8 * n // 512, dtype=np.uint8), 512)
    else:  # the probe's start looks compressible; half of the chunk is not
        arr = np.concatenate([np.zeros(n // 2), rng.standard_normal(n - n // 2)])
    store = CheckpointStore(local_store_url)
    ck = store.save({"arr": arr}, nb)
    [group] = ck.body["groups"]
    [h] = group["buffers"]
    blob = store.backend.read(f"blobs/{h[:2]}/{h[2:]}")
    assert blob[5] == codec
    if codec:
        assert len(blob) < CHUNK_SIZE // 4
    assert np.array_equal(CheckpointStore(local_store_url).load(nb).values["arr"], arr)


# ------------------------------------------------- whole buffers, GIL sharing
@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the buffers the store fast-hashes from now on, in order."""
    sizes: list[int] = []
    real = store_module.fast_hash

    def counting(view: memoryview) -> str:
        sizes.append(view.nbytes)
        return real(view)

    monkeypatch.setattr(store_module, "fast_hash", counting)
    return sizes


def test_an_unchanged_chunked_buffer_is_recognised_by_one_hash_of_the_whole(
    local_store_url: str, nb: NotebookRef, hashed: list[int]
) -> None:
    store = CheckpointStore(local_store_url)
    big = np.random.default_rng(7).standard_normal(4 * CHUNK_SIZE // 8)  # 4 chunks
    state = {"big": big, "n": 1}
    first = store.save(state, nb)
    hashed.clear()
    again = store.prepare(state, nb)
    assert hashed == [big.nbytes]  # the whole, once; no chunk on its own
    assert not [v for v in again.data.values() if v.nbytes >= CHUNK_SIZE]
    assert again.body["groups"][0]["buffers"] == first.body["groups"][0]["buffers"]

    big[CHUNK_SIZE // 8 + 3] = 42.0  # the second chunk changes
    hashed.clear()
    changed = store.prepare(state, nb)
    assert hashed == [big.nbytes] + [CHUNK_SIZE] * 4  # the whole, then each chunk
    assert [v.nbytes for v in changed.data.values() if v.nbytes >= CHUNK_SIZE] == [CHUNK_SIZE]
    store.commit(changed)
    hashed.clear()
    store.prepare(state, nb)
    assert hashed == [big.nbytes]  # the new whole was learned with the commit
    assert_same(CheckpointStore(local_store_url).load(nb).values, state)


def test_on_one_thread_chunks_are_hashed_once_each(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch, hashed: list[int]
) -> None:
    """A forked child saves on one thread: no hash of the whole it could never use again."""
    store = CheckpointStore(local_store_url)
    big = np.random.default_rng(7).standard_normal(4 * CHUNK_SIZE // 8)
    store.save({"big": big}, nb)
    monkeypatch.setitem(store_module.THREADS, "enabled", False)
    hashed.clear()
    pending = store.prepare({"big": big}, nb)
    assert hashed == [CHUNK_SIZE] * 4
    assert not [v for v in pending.data.values() if v.nbytes >= CHUNK_SIZE]


def test_a_large_pickle_is_stored_whole(local_store_url: str, nb: NotebookRef) -> None:
    """Only out-of-band buffers are chunked; a pickle over the chunking size is one blob."""
    words = [f"{'x' * 90}{i}" for i in range(120_000)]  # about 11 MB of pickle, in band
    store = CheckpointStore(local_store_url)
    for _ in range(2):  # new, then recognised
        ck = store.save({"words": words, "arr": np.arange(10.0)}, nb)
        [group] = [g for g in ck.body["groups"] if g["names"] == ["words"]]
        assert ck.body["blobs"][group["pickle"]]["size"] > store_module.CHUNK_MIN
    assert ck.new_bytes < 10_000
    assert CheckpointStore(local_store_url).load(nb).values["words"] == words


def test_a_chunk_the_store_no_longer_knows_is_written_again(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    state = {"big": np.random.default_rng(8).standard_normal(3 * CHUNK_SIZE // 8)}
    ck = store.save(state, nb)
    victim = ck.body["groups"][0]["buffers"][1]
    store._known_blobs.discard(victim)  # as gc does when it removes a blob
    pending = store.prepare(state, nb)
    assert [h for h, v in pending.data.items() if v.nbytes >= CHUNK_SIZE] == [victim]


def test_the_pickler_shares_the_gil_only_when_asked() -> None:
    objs = [{"i": i, "name": f"item{i}"} for i in range(30_000)]  # about 1 MB of pickle
    asked: list[bool] = []

    def share() -> bool:
        asked.append(True)
        return len(asked) % 2 == 0

    plain = serialize({"objs": objs}, with_rng=False)
    shared = serialize({"objs": objs}, with_rng=False, share_gil=share)
    assert len(asked) >= 8  # once per 64 KiB frame written
    assert shared.groups[0].payload == plain.groups[0].payload
    assert pickle.loads(shared.groups[0].payload)["objs"] == objs


def test_the_hash_queue_says_when_it_is_working() -> None:
    release = threading.Event()

    def work(view: memoryview) -> int:
        release.wait(10)
        return view.nbytes

    queue = _HashQueue(work, 1)
    assert not queue.working()
    queue.add(memoryview(b"abc"))
    assert queue.working()
    release.set()
    assert queue.finish() == [3]
    assert not queue.working()


# ------------------------------------------------ the search for the signing key
def test_each_new_blob_is_searched_for_the_key_once_as_it_is_hashed(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hashing threads search each new blob right after hashing it; the check before
    writing uses their results instead of reading every blob again."""
    from nbcheckpoint.store.signing import SigningKey

    searches: list[int] = []
    hashing: list[bool] = []  # whether each search ran where the blob was just hashed
    real = SigningKey.found_in

    def counting(self: SigningKey, data: Any) -> bool:
        if isinstance(data, memoryview):  # a blob (seams and the manifest are bytes)
            searches.append(data.nbytes)
            stack = [frame.name for frame in traceback.extract_stack()]
            hashing.append("_address_buffer" in stack)
        return real(self, data)

    monkeypatch.setattr(SigningKey, "found_in", counting)
    store = CheckpointStore(local_store_url)
    state = {
        "arr": np.random.default_rng(0).random(3 * CHUNK_SIZE // 8 + 5),  # 4 chunks
        "mid": np.random.default_rng(1).random(100_000),
        "words": ["a"] * 5000,
    }
    ck = store.save(state, nb)
    assert sorted(searches) == sorted(ck.body["blobs"][h]["size"] for h in ck.body["blobs"])
    assert searches.count(CHUNK_SIZE) == 3 and all(hashing)
    searches.clear()
    store.save(state, nb)  # nothing new: only small pickles (not fast-hashed) are searched
    assert searches and all(size < store_module.FAST_HASH_MIN for size in searches)
    # A key inside a chunk is still found, and its variable withheld.
    leak = np.random.default_rng(2).random(3 * CHUNK_SIZE // 8)
    raw = store.key.patterns[0]
    leak.view(np.uint8)[CHUNK_SIZE + 100 : CHUNK_SIZE + 100 + len(raw)] = np.frombuffer(
        raw, np.uint8
    )
    ck = store.save({"leak": leak, "mid": state["mid"]}, nb)
    assert "leak" in ck.body["withheld"] and "mid" in ck.body["variables"]
