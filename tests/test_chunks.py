"""Large buffers are stored in chunks: a small edit writes little, and every chunk is verified."""

from __future__ import annotations

import numpy as np
import pytest

from nbcheckpoint.errors import VerificationError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.store import CHUNK_SIZE


@pytest.fixture
def nb(tmp_path):
    return NotebookRef.from_path(str(tmp_path / "chunks.ipynb"))


def test_an_edit_inside_a_large_array_writes_only_its_chunks(store_url, nb):
    store = CheckpointStore(store_url)
    big = np.random.default_rng(0).random(6_000_000)  # 48 MB: 12 chunks
    first = store.save({"big": big, "view_of_nothing": 1}, nb)
    [group] = [g for g in first.body["groups"] if "big" in g["names"]]
    assert group["chunks"] == [12]
    big[1000:1010] = -1.0  # an edit inside one chunk
    second = store.save({"big": big, "view_of_nothing": 1}, nb)
    assert CHUNK_SIZE <= second.new_bytes <= CHUNK_SIZE + 64_000
    restored = store.load(nb)
    assert np.array_equal(restored.values["big"], big)
    assert restored.values["big"].flags.writeable
    assert not (store.load(nb, first.id).values["big"][1000:1010] == -1.0).any()  # #1 kept its data


def test_a_damaged_chunk_is_refused_before_unpickling(tmp_path, nb):
    store = CheckpointStore(str(tmp_path / "store"))
    big = np.arange(3_000_000, dtype=np.float64)  # 24 MB: 6 chunks
    ck = store.save({"big": big}, nb)
    [group] = ck.body["groups"]
    victim = group["buffers"][3]
    path = f"blobs/{victim[:2]}/{victim[2:]}"
    data = bytearray(store.backend.read(path))
    data[len(data) // 2] ^= 0x10
    store.backend.replace(path, bytes(data))
    with pytest.raises(VerificationError, match=victim[:12]):
        store.load(nb, ck.id)
    assert any(victim[:12] in p.what for p in store.verify())


def test_arrays_sharing_chunks_restore_independently(tmp_path, nb):
    store = CheckpointStore(str(tmp_path / "store"))
    zeros_a = np.zeros(2_500_000)
    zeros_b = np.zeros(2_500_000)  # the same chunks as zeros_a, stored once
    ck = store.save({"a": zeros_a, "b": zeros_b}, nb)
    assert ck.body["stats"]["bytes_new"] < 2 * CHUNK_SIZE
    values = store.load(nb).values
    values["a"][0] = 5
    assert values["b"][0] == 0 and values["a"].shape == (2_500_000,)
