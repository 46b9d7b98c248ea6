"""What every backend provides (the ``Backend`` protocol) and what backends share: temp names, folder syncs, caps."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, NamedTuple, Protocol

from ...errors import StoreError, StoreWriteError

Writer = Callable[[IO[bytes]], None]


class Staged(NamedTuple):
    """A temp file a local backend's ``stage`` wrote: its name in the temp folder, and what
    ``adopt`` checks before linking it: device, inode (reused at once after a removal),
    size and modification time. A file swapped in that matches all four (same size, within
    the clock's tick) is linked, and then fails its hash check when read, as any blob
    changed on the disk does."""

    name: str
    dev: int
    ino: int
    size: int
    mtime_ns: int


FILE_MODE = 0o600
DIR_MODE = 0o700
TMP = "tmp"
# What ``read`` returns at most unless told otherwise: a whole record is held in memory.
READ_LIMIT = 64 << 20
# Names this package gives temp files: ``<host>-<pid>-<32 hex>.tmp``. Cleanup removes
# nothing else, whatever else a temp folder holds.
_TMP_NAME = re.compile(r"^.+-\d+-[0-9a-f]{32}\.tmp$")


@dataclass(frozen=True)
class UnsafeEntry:
    """An entry of a store that nbcheckpoint never follows nor reads: a link or special file.

    ``path`` is relative to the store's root, ``/``-separated.
    """

    path: str
    why: str


class Backend(Protocol):
    """What the checkpoint store needs from a place that holds bytes.

    Paths are relative, ``/``-separated, below the backend's root. Reads never follow a
    link out of the store, never open a special file, and never read more than a cap:
    those raise :class:`~nbcheckpoint.errors.StoreEntryRefused`; a missing entry raises
    ``FileNotFoundError``.
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

    def read(self, path: str, *, limit: int = READ_LIMIT) -> bytes:
        """The whole of ``path``; refused, before reading, when it holds more than ``limit`` bytes."""

    def open_read(
        self, path: str, *, limit: int | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A file to read ``path`` from; refused when larger than ``limit`` bytes.

        Without ``limit``, reads stop at the size the entry had when opened (plus one
        byte, so a caller that checks the length sees that it grew).
        """

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

    def unsafe_entries(self) -> list[UnsafeEntry]:
        """Every link and special file in the store, which readers refuse (for ``verify``)."""


class StagingBackend(Backend, Protocol):
    """A backend that can write a file ahead and put it in place later (a local folder):
    a save writes its new blobs while it still pickles, then links them under its lease."""

    def stage(self, write: Writer) -> Staged:
        """Durably write a temp file, not yet visible as anything."""

    def adopt(self, staged: Staged, path: str, *, folders: FolderSync | None = None) -> bool:
        """:meth:`Backend.create` of ``path`` from ``staged``; ``FileNotFoundError`` when
        that temp file is gone or is not the one staged."""

    def discard(self, staged: Staged) -> None:
        """Remove ``staged`` (nothing if it is gone)."""


class FolderSync:
    """New folder entries whose folder still needs an fsync; one fsync per folder covers all.

    A save links its blobs first, then syncs each folder it touched once, then publishes
    the manifest. Until ``sync`` returns, the new entries are not durable: if anything
    fails, ``abandon`` removes them, as a failed folder fsync of a single create does.
    The backend says how to sync a folder and how to remove an entry (callables), so
    this batch never resolves a path itself. Thread-safe: blobs are created on several
    threads.
    """

    def __init__(self) -> None:
        self._syncs: dict[str, Callable[[], None]] = {}
        self._removes: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def add(
        self, folder: str, sync: Callable[[], None], remove: Callable[[], None] | None = None
    ) -> None:
        """Sync ``folder`` with ``sync``; ``remove``, when given, undoes an entry if that fails."""
        with self._lock:
            self._syncs.setdefault(folder, sync)
            removes = self._removes.setdefault(folder, [])
            if remove is not None:
                removes.append(remove)

    def sync(self) -> None:
        """fsync each folder once; the first failure abandons what is left, and raises.

        A failed fsync is never retried: Linux may already have dropped the pages. The
        folders are synced on a few threads: a new store's first save touches up to 256
        blob folders, and one after the other each fsync waits for its own journal commit
        (about 1 ms each here), where side by side they share them. After a failure no
        further fsync is started.
        """
        with self._lock:
            pending = list(self._syncs.items())
        if not pending:
            return
        failed: list[tuple[str, BaseException]] = []

        def one(item: tuple[str, Callable[[], None]]) -> None:
            folder, sync = item
            if failed:
                return
            try:
                sync()
            except (OSError, StoreError) as e:
                failed.append((folder, e))
                return
            with self._lock:
                self._syncs.pop(folder, None)
                self._removes.pop(folder, None)

        from ..hashing import THREADS  # no threads in a forked child

        if len(pending) < 4 or not THREADS["enabled"]:
            for item in pending:
                one(item)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="nbcheckpoint-sync") as pool:
                list(pool.map(one, pending))
        if failed:
            folder, e = failed[0]
            self.abandon()
            if isinstance(e, StoreError):
                raise e
            assert isinstance(e, OSError)
            raise StoreWriteError(folder, e.strerror or str(e)) from e
        with self._lock:
            left = bool(self._syncs)
        if left:  # added while syncing (not by a save; kept for safety)
            self.sync()

    def abandon(self) -> None:
        """Remove every entry not yet made durable by ``sync``."""
        with self._lock:
            removes = [r for group in self._removes.values() for r in group]
            self._syncs.clear()
            self._removes.clear()
        for remove in removes:
            with contextlib.suppress(OSError, StoreError):
                remove()


def tmp_name() -> str:
    """A fresh temp file name; host and pid in it let cleanup tell a dead writer's leftovers."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}.tmp"


def is_tmp_name(name: str) -> bool:
    """Whether ``name`` is one that :func:`tmp_name` makes (cleanup touches nothing else)."""
    return _TMP_NAME.match(name) is not None


_SET_ASIDE = re.compile(r"damaged-[0-9a-f]{64}\Z")


def set_aside_name(h: str) -> str:
    """The name in ``tmp/`` of blob ``h`` once found damaged and set aside."""
    return f"damaged-{h}"


def is_set_aside_name(name: str) -> bool:
    """Whether ``name`` is one :func:`set_aside_name` makes.

    >>> is_set_aside_name(set_aside_name("ab" * 32)), is_set_aside_name("damaged-../x")
    (True, False)
    """
    return _SET_ASIDE.match(name) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def leftover_is_dead(name: str, age: float, max_age: float) -> bool:
    """Whether the temp file ``name``, ``age`` seconds old, belongs to no live writer."""
    parts = name.removesuffix(".tmp").split("-")
    if len(parts) >= 3 and parts[-2].isdigit():
        host = "-".join(parts[:-2])
        if host == socket.gethostname():
            return not _pid_alive(int(parts[-2])) or age > max_age
    return age > max_age


def too_large(size: int, limit: int) -> str:
    """The reason given for an entry over its cap."""
    return f"it holds {_human(size)}, more than the {_human(limit)} such a record may hold"


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"
