"""The blob format: one content-addressed file per chunk, with its header and codec.

A blob is ``BLOB_MAGIC``, one codec byte, then the data: raw, or one zstd frame. Its name is
the hash of the data it decodes to. Kept apart from the store so the pager process
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
        dctx = zstandard.ZstdDecompressor()
        frame = ZstdFrameCheck(f)
        try:
            # Any object with read() will do as the source.
            with dctx.stream_reader(frame, closefd=False) as z:  # type: ignore[arg-type]
                if not _fill(z, out, size):
                    raise BlobError(h, "it decompresses to the wrong length")
        except zstandard.ZstdError as e:
            raise BlobError(h, f"it does not decompress ({e})") from e
        damage = frame.finish()
        if damage:
            raise BlobError(h, damage)
    else:
        raise BlobError(h, f"it has an unknown codec {codec}")
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
