"""A save writes its new blobs to temp files while it still pickles, and the commit links them.

On a local store, ``store.save`` (and an inline snapshot) hand each new blob, once it is
hashed and searched for the signing key, to threads that write and fsync it as a temp
file; the commit, under its lease, only links each one in place. These tests check that
the overlap changes nothing a reader can see: no temp file outlives a save that failed,
a temp file gone or swapped before the commit is not trusted, and no byte of the key is
ever written, not even to a temp file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from nbcheckpoint.errors import StoreWriteError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store import leases as leases_module
from nbcheckpoint.store import store as store_module
from nbcheckpoint.store.backends import TMP
from nbcheckpoint.store.blobs import blob_path
from nbcheckpoint.store.store import CHUNK_SIZE


def _state(seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {
        "noise": rng.standard_normal(3 * CHUNK_SIZE // 8 + 5),  # four chunks, raw
        "ramp": np.arange(2 * CHUNK_SIZE // 8, dtype=np.float64),  # shuffled and zstd'd
        "records": [{"i": i, "name": f"r{i}"} for i in range(2000)],
    }


def _temp_files(url: str) -> list[str]:
    folder = Path(url) / TMP
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    return (
        np.array_equal(a["noise"], b["noise"])  # type: ignore[arg-type]
        and np.array_equal(a["ramp"], b["ramp"])  # type: ignore[arg-type]
        and a["records"] == b["records"]
    )


def test_new_blobs_are_written_while_pickling_and_linked_by_the_commit(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    state = _state()
    pending = store.prepare(state, nb, stage=True)
    # Every new blob is on disk, as a temp file, before the commit: none is a blob yet.
    assert set(pending.staged) == set(pending.data)
    assert len(_temp_files(local_store_url)) == len(pending.data) >= 6
    assert not any(store.backend.exists(blob_path(h)) for h in pending.data)
    ck = store.commit(pending)
    assert _temp_files(local_store_url) == []
    assert all(store.backend.exists(blob_path(h)) for h in pending.data)
    # Compressed where it pays, as a save without staging does.
    assert 0 < ck.body["stats"]["bytes_written"] < ck.body["stats"]["bytes_new"]
    assert _same(CheckpointStore(local_store_url).load(nb).values, state)
    # Without staging (what a writer thread's snapshot does), nothing is written early.
    pending = store.prepare(_state(1), nb)
    assert pending.staged == {} and _temp_files(local_store_url) == []
    store.commit(pending)
    # A second save of the same state stages nothing: the store has every blob.
    assert store.prepare(state, nb, stage=True).staged == {}


def test_a_commit_that_fails_before_linking_leaves_no_temp_file(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    first = store.save({"x": 1}, nb)
    pending = store.prepare(_state(), nb, stage=True)
    assert _temp_files(local_store_url)

    def no_lease(*args: object, **kwargs: object) -> None:
        raise StoreWriteError(local_store_url, "No space left on device")

    monkeypatch.setattr(leases_module.Lease, "take", no_lease)
    with pytest.raises(StoreWriteError):
        store.commit(pending)
    assert _temp_files(local_store_url) == []
    assert [ck.id for ck in store.list(nb)] == [first.id]
    assert CheckpointStore(local_store_url).load(nb).values == {"x": 1}


def test_a_prepare_that_fails_after_staging_leaves_no_temp_file(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(local_store_url)
    real = store_module.CheckpointStore._key_carriers
    seen: list[int] = []

    def fails_late(self: CheckpointStore, *args: object, **kwargs: object) -> object:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        # The writes run on their own threads: wait until some have landed (others may
        # still be running, or not started, when the user interrupts).
        deadline = time.monotonic() + 30
        while not _temp_files(local_store_url) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(len(_temp_files(local_store_url)))
        raise KeyboardInterrupt  # the user interrupts the save

    monkeypatch.setattr(store_module.CheckpointStore, "_key_carriers", fails_late)
    with pytest.raises(KeyboardInterrupt):
        store.save(_state(), nb)
    assert seen and seen[0] > 0  # blobs had been staged when it stopped
    assert _temp_files(local_store_url) == []
    assert store.list(nb) == []


@pytest.mark.parametrize("how", ["removed", "swapped"])
def test_a_temp_file_gone_or_swapped_before_the_commit_is_not_trusted(
    local_store_url: str, nb: NotebookRef, how: str
) -> None:
    """A gc that took the writer for a dead one removes its temp files; someone with write
    access to the store may put other bytes under the same name. The commit links only the
    very file it wrote (same device and inode), else writes the blob again from memory."""
    store = CheckpointStore(local_store_url)
    state = _state()
    pending = store.prepare(state, nb, stage=True)
    folder = Path(local_store_url) / TMP
    for name in _temp_files(local_store_url):
        (folder / name).unlink()
        if how == "swapped":
            (folder / name).write_bytes(b"NBCB\x01\x00" + os.urandom(1000))
    ck = store.commit(pending)
    assert ck.body["stats"]["bytes_written"] > 0
    fresh = CheckpointStore(local_store_url)
    assert fresh.verify(nb) == []
    assert _same(fresh.load(nb).values, state)


def test_no_byte_of_the_key_is_staged_not_even_across_a_seam(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk alone holds half of the key, so each passes the search; the seam between
    them does not. Neither chunk may be staged: a temp file is on the disk too."""
    store = CheckpointStore(local_store_url)
    secret = store.key.secret
    arr = np.random.default_rng(1).integers(0, 256, 12 << 20, dtype=np.uint8)
    arr[CHUNK_SIZE - 16 : CHUNK_SIZE + 16] = np.frombuffer(secret, np.uint8)
    staged: list[bytes] = []
    real_add = store_module._Stager.add

    def add(self: object, h: str, data: memoryview, width: int) -> None:
        staged.append(bytes(data))
        real_add(self, h, data, width)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module._Stager, "add", add)
    ck = store.save({"arr": arr, "other": np.arange(CHUNK_SIZE, dtype=np.uint8)}, nb)
    assert set(ck.body["withheld"]) == {"arr"}
    assert staged  # "other" (and the pickles) were staged
    assert not any(secret[:16] in piece or secret[16:] in piece for piece in staged)
    assert _temp_files(local_store_url) == []


def test_a_remote_store_does_not_stage(memory_store_url: str, nb: NotebookRef) -> None:
    store = CheckpointStore(memory_store_url)
    pending = store.prepare(_state(), nb, stage=True)
    assert pending.staged == {}
    store.commit(pending)
    assert _same(CheckpointStore(memory_store_url).load(nb).values, _state())
