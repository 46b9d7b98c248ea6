"""Durable byte storage under one root: a local folder (os calls, fsync, link) or any fsspec URL."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Protocol

from ..errors import StoreError, StoreWriteError

Writer = Callable[[IO[bytes]], None]

FILE_MODE = 0o600
DIR_MODE = 0o700
TMP = "tmp"


class Backend(Protocol):
    """What the checkpoint store needs from a place that holds bytes.

    Paths are relative, ``/``-separated, below the backend's root.
    """

    url: str
    local: bool

    def create(self, path: str, write: Writer, *, folders: FolderSync | None = None) -> bool:
        """Durably create ``path`` with what ``write`` writes, unless it exists.

        Returns False (and writes nothing visible) when ``path`` already exists.
        Readers never see a partial file. With ``folders``, a local folder's fsync is
        left to ``folders.sync()``, which must succeed before anything names ``path``.
        """

    def replace(self, path: str, data: bytes) -> None:
        """Durably write ``path``, replacing what was there, atomically."""

    def sync_later(self, path: str, folders: FolderSync) -> None:
        """Make the existing ``path`` durable in ``folders.sync()``: another writer may have
        linked it and not yet synced its folder."""

    def read(self, path: str) -> bytes: ...

    def open_read(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def exists(self, path: str) -> bool: ...

    def size(self, path: str) -> int: ...

    def mtime(self, path: str) -> float: ...

    def touch(self, path: str) -> None:
        """Mark ``path`` as recently used, so garbage collection's grace period covers it."""

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) directly below ``path``; empty when it does not exist."""

    def delete(self, path: str) -> None: ...

    def cleanup_tmp(self, max_age: float) -> int:
        """Remove temporary files left by writers that died; return how many."""


class FolderSync:
    """New folder entries whose folder still needs an fsync; one fsync per folder covers all.

    A save links its blobs first, then syncs each folder it touched once, then publishes
    the manifest. Until ``sync`` returns, the new entries are not durable: if anything
    fails, ``abandon`` removes them, as a failed folder fsync of a single create does.
    Thread-safe: blobs are created on several threads.
    """

    def __init__(self) -> None:
        self._entries: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def add(self, folder: str, entry: str | None = None) -> None:
        """Sync ``folder``; ``entry``, when given, is ours to remove if that fails."""
        with self._lock:
            entries = self._entries.setdefault(folder, [])
            if entry is not None:
                entries.append(entry)

    def sync(self) -> None:
        """fsync each folder once; the first failure abandons what is left, and raises.

        A failed fsync is never retried: Linux may already have dropped the pages.
        """
        while True:
            with self._lock:
                if not self._entries:
                    return
                folder = next(iter(self._entries))
            try:
                LocalBackend._fsync_dir(folder)
            except OSError as e:
                self.abandon()
                raise StoreWriteError(folder, e.strerror or str(e)) from e
            with self._lock:
                del self._entries[folder]

    def abandon(self) -> None:
        """Remove every entry not yet made durable by ``sync``."""
        with self._lock:
            entries = [e for group in self._entries.values() for e in group]
            self._entries.clear()
        for entry in entries:
            with contextlib.suppress(OSError):
                os.unlink(entry)


def _tmp_name() -> str:
    # Host and pid in the name let cleanup tell a dead writer's leftovers from a live one's.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftover_is_dead(name: str, age: float, max_age: float) -> bool:
    parts = name.split("-")
    if len(parts) >= 3 and parts[-2].isdigit():
        host = "-".join(parts[:-2])
        if host == socket.gethostname():
            return not _pid_alive(int(parts[-2])) or age > max_age
    return age > max_age


class LocalBackend:
    """A folder on a local disk, written with temp file + fsync + link + fsync of the folder."""

    local = True

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root
        self._made: set[str] = set()

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def _makedirs(self, folder: str, folders: FolderSync | None = None) -> None:
        """Create ``folder`` and its missing parents, each new entry made durable: at once,
        or with ``folders`` (a save's batch, synced before its manifest)."""
        if folder in self._made:
            return
        missing = []
        d = folder
        while not os.path.isdir(d):
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            try:
                os.mkdir(d, DIR_MODE)
            except FileExistsError:
                pass
            except OSError as e:
                raise StoreWriteError(d, e.strerror or str(e)) from e
            else:
                try:
                    os.chmod(d, DIR_MODE)  # mkdir's mode is filtered by the umask
                    if folders is None:
                        self._fsync_dir(os.path.dirname(d))
                except OSError as e:
                    raise StoreWriteError(d, e.strerror or str(e)) from e
                if folders is not None:
                    # A new store's first save makes up to 256 blob folders: one fsync of
                    # their parent for all, with the save's other folders, not one each.
                    folders.add(os.path.dirname(d))
        self._made.add(folder)

    @staticmethod
    def _fsync_dir(folder: str) -> None:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_tmp(self, write: Writer | None, data: bytes | None) -> str:
        tmp_dir = self._abs(TMP)
        self._makedirs(tmp_dir)
        tmp = os.path.join(tmp_dir, _tmp_name())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except OSError as e:
            raise StoreWriteError(tmp, e.strerror or str(e)) from e
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                if write is not None:
                    write(f)
                else:
                    assert data is not None
                    f.write(data)
                f.flush()
                # A failed fsync is never retried: Linux may already have dropped the pages.
                os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise StoreWriteError(tmp, e.strerror or str(e)) from e
            raise
        return tmp

    def create(self, path: str, write: Writer, *, folders: FolderSync | None = None) -> bool:
        final = self._abs(path)
        if os.path.exists(final):
            return False
        folder = os.path.dirname(final)
        self._makedirs(folder, folders)
        if folders is not None:
            # The folder may come from an earlier save whose batch never got synced (it
            # failed): its entry in the parent is made durable again with this save's.
            folders.add(os.path.dirname(folder))
        tmp = self._write_tmp(write, None)
        try:
            # link() fails when the name exists, so two writers never overwrite each other.
            os.link(tmp, final)
            created = True
        except FileExistsError:
            created = False
        except OSError as e:
            raise StoreWriteError(final, e.strerror or str(e)) from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if created and folders is not None:
            folders.add(folder, final)  # synced once for all its new entries, before use
        elif created:
            try:
                self._fsync_dir(folder)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.unlink(final)
                raise StoreWriteError(folder, e.strerror or str(e)) from e
        return created

    def sync_later(self, path: str, folders: FolderSync) -> None:
        folders.add(os.path.dirname(self._abs(path)))

    def replace(self, path: str, data: bytes) -> None:
        final = self._abs(path)
        folder = os.path.dirname(final)
        self._makedirs(folder)
        tmp = self._write_tmp(None, data)
        try:
            os.replace(tmp, final)
            self._fsync_dir(folder)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreWriteError(final, e.strerror or str(e)) from e

    def read(self, path: str) -> bytes:
        try:
            with open(self._abs(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StoreError(f"Could not read {self._abs(path)}: {e.strerror or e}") from e

    @contextlib.contextmanager
    def open_read(self, path: str) -> Iterator[IO[bytes]]:
        with open(self._abs(path), "rb", buffering=0) as f:
            yield f

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def size(self, path: str) -> int:
        return os.stat(self._abs(path)).st_size

    def mtime(self, path: str) -> float:
        return os.stat(self._abs(path)).st_mtime

    def touch(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._abs(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._abs(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._abs(path))

    def cleanup_tmp(self, max_age: float) -> int:
        removed = 0
        now = time.time()
        for name in self.listdir(TMP):
            full = os.path.join(self._abs(TMP), name)
            try:
                age = now - os.stat(full).st_mtime
            except FileNotFoundError:
                continue
            if _leftover_is_dead(name, age, max_age):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)
                    removed += 1
        return removed


def open_backend(url: str) -> Backend:
    """Return the backend for a folder path or an fsspec URL.

    Examples
    --------
    >>> open_backend("/tmp/ckpts").local
    True
    """
    if "://" not in url or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return LocalBackend(path)
    from .remote import FsspecBackend  # fsspec and its plugins load only for a URL

    return FsspecBackend(url)
