"""The blob format: one content-addressed file per chunk, with its header and codec.

A blob is ``BLOB_MAGIC``, one codec byte, then the data: raw, or one zstd frame, or (for
numeric arrays) one byte giving the element width and one zstd frame of the data's bytes
regrouped by their place in each element (a byte shuffle: the high bytes of neighbouring
numbers are alike, and compress several times faster and smaller). Its name is the hash of
the data it decodes to. Kept apart from the store so the pager process
(:mod:`.pagerd`) reads blobs without importing the rest of the store.
"""

from __future__ import annotations

from typing import Any

import zstandard

from .backends.base import TMP, set_aside_name
from .hashing import digest
from .zstdframe import ZstdFrameCheck

BLOB_MAGIC = b"NBCB\x01"
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_SHUFFLE = 2
SHUFFLE_WIDTHS = (2, 4, 8)
HEADER_LEN = len(BLOB_MAGIC) + 1
_HEX = frozenset("0123456789abcdef")


def blob_path(h: str) -> str:
    """The path of blob ``h`` inside the store."""
    return f"blobs/{h[:2]}/{h[2:]}"


SET_ASIDE_WHY = "was found damaged when read (its content did not match its hash) and was set aside"


def set_aside_path(h: str) -> str:
    """Where blob ``h`` is once found damaged and set aside (see ``LocalBackend.set_aside``)."""
    return f"{TMP}/{set_aside_name(h)}"


def valid_hash(h: object) -> bool:
    """Whether ``h`` is a blob address (64 lowercase hex digits), never a path."""
    return isinstance(h, str) and len(h) == 64 and set(h) <= _HEX


class BlobError(Exception):
    """A blob that cannot be used: which one (``h``) and why, in the user's terms."""

    def __init__(self, h: str, why: str) -> None:
        super().__init__(f"blob {h}: {why}")
        self.h = h
        self.why = why


def _fill(reader: Any, out: Any, size: int) -> bool:
    """Read exactly ``size`` bytes from ``reader`` into ``out``; False if it has more or fewer."""
    view = memoryview(out)
    got = 0
    while got < size:
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return got == size and not reader.read(1)


def shuffle(data: memoryview, width: int) -> memoryview:
    """``data``'s bytes grouped by their place in each ``width``-byte element (a tail that
    is not a whole element stays last, as it was)."""
    n = data.nbytes // width
    np = _numpy()
    if np is None:
        head = b"".join(bytes(data[i : n * width : width]) for i in range(width))
        return memoryview(head + bytes(data[n * width :]))
    src = np.frombuffer(data, np.uint8)
    out = np.empty(data.nbytes, np.uint8)
    np.copyto(out[: n * width].reshape(width, n), src[: n * width].reshape(n, width).T)
    out[n * width :] = src[n * width :]
    return memoryview(out)


def unshuffle(src: Any, width: int, out: memoryview) -> None:
    """Undo :func:`shuffle` of ``src`` into ``out`` (as many bytes)."""
    n = out.nbytes // width
    np = _numpy()
    if np is not None:
        dst = np.frombuffer(out, np.uint8, n * width).reshape(n, width)
        dst[:] = np.frombuffer(src, np.uint8, n * width).reshape(width, n).T
    else:
        for i in range(width):
            out[i : n * width : width] = src[i * n : (i + 1) * n]
    out[n * width :] = src[n * width : out.nbytes]


def _numpy() -> Any:
    """NumPy when it is installed (only arrays are shuffled, so it is when they were saved);
    else None: the slow pure-Python path reads them anyway."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - NumPy is there in the tests
        return None
    return numpy


def _decompress(h: str, f: Any, out: Any) -> None:
    """One zstd frame from ``f`` into ``out``, exactly; raises ``BlobError`` otherwise."""
    dctx = zstandard.ZstdDecompressor()
    frame = ZstdFrameCheck(f)
    try:
        # Any object with read() will do as the source.
        with dctx.stream_reader(frame, closefd=False) as z:  # type: ignore[arg-type]
            if not _fill(z, out, memoryview(out).nbytes):
                raise BlobError(h, "it decompresses to the wrong length")
    except zstandard.ZstdError as e:
        raise BlobError(h, f"it does not decompress ({e})") from e
    damage = frame.finish()
    if damage:
        raise BlobError(h, damage)


def decode_blob(f: Any, h: str, size: int, out: Any, *, threads: bool = True) -> None:
    """Read one blob's data from ``f`` (its file, at its start) into ``out`` and check its hash.

    ``threads=False`` hashes on this thread only (the caller runs several side by side).

    Raises ``BlobError`` saying what is wrong: header, codec, length or content.
    """
    header = f.read(HEADER_LEN)
    if len(header) != HEADER_LEN or header[:-1] != BLOB_MAGIC:
        raise BlobError(h, "its header is damaged")
    codec = header[-1]
    if codec == CODEC_RAW:
        if not _fill(f, out, size):
            raise BlobError(h, "it has the wrong length (truncated or extended)")
    elif codec == CODEC_ZSTD:
        _decompress(h, f, memoryview(out).cast("B")[:size])
    elif codec == CODEC_SHUFFLE:
        width = f.read(1)
        if len(width) != 1 or width[0] not in SHUFFLE_WIDTHS:
            raise BlobError(h, "its header is damaged")
        shuffled = bytearray(size)
        _decompress(h, f, shuffled)
        unshuffle(shuffled, width[0], memoryview(out).cast("B")[:size])
    else:
        raise BlobError(
            h, f"it has an unknown codec {codec} (written by a newer nbcheckpoint? upgrade it)"
        )
    if digest(out, threads=threads) != h:
        raise BlobError(h, "its content does not match its hash")


def blob_limit(size: int) -> int:
    """The most bytes a blob of ``size`` bytes can take stored: its header and zstd's worst case."""
    return HEADER_LEN + size + (size >> 7) + (64 << 10)


def missing_why(backend: Any, h: str) -> str:
    """Why blob ``h`` is not in the store: set aside as damaged, or just missing."""
    try:
        if backend.exists(set_aside_path(h)):
            return SET_ASIDE_WHY
    except Exception:
        pass
    return "it is missing"
