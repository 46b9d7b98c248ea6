"""fsspec's in-process memory filesystem (``memory://``): for tests and examples, one dict per process."""

from __future__ import annotations

import datetime
import io
import threading

from ...errors import StoreEntryRefused
from .base import FolderSync, Writer, too_large
from .generic import FsspecBackend

# The memory filesystem is one dict per process: one lock makes its create-if-absent atomic.
_MEMORY_LOCK = threading.Lock()


class MemoryBackend(FsspecBackend):
    """A store in fsspec's memory filesystem: writes are atomic under a process-wide lock.

    Examples
    --------
    >>> b = MemoryBackend("memory://doc-memory")
    >>> b.create("x", lambda f: f.write(b"1")), b.create("x", lambda f: f.write(b"2"))
    (True, False)
    """

    def create(self, path: str, write: Writer, *, folders: FolderSync | None = None) -> bool:
        final = self._abs(path)
        if self.fs.exists(final):
            return False
        buffer = io.BytesIO()
        write(buffer)
        with _MEMORY_LOCK:
            if self.fs.exists(final):
                return False
            self._call("write", path, self.fs.pipe_file, final, buffer.getvalue())
        return True

    @property
    def exclusive_writes(self) -> bool:
        return True

    def _get_range(
        self, path: str, start: int, end: int, limit: int | None
    ) -> tuple[bytes, int | None]:
        # The object is already in this process: its size costs nothing to know.
        size = self.size(path)
        if limit is not None and size > limit:
            raise StoreEntryRefused(path, too_large(size, limit), self.url)
        data = self.fs.cat_file(self._abs(path), start=start, end=end)
        return bytes(data), size

    def touch(self, path: str) -> None:
        stored = getattr(self.fs, "store", {}).get(self._abs(path))
        if stored is not None:
            stored.created = stored.modified = datetime.datetime.now(tz=datetime.timezone.utc)
