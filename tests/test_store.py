"""Store behaviour: file modes, signatures and forgeries, retention, gc, dedup, fallback, threads."""

from __future__ import annotations

import copy
import datetime
import json
import os
import pickle
import shlex
import stat
import threading
from pathlib import Path
from typing import Any

import dill
import numpy as np
import pytest
from helpers import assert_same, blob_paths, manifest_paths, store_files

from nbcheckpoint.errors import (
    CheckpointError,
    CheckpointNotFound,
    NoUsableCheckpoint,
    UntrustedCheckpoint,
    VerificationError,
)
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey, load_key
from nbcheckpoint.store.store import UNLIMITED, digest

MAGIC = b"NBCKPT1\n"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _manifest(body: dict[str, Any], key: SigningKey | None, *, key_id: str | None = None) -> bytes:
    """A manifest written by hand: signed with ``key``, or unsigned when ``key`` is None."""
    raw = _canonical(body)
    header: dict[str, Any] = {"alg": "hmac-sha256", "len": len(raw)}
    if key is not None:
        header["key_id"] = key_id or key.key_id
        header["sig"] = key.sign(raw)
    return MAGIC + _canonical(header) + b"\n" + raw


def _manifest_path(nb: NotebookRef, ident: int) -> str:
    return f"notebooks/{nb.key}/manifests/{ident:08d}.ckpt"


def _put_blob(store: CheckpointStore, data: bytes) -> str:
    h = digest(data)
    store.backend.create(f"blobs/{h[:2]}/{h[2:]}", lambda f: f.write(b"NBCB\x01\x00" + data))
    return h


def _set_age(store: CheckpointStore, path: str, seconds: float) -> None:
    """Make a store file look ``seconds`` old, on either backend."""
    then = datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    if store.backend.local:
        os.utime(
            os.path.join(store.backend.root, *path.split("/")), (then.timestamp(), then.timestamp())
        )
    else:
        store.backend.fs.store[store.backend._abs(path)].created = then


def _states(n: int, size: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"step": i, "w": rng.standard_normal(size), "note": f"state {i}"} for i in range(n)]


def _assert_loads(
    store: CheckpointStore, nb: NotebookRef, ident: int, want: dict[str, Any]
) -> None:
    restored = store.load(nb, ident)
    assert restored.failed == {}
    assert_same(restored.values, want, f"#{ident}")


# ------------------------------------------------------------------- modes
def test_store_files_and_folders_are_private(local_store_url: str, nb: NotebookRef) -> None:
    old = os.umask(0)  # the most permissive umask: modes must come from the code, not the umask
    try:
        store = CheckpointStore(local_store_url)
        store.save({"x": np.arange(10_000), "y": "text"}, nb)
        ck = store.save({"x": np.arange(10), "y": "other"}, nb)
        store.pin(nb, ck.id)
        store.set_status(nb, ck.id, "interrupted")
    finally:
        os.umask(old)
    root = Path(local_store_url)
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(folders) > 5 and len(files) > 5
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert (root / ".gitignore").read_text().splitlines()[-1] == "*"
    assert store.read_checkpoint(nb, ck.id).status == "interrupted"


def test_key_file_is_private(_isolated_signing_key: Path, tmp_path: Path) -> None:
    # The key's folder exists already, world-readable: creating the key must close it.
    _isolated_signing_key.parent.mkdir(mode=0o755)
    old = os.umask(0)
    try:
        key = load_key()
    finally:
        os.umask(old)
    assert key.source == str(_isolated_signing_key)
    assert stat.S_IMODE(_isolated_signing_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(_isolated_signing_key.parent.stat().st_mode) == 0o700
    assert load_key().secret == key.secret  # read back, not made again
    assert len(key.secret) >= 32


def test_gitignore_in_store_root(store: CheckpointStore, nb: NotebookRef) -> None:
    store.save({"x": 1}, nb)
    assert b"*" in store.backend.read(".gitignore").splitlines()


# ---------------------------------------------------------------- security
class _Evil:
    """Unpickling this runs a shell command: the payload a forged checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


@pytest.fixture
def evil_payload(marker: Path, tmp_path: Path) -> bytes:
    payload = pickle.dumps({"x": _Evil(marker)}, protocol=5)
    # Prove the payload is live: unpickled, it does create its marker.
    probe = tmp_path / "PROBE"
    dill.loads(pickle.dumps({"x": _Evil(probe)}, protocol=5))
    assert probe.exists()
    return payload


def _forged_body(good: dict[str, Any], ident: int, pickle_hash: str, size: int) -> dict[str, Any]:
    body = copy.deepcopy(good)
    body.update(
        id=ident,
        parent=ident - 1,
        groups=[{"names": ["x"], "pickle": pickle_hash, "buffers": [], "size": size}],
        variables={"x": {"type": "int", "size": size, "group": 0, "shared_with": []}},
        blobs={pickle_hash: {"size": size}},
        rng=None,
    )
    return body


@pytest.mark.parametrize(
    "forgery", ["unsigned", "no_signature_fields", "other_key", "other_key_our_key_id"]
)
def test_forged_manifest_is_refused(
    store: CheckpointStore, nb: NotebookRef, evil_payload: bytes, marker: Path, forgery: str
) -> None:
    good = store.save({"x": 1}, nb)
    h = _put_blob(store, evil_payload)
    body = _forged_body(good.body, 2, h, len(evil_payload))
    other = SigningKey(os.urandom(32), "attacker")
    if forgery == "unsigned":
        raw = _canonical(body)
        header = {"alg": "hmac-sha256", "key_id": store.key.key_id, "len": len(raw), "sig": ""}
        data = MAGIC + _canonical(header) + b"\n" + raw
    elif forgery == "no_signature_fields":
        data = _manifest(body, None)
    elif forgery == "other_key":
        data = _manifest(body, other)
    else:
        data = _manifest(body, other, key_id=store.key.key_id)
    store.backend.create(_manifest_path(nb, 2), lambda f: f.write(data))

    fresh = CheckpointStore(store.url)  # a new kernel: nothing cached
    expected = UntrustedCheckpoint if forgery != "other_key_our_key_id" else VerificationError
    with pytest.raises(expected) as info:
        fresh.load(nb, 2)
    assert info.value.ident == 2
    restored = fresh.load(nb)  # the newest trustworthy checkpoint instead
    assert restored.checkpoint.id == 1 and restored.values == {"x": 1}
    assert set(restored.passed_over) == {2}
    problems = fresh.verify()
    assert [(p.ident, p.what) for p in problems] == [(2, info.value.reason)]
    assert not marker.exists()


def test_manifest_with_only_forged_checkpoints_raises(
    store: CheckpointStore, nb: NotebookRef, evil_payload: bytes, marker: Path
) -> None:
    other = CheckpointStore(store.url, key=SigningKey(os.urandom(32), "attacker"))
    h = _put_blob(store, evil_payload)
    template = other.save({"y": 2}, nb).body
    data = _manifest(_forged_body(template, 2, h, len(evil_payload)), other.key)
    store.backend.create(_manifest_path(nb, 2), lambda f: f.write(data))
    with pytest.raises(NoUsableCheckpoint) as info:
        CheckpointStore(store.url).load(nb)
    assert set(info.value.skipped) == {1, 2}
    assert "different key" in info.value.skipped[2]
    assert not marker.exists()


@pytest.mark.parametrize("signature", ["kept", "removed"])
def test_blob_swapped_for_evil_pickle_is_refused(
    store: CheckpointStore, nb: NotebookRef, evil_payload: bytes, marker: Path, signature: str
) -> None:
    store.save({"x": 0}, nb)
    good = store.save({"x": np.arange(5)}, nb)
    raw = store.backend.read(_manifest_path(nb, 2))
    header = json.loads(raw[len(MAGIC) :].split(b"\n", 1)[0])
    h = _put_blob(store, evil_payload)
    body = copy.deepcopy(good.body)
    old = body["groups"][0]["pickle"]
    body["groups"][0]["pickle"] = h
    body["groups"][0]["buffers"] = []
    body["blobs"][h] = {"size": len(evil_payload)}
    del body["blobs"][old]
    raw_body = _canonical(body)
    if signature == "kept":
        header["len"] = len(raw_body)
        data = MAGIC + _canonical(header) + b"\n" + raw_body
    else:
        data = _manifest(body, None)
    store.backend.replace(_manifest_path(nb, 2), data)

    fresh = CheckpointStore(store.url)
    with pytest.raises(VerificationError) as info:
        fresh.load(nb, 2)
    if signature == "removed":
        assert isinstance(info.value, UntrustedCheckpoint)
    else:
        assert "signature does not match" in info.value.reason
    restored = fresh.load(nb)
    assert restored.checkpoint.id == 1 and restored.values == {"x": 0}
    assert 2 in restored.passed_over
    assert not marker.exists()


def test_blob_content_replaced_is_refused(
    store: CheckpointStore, nb: NotebookRef, evil_payload: bytes, marker: Path
) -> None:
    good = store.save({"x": list(range(200))}, nb)
    h = good.body["groups"][0]["pickle"]
    size = good.body["blobs"][h]["size"]
    assert size > len(evil_payload)
    # Same length as the real pickle (unpickling stops at STOP and ignores the padding).
    swapped = evil_payload + b"\0" * (size - len(evil_payload))
    path = f"blobs/{h[:2]}/{h[2:]}"
    store.backend.delete(path)
    store.backend.create(path, lambda f: f.write(b"NBCB\x01\x00" + swapped))
    with pytest.raises(VerificationError, match="does not match its hash"):
        CheckpointStore(store.url).load(nb, 1)
    assert not marker.exists()
    assert len(store.verify()) == 1


def test_manifest_copied_to_another_id_or_notebook_is_refused(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    for i in range(3):
        store.save({"x": i}, nb)
    store.backend.replace(_manifest_path(nb, 3), store.backend.read(_manifest_path(nb, 1)))
    other_nb = NotebookRef.from_path("/elsewhere/other.ipynb")
    store.save({"x": "other"}, other_nb)
    store.backend.create(
        _manifest_path(other_nb, 2), lambda f: f.write(store.backend.read(_manifest_path(nb, 2)))
    )

    fresh = CheckpointStore(store.url)
    with pytest.raises(VerificationError, match="another checkpoint id or notebook"):
        fresh.load(nb, 3)
    restored = fresh.load(nb)
    assert restored.checkpoint.id == 2 and restored.values == {"x": 1}
    assert set(restored.passed_over) == {3}
    with pytest.raises(VerificationError, match="another checkpoint id or notebook"):
        fresh.load(other_nb, 2)
    assert fresh.load(other_nb).values == {"x": "other"}
    assert sorted((p.notebook, p.ident) for p in fresh.verify()) == sorted(
        [(nb.key, 3), (other_nb.key, 2)]
    )


def test_forged_status_is_ignored(store: CheckpointStore, nb: NotebookRef) -> None:
    ck = store.save({"x": 1}, nb, status="running")
    ck2 = store.save({"x": 2}, nb, status="running")
    other = SigningKey(os.urandom(32), "attacker")
    status = f"notebooks/{nb.key}/status"
    store.backend.replace(f"{status}/{ck.id}", b"complete\n" + b"0" * 64)
    record = f"{nb.key}/{ck2.id}/complete".encode()
    store.backend.replace(f"{status}/{ck2.id}", b"complete\n" + other.sign(record).encode())
    fresh = CheckpointStore(store.url)
    assert fresh.read_checkpoint(nb, ck.id).status == "running"
    assert fresh.read_checkpoint(nb, ck2.id).status == "running"
    # A status signed for another checkpoint does not apply here either.
    store.set_status(nb, ck.id, "complete")
    store.backend.replace(f"{status}/{ck2.id}", store.backend.read(f"{status}/{ck.id}"))
    assert fresh.read_checkpoint(nb, ck.id).status == "complete"
    assert fresh.read_checkpoint(nb, ck2.id).status == "running"


def test_trust_loads_a_checkpoint_signed_elsewhere(store: CheckpointStore, nb: NotebookRef) -> None:
    elsewhere = CheckpointStore(store.url, key=SigningKey(os.urandom(32), "colleague"))
    elsewhere.save({"x": np.arange(3)}, nb)
    with pytest.raises(UntrustedCheckpoint, match="different key"):
        store.load(nb, 1)
    restored = store.load(nb, 1, trust=True)
    assert not restored.checkpoint.verified
    assert_same(restored.values["x"], np.arange(3))


# --------------------------------------------------------------- retention
def test_keep_n_keeps_newest_plus_pinned(store: CheckpointStore, nb: NotebookRef) -> None:
    states = _states(7)
    for state in states[:6]:
        store.save(state, nb)
    store.pin(nb, 2)
    store.save(states[6], nb, keep=3)
    remaining = store._manifest_ids(nb.key)
    assert remaining == [2, 5, 6, 7]
    for ident in remaining:
        _assert_loads(store, nb, ident, states[ident - 1])
    assert store.read_checkpoint(nb, 2).pinned
    store.retain(nb, keep=0)  # the newest always stays
    assert store._manifest_ids(nb.key) == [2, 7]
    store.gc(grace=0)
    assert store.verify() == []
    _assert_loads(store, nb, 2, states[1])


def test_max_size_removes_oldest_until_under(store: CheckpointStore, nb: NotebookRef) -> None:
    states = _states(5, size=12_500)  # 100 kB of float64 each, all different
    for state in states:
        store.save(state, nb)
    store.pin(nb, 1)
    each = store.read_checkpoint(nb, 2).total_bytes
    budget = int(each * 3.5)
    removed = store.retain(nb, max_size=budget)
    assert removed == [2, 3]  # 1 is pinned and counts; with 4 and 5 it fits
    store.gc(grace=0)
    assert store._manifest_ids(nb.key) == [1, 4, 5]
    for ident in (1, 4, 5):
        _assert_loads(store, nb, ident, states[ident - 1])
    store.retain(nb, max_size=1)
    assert store._manifest_ids(nb.key) == [1, 5]
    assert store.verify() == []


def test_gc_spares_young_unreferenced_blobs(store: CheckpointStore, nb: NotebookRef) -> None:
    states = _states(2, size=5000)
    store.save(states[0], nb)
    store.save(states[1], nb)
    only_first = {h for g in store.read_checkpoint(nb, 1).body["groups"] for h in g["buffers"]}
    store.delete(nb, 1)
    # A concurrent writer's blob: written, its manifest not yet.
    pending = _put_blob(store, b"a blob whose manifest is still being written")
    before = blob_paths(store.backend)

    report = store.gc(grace=60)
    assert report.removed_blobs == 0 and report.kept_recent >= 2
    assert blob_paths(store.backend) == before

    for h in [*only_first, pending]:
        _set_age(store, f"blobs/{h[:2]}/{h[2:]}", 120)
    report = store.gc(grace=60)
    assert report.removed_blobs == len(only_first) + 1
    remaining = {p.replace("/", "").removeprefix("blobs") for p in blob_paths(store.backend)}
    assert pending not in remaining and not (only_first & remaining)
    assert store.verify() == []
    _assert_loads(store, nb, 2, states[1])
    # Unreferenced young blobs do go with grace=0.
    store.delete(nb, 2)
    store.save({"z": 0}, nb)
    store.gc(grace=0)
    assert store.verify() == []
    assert store.load(nb).values == {"z": 0}


def test_saving_the_same_state_twice_writes_nothing_new(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    state = {"w": np.random.default_rng(3).standard_normal(100_000), "meta": {"a": 1}}
    first = store.save(state, nb)
    assert first.new_bytes > 800_000
    blobs, usage = blob_paths(store.backend), store.disk_usage()
    second = CheckpointStore(store.url).save(state, nb)  # a new kernel knows no blob in advance
    assert second.new_bytes == 0
    assert blob_paths(store.backend) == blobs and store.disk_usage() == usage
    assert second.body["blobs"] == first.body["blobs"]


def test_identical_arrays_in_two_notebooks_are_stored_once(
    store: CheckpointStore, tmp_path: Path
) -> None:
    weights = np.random.default_rng(4).standard_normal(250_000)
    nb1 = NotebookRef.from_path(str(tmp_path / "one.ipynb"))
    nb2 = NotebookRef.from_path(str(tmp_path / "two.ipynb"))
    first = store.save({"w": weights}, nb1)
    usage = store.disk_usage()
    second = store.save({"weights": weights.copy(), "epoch": 3}, nb2)
    assert second.new_bytes < 10_000
    assert store.disk_usage() - usage < 10_000
    assert first.body["groups"][0]["buffers"] == [digest(weights.tobytes())]
    assert digest(weights.tobytes()) in {h for g in second.body["groups"] for h in g["buffers"]}
    assert_same(store.load(nb2).values["weights"], weights)


def test_small_buffers_travel_in_the_pickle_and_come_back_as_they_were(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    """A figure-like state of many tiny arrays is one pickle, not a blob per array; each
    array comes back equal, writable or read-only as it was."""
    tiny = [np.arange(i % 7 + 1, dtype=np.float64) * i for i in range(300)]
    frozen = np.arange(50, dtype=np.int32)
    frozen.flags.writeable = False
    big = np.random.default_rng(5).standard_normal(2_000)  # 16 kB: a blob of its own
    saved = store.save({"tiny": tiny, "frozen": frozen, "big": big}, nb)
    buffers = [h for g in saved.body["groups"] for h in g["buffers"]]
    assert buffers == [digest(big.tobytes())]
    values = store.load(nb).values
    for got, want in zip(values["tiny"], tiny, strict=True):
        assert_same(got, want)
        assert got.flags.writeable
    assert_same(values["frozen"], frozen) and not values["frozen"].flags.writeable
    assert_same(values["big"], big) and values["big"].flags.writeable


def test_a_blob_named_by_several_buffers_is_read_and_checked_once(
    store: CheckpointStore, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same content in several buffers (copies, runs of zero chunks) is read once and
    copied; damage to it is still found, whichever buffer names it."""
    block = np.random.default_rng(6).standard_normal(4_000)
    state = {"a": block, "b": block.copy(), "c": [block.copy(), block.copy()]}
    store.save(state, nb)
    reads: list[str] = []
    read_blob = CheckpointStore._read_blob

    def counted(self: CheckpointStore, h: str, *args: Any) -> Any:
        reads.append(h)
        return read_blob(self, h, *args)

    monkeypatch.setattr(CheckpointStore, "_read_blob", counted)
    values = store.load(nb).values
    assert reads.count(digest(block.tobytes())) == 1 and len(reads) == len(set(reads))
    restored = [values["a"], values["b"], *values["c"]]
    for array in restored:
        assert_same(array, block)
    restored[1][0] = 99.0  # each buffer is its own copy
    assert all(a[0] == block[0] for i, a in enumerate(restored) if i != 1)

    path = f"blobs/{digest(block.tobytes())[:2]}/{digest(block.tobytes())[2:]}"
    data = bytearray(store.backend.read(path))
    data[-1] ^= 1
    store.backend.replace(path, bytes(data))
    with pytest.raises(NoUsableCheckpoint, match=r"#1.*does not match"):
        store.load(nb)


# ---------------------------------------------------------------- fallback
@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "blob_missing"])
def test_latest_falls_back_past_a_damaged_checkpoint(
    store: CheckpointStore, nb: NotebookRef, damage: str
) -> None:
    states = _states(3)
    for state in states:
        store.save(state, nb)
    path = _manifest_path(nb, 3)
    data = bytearray(store.backend.read(path))
    if damage == "flip":
        data[-20] ^= 0x04
        store.backend.replace(path, bytes(data))
        reason = "signature does not match"
    elif damage == "truncate":
        store.backend.replace(path, bytes(data[: len(data) // 2]))
        reason = "truncated"
    elif damage == "garbage":
        store.backend.replace(path, os.urandom(300))
        reason = "not an nbcheckpoint manifest"
    else:
        [h] = [h for g in store.read_checkpoint(nb, 3).body["groups"] for h in g["buffers"]]
        store.backend.delete(f"blobs/{h[:2]}/{h[2:]}")
        reason = "missing"
    for loader in (store, CheckpointStore(store.url)):  # the live instance and a new kernel
        restored = loader.load(nb)
        assert restored.checkpoint.id == 2
        assert_same(restored.values, states[1])
        assert list(restored.passed_over) == [3]
        assert reason in restored.passed_over[3]
        problems = loader.verify()
        assert [p.ident for p in problems] == [3] and reason in problems[0].what
        with pytest.raises(VerificationError):
            loader.load(nb, 3)
    listed = {ck.id: ck for ck in CheckpointStore(store.url).list(nb)}
    assert listed[3].problem is not None or damage == "blob_missing"


def test_a_deleted_id_saved_again_is_read_from_disk(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    """A long-lived instance must not restore a checkpoint that was replaced under its id."""
    store.save({"x": 1}, nb)
    store.save({"x": "old"}, nb)
    # Another notebook keeps the old blobs alive, so a stale read would succeed, silently.
    store.save({"x": "old"}, NotebookRef.from_path("/elsewhere/keeper.ipynb"))
    assert store.load(nb, 2).values == {"x": "old"}  # now in this instance's memory
    other = CheckpointStore(store.url)  # another kernel, or the command line
    path = _manifest_path(nb, 2)
    old_size = store.backend.size(path)
    for _attempt in range(500):  # until the new manifest has the old one's length
        other.delete(nb, 2)
        other.gc(grace=0)  # so the new save writes its blob again, as the old one did
        assert other.save({"x": "new"}, nb).id == 2
        if store.backend.size(path) == old_size:
            break
    else:
        pytest.fail("could not make a same-size manifest")
    assert store.load(nb, 2).values == {"x": "new"}
    assert store.load(nb).values == {"x": "new"}
    store.gc(grace=0)
    assert other.load(nb, 2).values == {"x": "new"}


def test_missing_ids_and_empty_notebooks(store: CheckpointStore, nb: NotebookRef) -> None:
    with pytest.raises(NoUsableCheckpoint, match="no checkpoints"):
        store.load(nb)
    store.save({"x": 1}, nb)
    with pytest.raises(CheckpointNotFound, match="#1"):
        store.load(nb, 7)
    with pytest.raises(CheckpointError, match="no variable nope"):
        store.load(nb, 1, names=["nope"])


# ------------------------------------------------------------------ threads
@pytest.mark.parametrize("instances", ["shared", "separate"])
def test_two_threads_save_into_one_memory_store(
    memory_store_url: str, nb: NotebookRef, instances: str
) -> None:
    url = memory_store_url
    shared = CheckpointStore(url)
    acked: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(tag: int) -> None:
        store = shared if instances == "shared" else CheckpointStore(url)
        rng = np.random.default_rng(tag)
        start.wait()
        try:
            for seq in range(100):
                state = {"tag": tag, "seq": seq, "data": rng.standard_normal(200)}
                # All 200 stay (by default only the newest DEFAULT_KEEP would).
                ck = store.save(state, nb, keep=UNLIMITED)
                with lock:
                    assert ck.id not in acked
                    acked[ck.id] = (tag, seq)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(acked) == 200
    assert shared._manifest_ids(nb.key) == sorted(acked)
    reader = CheckpointStore(url)
    for ident, (tag, seq) in acked.items():
        values = reader.load(nb, ident).values
        assert (values["tag"], values["seq"]) == (tag, seq)
    assert reader.verify() == []


def test_store_files_are_listed_for_both_backends(store: CheckpointStore, nb: NotebookRef) -> None:
    # The walking helper the other tests rely on must actually see files on both backends.
    store.save({"x": np.arange(10)}, nb)
    files = list(store_files(store.backend))
    assert ".gitignore" in files
    assert len(manifest_paths(store.backend)) == 1
    assert len(blob_paths(store.backend)) >= 2


class _Point:
    """Pickled by value in these tests (as a notebook's class is): see the next test."""

    def __init__(self, x: int) -> None:
        self.x = x


def test_an_incremental_save_keeps_links_to_groups_it_does_not_pickle_again(
    store: CheckpointStore, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save with ``base`` and ``changed`` keeps the unchanged groups as they are. When a
    changed variable now holds an object of an unchanged one, both are pickled together."""
    from nbcheckpoint.store import serializer

    monkeypatch.setattr(_Point, "__module__", "__main__")  # by value, like a notebook's class
    records = [{"id": i} for i in range(5)]
    ns: dict[str, Any] = {"records": records, "x": [0], "pts": [_Point(1)], "other": {"n": 1}}
    ck = store.save(ns, nb)
    walked: list[int] = []
    real_add = serializer._Grouping.add

    def add(self: Any, values: list[object]) -> None:
        walked.append(len(values))
        real_add(self, values)

    monkeypatch.setattr(serializer._Grouping, "add", add)

    def groups(ck: Any) -> list[list[str]]:
        return sorted(sorted(g["names"]) for g in ck.body["groups"])

    # A change that shares nothing: the other groups are kept, and not even walked.
    ns["x"] = [1]
    ck = store.save(ns, nb, base=ck, changed=["x"])
    assert walked == [1] and groups(ck) == [["other"], ["pts"], ["records"], ["x"]]
    cases = [
        ("x", lambda: ns["x"].append(records[0])),  # an object inside `records`
        ("alias", lambda: ns.update(alias=records[1])),  # a variable that is one of them
        ("more", lambda: ns.update(more=[_Point(2)])),  # the same class, pickled by value
        # An item of an array of objects (the garbage collector does not list those).
        ("column", lambda: ns.update(column=np.array([records[2], None], dtype=object))),
    ]
    for name, change in cases:
        change()
        ck = store.save(ns, nb, base=ck, changed=[name])
    assert groups(ck) == [["alias", "column", "records", "x"], ["more", "pts"], ["other"]]
    back = store.load(nb).values
    assert back["x"][1] is back["records"][0] and back["alias"] is back["records"][1]
    assert back["column"][0] is back["records"][2]
    assert type(back["more"][0]) is type(back["pts"][0])
    assert back["other"] == {"n": 1}
