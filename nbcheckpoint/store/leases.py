"""Save leases and the store's own clock, so that gc never depends on machines' clocks agreeing.

A save writes a lease (``leases/<host>-<pid>-<uuid>.save``, naming every blob it will
use) before its first blob, and removes it once its manifest is published. gc writes a
marker (``leases/<...>.gc``) first and reads the marker's modification time: that is
"now" on the store's clock, against which it judges the age of leases and blobs. It
never reads its own machine's clock for that, so a gc whose clock is hours ahead, or a
writer whose clock is behind, changes nothing. A writer also looks for gc markers after
publishing: while a gc runs, it checks that the blobs it reused are still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

from ..errors import StoreError
from .backends import Backend, FolderSync

LEASES = "leases"
# A lease older than this on the store's clock belongs to a writer that died (a live
# writer renews its lease every LEASE_RENEW seconds while it writes). Its blobs are then
# spared only by gc's grace period. Six hours covers a single blob upload of a few
# hundred GB on a slow link, between two renewals.
LEASE_TTL = 6 * 3600.0
LEASE_RENEW = 600.0
# Blob addresses are BLAKE3 hex digests; any future manifest format must keep them as
# hex text, so that an installation that cannot read it still finds them.
_HASH_RUN = re.compile(rb"[0-9a-fA-F]{64,}")
_MAX_RUN = 4096


def _name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"


def _written(data: bytes) -> Callable[[IO[bytes]], None]:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


class Lease:
    """A save in progress, visible in the store before any of its blobs.

    Examples
    --------
    >>> from nbcheckpoint.store.backends import open_backend
    >>> import tempfile
    >>> backend = open_backend(tempfile.mkdtemp())
    >>> lease = Lease.take(backend, "nb", ["ab" * 32])
    >>> [n.endswith(".save") for n in backend.listdir(LEASES)]
    [True]
    >>> lease.release(); backend.listdir(LEASES)
    []
    """

    def __init__(self, backend: Backend, path: str, data: bytes) -> None:
        self.backend = backend
        self.path = path
        self._data = data
        self._renewed = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def take(cls, backend: Backend, notebook: str, blobs: Iterable[str]) -> Lease:
        data = json.dumps({"notebook": notebook, "blobs": sorted(blobs)}).encode()
        path = f"{LEASES}/{_name()}.save"
        # Durability does not matter (a lease of a crashed machine protects nothing), only
        # visibility: the folder's fsync is left to a batch that is never synced.
        backend.create(path, _written(data), folders=FolderSync())
        return cls(backend, path, data)

    def renew_if_due(self) -> None:
        """Renew the lease's age on the store's clock, at most every LEASE_RENEW seconds.

        Durations on this machine's monotonic clock are fine: only comparisons of times
        read on different machines are not.
        """
        with self._lock:
            if time.monotonic() - self._renewed < LEASE_RENEW:
                return
            self._renewed = time.monotonic()
        self.backend.replace(self.path, self._data)

    def release(self) -> None:
        self.backend.delete(self.path)


@dataclass
class StoreClock:
    """The store's "now": the modification time of a marker this gc has just written."""

    backend: Backend
    path: str
    now: float

    @classmethod
    def read(cls, backend: Backend) -> StoreClock:
        path = f"{LEASES}/{_name()}.gc"
        backend.create(path, _written(b""), folders=FolderSync())
        return cls(backend, path, backend.mtime(path))

    def done(self) -> None:
        self.backend.delete(self.path)


@dataclass
class LeaseScan:
    """What gc learned from the leases: blobs of saves in progress, and whether any is live."""

    protected: set[str] = field(default_factory=set)
    live: int = 0
    expired: int = 0


def _same_host_dead(name: str) -> bool:
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def scan_leases(backend: Backend, clock: StoreClock, grace: float) -> LeaseScan:
    """Read every live lease; remove those of writers that died (and stale gc markers).

    A lease is live while younger than ``max(grace, LEASE_TTL)`` on the store's clock,
    unless it names a process of this host that no longer exists.
    """
    scan = LeaseScan()
    limit = max(grace, LEASE_TTL)
    for entry in backend.listdir(LEASES):
        path = f"{LEASES}/{entry}"
        if path == clock.path:
            continue
        stem, _, kind = entry.rpartition(".")
        try:
            age = clock.now - backend.mtime(path)
        except FileNotFoundError:
            continue  # the save finished meanwhile: its manifest is read after this
        if age > limit or _same_host_dead(stem):
            backend.delete(path)
            scan.expired += 1
            continue
        if kind != "save":
            continue
        try:
            raw = backend.read(path)
        except FileNotFoundError:
            continue
        scan.live += 1
        # Read conservatively: whatever is hash-shaped in it is protected.
        scan.protected |= hashes_in(raw)
    return scan


def gc_running(backend: Backend) -> bool:
    """Whether a gc marker is in the store (a gc running, or one that died recently)."""
    try:
        return any(name.endswith(".gc") for name in backend.listdir(LEASES))
    except StoreError:
        return True  # cannot tell: assume one is


def hashes_in(raw: bytes) -> set[str]:
    """Every blob-address-shaped string in ``raw``: 64 hex digits, at every offset of a longer run.

    Used on manifests and leases this installation cannot read (damaged, unsigned, or a
    newer format), whose blobs gc and retention must treat as in use.

    Examples
    --------
    >>> sorted(hashes_in(b'{"blobs": {"' + b"ab" * 32 + b'": 1}}'))[0][:8]
    'abababab'
    >>> hashes_in(b"abc")
    set()
    """
    found: set[str] = set()
    for match in _HASH_RUN.finditer(raw):
        run = match.group().decode("ascii").lower()
        if len(run) > _MAX_RUN:
            run = run[:_MAX_RUN]
        for start in range(len(run) - 63):
            found.add(run[start : start + 64])
    return found


def read_capped(backend: Backend, path: str, cap: int) -> bytes:
    """At most ``cap`` bytes of ``path`` (a manifest too big to be one is not read whole)."""
    with backend.open_read(path) as f:
        return f.read(cap)


def delete_quietly(backend: Backend, path: str) -> None:
    """Remove ``path`` if present; a store that fails now leaves it to expire instead."""
    with contextlib.suppress(StoreError, OSError):
        backend.delete(path)
