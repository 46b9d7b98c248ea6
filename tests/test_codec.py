"""Numeric arrays are byte-shuffled before zstd: smaller and faster, read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbcheckpoint.errors import VerificationError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store import blobs as blobs_module
from nbcheckpoint.store.blobs import (
    CODEC_RAW,
    CODEC_SHUFFLE,
    CODEC_ZSTD,
    HEADER_LEN,
    shuffle,
    unshuffle,
)


@pytest.fixture
def nb(tmp_path: Path) -> NotebookRef:
    return NotebookRef.from_path(str(tmp_path / "codec.ipynb"))


def _codecs(root: Path) -> dict[Path, tuple[int, int]]:
    """Each blob file: its codec byte and the byte after the header (a shuffle's width)."""
    out = {}
    for p in (root / "blobs").glob("*/*"):
        head = p.read_bytes()[: HEADER_LEN + 1]
        out[p] = (head[HEADER_LEN - 1], head[HEADER_LEN])
    return out


@pytest.mark.parametrize(
    ("make", "width"),
    [
        (lambda n: np.arange(n, dtype=np.float64), 8),
        (lambda n: np.arange(n, dtype=np.int32) % 1000, 4),
        (lambda n: np.round(np.linspace(0, 1, n), 2).astype(np.float16), 2),
        (lambda n: np.arange(n, dtype=np.uint64) * 3, 8),
        (lambda n: (np.arange(n) + 1j * np.arange(n)).astype(np.complex64), 4),
    ],
    ids=["float64", "int32", "float16", "uint64", "complex64"],
)
def test_numeric_arrays_are_shuffled_by_their_element_size_and_read_back_equal(
    tmp_path: Path, nb: NotebookRef, make, width: int
) -> None:
    value = make(3_000_000)  # several 4 MiB chunks, the last one partial
    small = make(5_000)  # one blob, unchunked
    store = CheckpointStore(str(tmp_path / "s"))
    ck = store.save({"value": value, "small": small}, nb)
    codecs = _codecs(tmp_path / "s")
    shuffled = [p for p, (codec, w) in codecs.items() if codec == CODEC_SHUFFLE]
    assert shuffled and all(codecs[p][1] == width for p in shuffled)
    assert not any(codec == CODEC_ZSTD for codec, _ in codecs.values() if _ == width)
    # It pays: far smaller on disk than the data.
    assert sum(p.stat().st_size for p in shuffled) < 0.2 * (value.nbytes + small.nbytes)
    for lazy in (False, True):
        back = CheckpointStore(str(tmp_path / "s")).load(nb, ck.id, lazy=lazy).values
        for name, want in (("value", value), ("small", small)):
            assert back[name].dtype == want.dtype
            np.testing.assert_array_equal(back[name], want)
    assert CheckpointStore(str(tmp_path / "s")).verify() == []


def test_data_that_does_not_compress_is_stored_raw_and_text_unshuffled(tmp_path, nb):
    noise = np.random.default_rng(0).random(1_000_000)
    text = "words and more words " * 50_000
    store = CheckpointStore(str(tmp_path / "s"))
    store.save(
        {"noise": noise, "text": text, "bytes": np.frombuffer(b"ab" * 300_000, np.uint8)}, nb
    )
    codecs = {codec for codec, _ in _codecs(tmp_path / "s").values()}
    assert CODEC_RAW in codecs and CODEC_ZSTD in codecs  # noise raw; text and uint8 zstd
    assert CODEC_SHUFFLE not in codecs  # uint8 has nothing to regroup; noise does not pay
    back = CheckpointStore(str(tmp_path / "s")).load(nb).values
    np.testing.assert_array_equal(back["noise"], noise)
    assert back["text"] == text


def test_numbers_that_recur_whole_are_compressed_unshuffled(tmp_path, nb):
    # Prices rounded to cents: the same 8-byte values come back again and again, which
    # zstd matches whole (about 19% of the size); shuffled, it gets only 50%, too little
    # to be worth it on a local disk, and the array was stored raw.
    steps = np.random.default_rng(1).standard_normal(2_000_000) * 0.05
    prices = np.round(100.0 + np.cumsum(steps), 2)
    ramp = np.arange(1_500_000, dtype=np.float64)  # a shuffle still wins here
    store = CheckpointStore(str(tmp_path / "s"))
    ck = store.save({"prices": prices, "ramp": ramp}, nb)
    kinds = [codec for codec, _ in _codecs(tmp_path / "s").values()]
    assert kinds.count(CODEC_SHUFFLE) == 3  # the ramp's three chunks
    assert kinds.count(CODEC_ZSTD) == 4  # the prices' four chunks, unshuffled
    on_disk = sum(p.stat().st_size for p in (tmp_path / "s" / "blobs").glob("*/*"))
    assert on_disk < 0.3 * prices.nbytes
    back = CheckpointStore(str(tmp_path / "s")).load(nb, ck.id).values
    np.testing.assert_array_equal(back["prices"], prices)
    np.testing.assert_array_equal(back["ramp"], ramp)


@pytest.mark.parametrize("width", [2, 4, 8])
@pytest.mark.parametrize("numpy", [True, False], ids=["numpy", "pure-python"])
def test_shuffle_and_unshuffle_are_inverse_with_a_tail(width, numpy, monkeypatch):
    if not numpy:  # a reader without NumPy (the command line, a gc) still decodes
        monkeypatch.setattr(blobs_module, "_numpy", lambda: None)
    data = memoryview(bytes(range(256)) * 40 + b"xyz")  # not a whole number of elements
    packed = shuffle(data, width)
    assert len(packed) == data.nbytes and packed != bytes(data)
    assert packed[: data.nbytes // width] == bytes(data[0 : data.nbytes // width * width : width])
    out = bytearray(data.nbytes)
    unshuffle(packed, width, memoryview(out))
    assert bytes(out) == bytes(data)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda b: b[:HEADER_LEN] + b"\x03" + b[HEADER_LEN + 1 :], "header is damaged"),
        (lambda b: b[:HEADER_LEN], "header is damaged"),
        (lambda b: b[: HEADER_LEN - 1] + b"\x09" + b[HEADER_LEN:], "unknown codec 9 .*newer"),
        (lambda b: b[: HEADER_LEN + 1] + b"\x00" * 40, "does not decompress"),
        (lambda b: b[:-3], "decompresses to the wrong length"),
        (lambda b: b + b"junk", "does not decompress"),
    ],
    ids=["bad width", "no width", "newer codec", "junk frame", "truncated", "extended"],
)
def test_a_damaged_shuffled_blob_is_refused_with_its_reason(tmp_path, nb, damage, why):
    store = CheckpointStore(str(tmp_path / "s"))
    ck = store.save({"ramp": np.arange(400_000, dtype=np.float64)}, nb)  # one 3.2 MB blob
    [victim] = [p for p, (c, _) in _codecs(tmp_path / "s").items() if c == CODEC_SHUFFLE]
    victim.write_bytes(damage(victim.read_bytes()))
    with pytest.raises(VerificationError, match=why):
        CheckpointStore(str(tmp_path / "s")).load(nb, ck.id)
