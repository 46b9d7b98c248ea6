"""Checks the structure of a blob's zstd frame as the decoder reads it (damage decoding misses)."""

from __future__ import annotations

from typing import IO


class ZstdFrameCheck:
    """Follows the structure of the one zstd frame of a blob as the decoder reads its bytes.

    Decoding misses damage that leaves the content intact: the stream reader stops quietly
    at the end of the input once all content is out, so a cleared last-block flag, a set
    checksum flag or bytes after the frame went unseen. This walks the frame and block
    headers (RFC 8878, section 3.1.1) and wants the frame to end exactly at the end of the
    file. Still unseen, as no decoder can tell: a flip of the header's unused bit, or of the
    window size to a larger one.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._state = "frame"
        self._need = 5  # magic number and frame header descriptor
        self._buf = bytearray()
        self._skip = 0
        self._checksum = 0
        self._error: str | None = None

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        if data and self._error is None:
            self._feed(memoryview(data))
        return data

    def _feed(self, view: memoryview) -> None:
        i = 0
        while i < len(view) and self._error is None:
            if self._skip:
                n = min(self._skip, len(view) - i)
                self._skip -= n
                i += n
                continue
            if self._state == "end":
                self._error = "it has bytes after its zstd frame"
                return
            n = min(self._need - len(self._buf), len(view) - i)
            self._buf += view[i : i + n]
            i += n
            if len(self._buf) == self._need:
                self._step(bytes(self._buf))
                self._buf.clear()

    def _step(self, head: bytes) -> None:
        if self._state == "frame":
            fhd = head[4]
            if head[:4] != b"\x28\xb5\x2f\xfd" or fhd & 0x08:  # 0x08: the reserved bit
                self._error = "its zstd frame header is damaged"
                return
            single = fhd >> 5 & 1
            # Window descriptor (absent in single-segment frames), dictionary id, content size.
            self._skip = (1 - single) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
            self._checksum = 4 * (fhd >> 2 & 1)
            self._state, self._need = "block", 3
            return
        header = int.from_bytes(head, "little")
        last, kind, length = header & 1, header >> 1 & 3, header >> 3
        if kind == 3:
            self._error = "its zstd frame has a damaged block header"
            return
        self._skip = 1 if kind == 1 else length
        if last:
            self._skip += self._checksum
            self._state = "end"

    def finish(self) -> str | None:
        """Read what the decoder left, and say what is wrong with the frame, or None."""
        while self._error is None and self.read(1 << 20):
            pass
        if self._error is None and (self._state != "end" or self._skip):
            self._error = "its zstd frame is incomplete"
        return self._error
