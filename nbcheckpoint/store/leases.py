"""Save leases and the store's own clock, so that gc never depends on machines' clocks agreeing.

A save writes a lease (``leases/<host>-<pid>-<uuid>.save``, naming every blob it will
use) before its first blob, and removes it once its manifest is published. gc writes a
marker (``leases/<...>.gc``) first and reads the marker's modification time: that is
"now" on the store's clock, against which it judges the age of leases and blobs. It
never reads its own machine's clock for that, so a gc whose clock is hours ahead, or a
writer whose clock is behind, changes nothing. A gc looks at the leases again right before
each deletion, and a writer checks after publishing that the blobs it reused (without
their bytes in hand) are still there, withdrawing the checkpoint if not: a checkpoint
acknowledged is whole.
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
SAVE = ".save"
GC = ".gc"
# A lease older than this on the store's clock belongs to a writer that died (a live
# writer renews its lease every LEASE_RENEW seconds while it writes). Its blobs are then
# spared only by gc's grace period. Six hours covers a single blob upload of a few
# hundred GB on a slow link, between two renewals.
LEASE_TTL = 6 * 3600.0
LEASE_RENEW = 600.0
# A running gc rewrites its marker at least this often; a save waiting for a gc to finish
# takes a marker unchanged for GC_STALE seconds (of its own monotonic clock) for a dead gc's.
GC_RENEW = 5.0
GC_STALE = 60.0
# A gc marker older than this on the store's clock is a dead gc's (a live one renews it every
# GC_RENEW): any gc removes it.
GC_MARKER_TTL = 1800.0
# Markers this process found dead (unchanged for GC_STALE): no later save waits for them again.
_dead_gcs: set[str] = set()
# A lease names a notebook and blob addresses; more than this was not written by a save.
MAX_LEASE = 16 << 20
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
        # The gcs running when this lease became visible: they may have looked at the
        # leases before it, and may still delete a blob this save finds present.
        self.gcs_before: set[str] = set()

    @classmethod
    def take(cls, backend: Backend, notebook: str, blobs: Iterable[str]) -> Lease:
        data = json.dumps({"notebook": notebook, "blobs": sorted(blobs)}).encode()
        path = f"{LEASES}/{_name()}{SAVE}"
        # Durability does not matter (a lease of a crashed machine protects nothing), only
        # visibility: the folder's fsync is left to a batch that is never synced.
        backend.create(path, _written(data), folders=FolderSync())
        lease = cls(backend, path, data)
        lease.gcs_before = set(gc_markers(backend))
        return lease

    def wait_for_gcs(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Return once every gc that was running when this lease appeared has finished.

        A gc that read the leases before this one existed can delete a blob this save found
        present, at any time until it ends: only after that is a check that the blob is still
        there final. A gc that started later sees the lease and spares its blobs. A marker
        unchanged for GC_STALE seconds (a running gc rewrites it every GC_RENEW), or naming a
        process of this host that no longer exists, is a dead gc's: it is not waited for.
        """
        waiting = {m for m in self.gcs_before if m != "?" and m not in _dead_gcs}
        seen: dict[str, tuple[float, float]] = {}  # marker -> (its mtime, when that changed)
        pause = 0.02
        while waiting:
            present = set(gc_markers(self.backend))
            waiting &= present
            now = time.monotonic()
            for marker in list(waiting):
                if _same_host_dead(marker.rsplit(".", 1)[0]):
                    waiting.discard(marker)
                    continue
                try:
                    mtime = self.backend.mtime(f"{LEASES}/{marker}")
                except FileNotFoundError:
                    waiting.discard(marker)
                    continue
                if marker not in seen or seen[marker][0] != mtime:
                    seen[marker] = (mtime, now)
                elif now - seen[marker][1] > GC_STALE:
                    waiting.discard(marker)
                    _dead_gcs.add(marker)
            if waiting:
                sleep(pause)
                pause = min(pause * 2, 0.5)

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
        """The manifest is published: remove the lease, unless a gc is running.

        A gc reads the manifests once, and the leases before each deletion; a save that
        took its lease and published after the first but released it before the second
        would be seen by neither. While a gc marker is present, the lease is rewritten as
        published instead, and stays until every gc older than it has finished.
        """
        if not gc_markers(self.backend):
            delete_quietly(self.backend, self.path)
            return
        body = json.loads(self._data)
        body["published"] = True
        with contextlib.suppress(StoreError, OSError):
            self.backend.replace(self.path, json.dumps(body).encode())


@dataclass
class StoreClock:
    """The store's "now": the modification time of a marker this gc has just written."""

    backend: Backend
    path: str
    now: float
    _renewed: float = field(default_factory=time.monotonic)

    @classmethod
    def read(cls, backend: Backend) -> StoreClock:
        path = f"{LEASES}/{_name()}{GC}"
        backend.create(path, _written(b""), folders=FolderSync())
        return cls(backend, path, backend.mtime(path))

    def renew_if_due(self) -> None:
        """Rewrite the marker every GC_RENEW seconds: saves waiting for this gc see it alive.

        ``now`` stays the time the gc started; only the marker's own age changes.
        """
        if time.monotonic() - self._renewed < GC_RENEW:
            return
        self._renewed = time.monotonic()
        with contextlib.suppress(StoreError, OSError):
            self.backend.replace(self.path, b"")

    def done(self) -> None:
        self.backend.delete(self.path)


@dataclass
class LeaseScan:
    """What gc learned from the leases: blobs of saves in progress, and whether any is live."""

    protected: set[str] = field(default_factory=set)
    live: int = 0
    expired: int = 0
    seen: set[str] = field(default_factory=set)

    def refresh(self, backend: Backend) -> None:
        """Add the blobs of leases taken since the last look (one listing; reads new ones).

        gc calls this right before each deletion: a save that takes its lease after gc
        first looked, then finds a blob gc is about to delete, is then seen in time, or
        finds the blob gone (before publishing: it fails) or re-checks it after publishing.
        """
        for entry in backend.listdir(LEASES):
            if entry in self.seen or not entry.endswith(SAVE):
                continue
            self.seen.add(entry)
            try:
                self.protected |= hashes_in(backend.read(f"{LEASES}/{entry}"))
            except FileNotFoundError:
                continue  # finished meanwhile: its manifest names its blobs


def _same_host_dead(name: str) -> bool:
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
        return False
    return _pid_gone(int(parts[1]))


def _pid_gone(pid: int) -> bool:
    """True when no process ``pid`` runs here: none exists, or it is a zombie (killed, and
    not yet reaped by its parent: a SIGKILLed kernel until its manager looks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return False
    # "pid (comm) state ...": the state follows the last ")" (comm may hold one).
    fields = stat.rpartition(b")")[2].split()
    return bool(fields) and fields[0] in (b"Z", b"X")


def savers_of(backend: Backend, notebook: str, max_age: float) -> list[int]:
    """Other processes of this host saving a checkpoint of ``notebook`` right now.

    Read from their leases: a lease of this host, younger than ``max_age`` seconds (a
    save ends or is stopped well before), whose process runs and is not this one, and
    whose manifest is not published yet. A restore waits for them, so that it does not
    bring back an older checkpoint while a newer one is a moment from landing. The store
    is untrusted: anything unreadable or malformed is no saver.
    """
    host = socket.gethostname()
    found: set[int] = set()
    try:
        entries = backend.listdir(LEASES)
    except (StoreError, OSError):
        return []
    for entry in entries:
        parts = entry[: -len(SAVE)].rsplit("-", 2) if entry.endswith(SAVE) else []
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_gone(pid):
            continue
        path = f"{LEASES}/{entry}"
        try:
            if time.time() - backend.mtime(path) > max_age:
                continue
            body = json.loads(read_capped(backend, path, MAX_LEASE))
        except (StoreError, OSError, ValueError, RecursionError):
            continue
        if (
            isinstance(body, dict)
            and body.get("notebook") == notebook
            and not body.get("published")
        ):
            found.add(pid)
    return sorted(found)


def gc_markers(backend: Backend) -> list[str]:
    """Names of the gc markers in the store (gcs running, or dead ones not yet expired)."""
    try:
        return [n for n in backend.listdir(LEASES) if n.endswith(GC)]
    except StoreError:
        return ["?"]  # cannot tell: assume one is


def scan_leases(backend: Backend, clock: StoreClock, grace: float) -> LeaseScan:
    """Read every lease that still counts; remove the others (and stale gc markers).

    A save's lease counts while younger than ``max(grace, LEASE_TTL)`` on the store's
    clock, unless it names a process of this host that no longer exists. A published
    lease counts while a gc older than it (not this one) may still be running.
    """
    scan = LeaseScan()
    limit = max(grace, LEASE_TTL)
    entries = backend.listdir(LEASES)
    scan.seen.update(entries)
    ages: dict[str, float] = {}
    for entry in entries:
        path = f"{LEASES}/{entry}"
        if path == clock.path:
            continue
        try:
            ages[entry] = clock.now - backend.mtime(path)
        except FileNotFoundError:
            continue  # a save finished meanwhile: its manifest is read after this
    dead_gc = {
        e
        for e, age in ages.items()
        if e.endswith(GC) and (age > GC_MARKER_TTL or _same_host_dead(e.rsplit(".", 1)[0]))
    }
    others = [age for e, age in ages.items() if e.endswith(GC) and e not in dead_gc]
    for entry, age in ages.items():
        path = f"{LEASES}/{entry}"
        if age > limit or entry in dead_gc:
            delete_quietly(backend, path)
            scan.expired += 1
            continue
        if not entry.endswith(SAVE):
            continue  # another gc's marker
        try:
            raw = backend.read(path)
        except FileNotFoundError:
            continue
        if b'"published": true' in raw:
            if not any(other >= age for other in others):
                # Its manifest is published, and every gc running then has finished.
                delete_quietly(backend, path)
                continue
        elif _same_host_dead(entry.rsplit(".", 1)[0]):
            delete_quietly(backend, path)  # a save that died: nothing was published
            scan.expired += 1
            continue
        else:
            scan.live += 1
        # Read conservatively: whatever is hash-shaped in it is protected.
        scan.protected |= hashes_in(raw)
    return scan


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
