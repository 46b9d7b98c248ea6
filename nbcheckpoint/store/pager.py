"""Lazy restore, the kernel's side: large buffers come back as memory filled on first read.

A restore maps each large buffer as private anonymous memory watched by a userfaultfd
and tells the pager process (:mod:`.pagerd`) which blob fills which part. Nothing is read
until the kernel touches a page; then the pager reads that chunk, checks its hash and
copies it in, so no byte the kernel sees is unchecked. A save that meets a chunk the
kernel never touched knows its address without reading it.

Needs Linux userfaultfd with fork events (root or CAP_SYS_PTRACE, Linux 6.6+ for
poisoning); :func:`unavailable` says why not elsewhere, and the store reads as before.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import mmap
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from . import uffd
from .hashing import address_of

LAZY_MIN = 1 << 20  # smaller buffers are read at once: their reads go in parallel anyway
# Below this much to map in all, a restore reads everything: reading 64 MiB takes about as
# long as starting the pager, which would then stay resident (~25 MB) for nothing.
LAZY_TOTAL_MIN = 64 << 20
MAX_FRAME = 64 << 20
# A pager started ahead of a restore (see ``retire_unless_used``) that no restore used
# within this many seconds stops; a later restore starts another (about 50 ms).
IDLE_RETIRE = 600.0
MAX_RESTARTS = 3
REPLY_TIMEOUT = 120.0  # opening every blob of a map: a slow disk, a loaded machine
ENV_SWITCH = "NBCHECKPOINT_LAZY"
_BOOT = (
    "import json, os, sys; sys.path[:] = json.loads(os.environ['NBCHECKPOINT_PAGER_PATH']); "
    "from nbcheckpoint.store.pagerd import main; sys.exit(main(sys.argv[1:]))"
)


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    sock.sendall(struct.pack("<I", len(data)) + data)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """One message, or None when the other side has closed its end."""
    head = _recv_exactly(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack("<I", head)
    if n > MAX_FRAME:
        raise ValueError(f"a pager message of {n} bytes")
    body = _recv_exactly(sock, n)
    if body is None:
        return None
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a pager message that is not an object")
    return message


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        part = sock.recv(n - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


_PROBED: dict[int, str | None] = {}


def unavailable(backend: object) -> str | None:
    """Why a restore from ``backend`` reads every byte instead of mapping, or None.

    Examples
    --------
    >>> from nbcheckpoint.store.backends.memory import MemoryBackend
    >>> unavailable(MemoryBackend("memory://doc-pager"))
    'the store is not a local folder'
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"turned off ({ENV_SWITCH}=0)"
    if not getattr(backend, "local", False) or not hasattr(backend, "open_descriptor"):
        return "the store is not a local folder"
    pid = os.getpid()
    if pid not in _PROBED:
        try:
            os.close(uffd.open_uffd())
            _PROBED[pid] = None
        except OSError as e:
            _PROBED[pid] = e.strerror or str(e)
    return _PROBED[pid]


@dataclass(frozen=True)
class Damage:
    """A mapped chunk that failed its check: whose variables, which blob, and why."""

    checkpoint: int
    names: tuple[str, ...]
    blob: str
    why: str

    def __str__(self) -> str:
        return f"checkpoint #{self.checkpoint}: blob {self.blob[:12]} {self.why}"


def take_damage() -> list[Damage]:
    """The damage every pager of this process found since the last call."""
    found: list[Damage] = []
    for pager in list(Pager._pagers.values()):
        while True:
            try:
                found.append(pager.damaged.get_nowait())
            except queue.Empty:
                break
    return found


@dataclass
class _Region:
    ident: int
    start: int
    length: int
    offsets: list[int]
    pieces: list[tuple[str, int]]


@dataclass
class MapTicket:
    """A map asked for and not yet answered (see :meth:`Pager.map_begin`)."""

    buf: mmap.mmap
    region: _Region
    checkpoint: int
    names: tuple[str, ...]
    answer: Future[dict[str, Any] | None]


class Pager:
    """The kernel's end of lazy restore for one store folder (one per process and folder)."""

    _pagers: dict[tuple[int, str], Pager] = {}
    _guard = threading.Lock()

    @classmethod
    def for_store(cls, backend: Any) -> Pager | None:
        """The pager of this process for ``backend``'s folder, started on first use.

        None when lazy restore is unavailable (see :func:`unavailable`) or the pager
        could not start; the caller reads the data then.
        """
        if unavailable(backend) is not None:
            return None
        root = os.path.realpath(backend.root)
        key = (os.getpid(), root)
        with cls._guard:
            pager = cls._pagers.get(key)
            if pager is not None and not pager.alive():
                pager = None
            if pager is None:
                try:
                    pager = cls(root)
                except OSError:
                    return None
                cls._pagers[key] = pager
        return pager

    def __init__(self, root: str) -> None:
        self.fd = uffd.open_uffd()
        self.pid = os.getpid()
        self.root = root
        self.lock = threading.RLock()
        self.regions: dict[int, _Region] = {}
        self.starts: list[int] = []
        self.gone: list[int] = []
        self.next_id = 0
        self.restarts = 0
        self.owners: dict[int, tuple[int, tuple[str, ...]]] = {}
        self.damaged: queue.SimpleQueue[Damage] = queue.SimpleQueue()
        self.waiting: dict[int, Future[dict[str, Any] | None]] = {}  # maps by id
        self.retired = False
        try:
            self._spawn()
        except BaseException:
            os.close(self.fd)
            raise
        threading.Thread(target=self._listen, name="nbcheckpoint-pager", daemon=True).start()
        # The descriptor stays open here: were no pager left, a read of a page not yet
        # filled would wait (the kernel looks hung) instead of reading zeros.

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        paths = [os.path.abspath(p) for p in sys.path]
        env = dict(os.environ, NBCHECKPOINT_PAGER_PATH=json.dumps(paths))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(self.fd), str(theirs.fileno()), self.root],
                pass_fds=(self.fd, theirs.fileno()),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours

    def _restart(self) -> bool:
        """The pager ended while memory it serves is mapped: start another, describe it again.

        Its blobs are opened anew: one that ``gc`` removed since the restore can no longer
        be read, and reads of it stop (SIGBUS) instead of waiting for ever.
        """
        if self.pid != os.getpid() or self.restarts >= MAX_RESTARTS or self.retired:
            return False
        self._answer_all(None)  # a map waiting for the old pager's answer gets none
        with self.lock:
            self.restarts += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            try:
                self._spawn()
                for region in list(self.regions.values()):
                    checkpoint, names = self.owners.get(region.ident, (-1, ()))
                    send_frame(self.sock, {
                        "op": "map", "id": region.ident, "start": region.start,
                        "pieces": [[h, size] for h, size in region.pieces],
                        "label": f"checkpoint #{checkpoint}, {', '.join(names)}",
                        "again": True,
                    })  # fmt: skip
            except OSError:
                return False
        with contextlib.suppress(OSError):
            os.write(2, b"nbcheckpoint: the pager process ended; another one took over.\n")
        return True

    @classmethod
    def any_mapped(cls) -> bool:
        """Whether this process (or the one it was forked from) has mapped restored buffers."""
        return any(pager.regions for pager in list(cls._pagers.values()))

    def alive(self) -> bool:
        return not self.retired and self.pid == os.getpid() and self.proc.poll() is None

    def retire_unless_used(self, after: float | None = None) -> None:
        """Stop this pager ``after`` seconds (IDLE_RETIRE) from now if no map was asked of it.

        A pager started ahead of a restore the user never runs would otherwise stay
        resident (about 25 MB) for the kernel's whole life.
        """
        timer = threading.Timer(IDLE_RETIRE if after is None else after, self._retire_if_unused)
        timer.daemon = True
        timer.start()

    def _retire_if_unused(self) -> bool:
        with Pager._guard, self.lock:
            if self.retired or self.next_id or self.regions or self.pid != os.getpid():
                return False
            self.retired = True
            key = (self.pid, self.root)
            if Pager._pagers.get(key) is self:
                del Pager._pagers[key]
            # No memory was ever registered with it: nothing can wait on it.
            self.proc.terminate()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # the listener thread ends
            self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)
        return True

    def map(
        self, pieces: Sequence[tuple[str, int]], checkpoint: int, names: Sequence[str]
    ) -> mmap.mmap:
        """Memory of the pieces' total size that reads as the pieces, in order, once touched.

        ``checkpoint`` and ``names`` say whose data it is, for the reports of damage.
        Raises ``LookupError((blob, why))`` when the pager cannot open a blob (missing,
        refused, the wrong length): the same errors a read finds at once.
        """
        return self.map_end(self.map_begin(pieces, checkpoint, names))

    def map_begin(
        self, pieces: Sequence[tuple[str, int]], checkpoint: int, names: Sequence[str]
    ) -> MapTicket:
        """Ask for a map and go on; :meth:`map_end` waits for the answer.

        The pager opens and checks the blobs meanwhile: a restore asks for all its maps,
        reads its pickles, then collects the answers. Memory of a map not yet answered
        must not be touched (a read waits for the answer, or stops if the map fails).
        Raises ``OSError`` when the pager has stopped.
        """
        total = sum(size for _, size in pieces)
        buf = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        start = address_of(memoryview(buf))
        length = uffd.round_up(total)
        offsets, at = [], 0
        for _, size in pieces:
            offsets.append(at)
            at += size
        answer: Future[dict[str, Any] | None] = Future()
        with self.lock:
            if self.retired:
                buf.close()
                raise OSError("the pager process was stopped unused")
            self._flush_gone()
            ident = self.next_id
            self.next_id += 1
            region = _Region(ident, start, length, offsets, list(pieces))
            uffd.register(self.fd, start, length)
            self.waiting[ident] = answer
            request = {
                "op": "map",
                "id": ident,
                "start": start,
                "pieces": [[h, size] for h, size in pieces],
                "label": f"checkpoint #{checkpoint}, {', '.join(names)}",
            }
            try:
                send_frame(self.sock, request)
            except (OSError, ValueError) as e:
                self.waiting.pop(ident, None)
                uffd.unregister(self.fd, start, length)
                buf.close()
                raise OSError(f"the pager process stopped ({e})") from None
        return MapTicket(buf, region, checkpoint, tuple(names), answer)

    def map_end(self, ticket: MapTicket) -> mmap.mmap:
        """The mapped memory of ``ticket`` once the pager took it (see :meth:`map`)."""
        region = ticket.region
        try:
            reply = ticket.answer.result(timeout=REPLY_TIMEOUT)
        except FutureTimeout:
            reply = None
        with self.lock:
            self.waiting.pop(region.ident, None)
            if reply is None or not reply.get("ok"):
                with contextlib.suppress(OSError):
                    uffd.unregister(self.fd, region.start, region.length)
                ticket.buf.close()
                if reply is None:
                    raise OSError("the pager process stopped (no answer)")
                raise LookupError((str(reply.get("blob", "?")), str(reply.get("why", "?"))))
            self.regions[region.start] = region
            self.owners[region.ident] = (ticket.checkpoint, ticket.names)
            bisect.insort(self.starts, region.start)
        weakref.finalize(ticket.buf, self._unmapped, region.ident, region.start)
        return ticket.buf

    def _answer_all(self, reply: dict[str, Any] | None) -> None:
        for ident in list(self.waiting):
            answer = self.waiting.pop(ident, None)
            if answer is not None and not answer.done():
                answer.set_result(reply)

    def _listen(self) -> None:
        """Replies to maps go to the caller; reports of damage wait for :meth:`take_damage`."""
        while True:
            try:
                message = recv_frame(self.sock)
            except (OSError, ValueError):
                message = None
            if message is None:
                if self._restart():
                    continue
                self._answer_all(None)
                return
            if message.get("op") == "damaged":
                checkpoint, names = self.owners.get(int(message.get("id", -1)), (-1, ()))
                why = str(message.get("why", "?"))
                self.damaged.put(Damage(checkpoint, names, str(message.get("blob", "?")), why))
            else:
                answer = self.waiting.get(int(message.get("id", -1)))
                if answer is not None and not answer.done():
                    answer.set_result(message)

    def _unmapped(self, ident: int, start: int) -> None:
        """The buffer was freed: its memory is the process's again (maybe another map's)."""
        self.owners.pop(ident, None)
        if self.regions.pop(start, None) is not None:
            i = bisect.bisect_left(self.starts, start)
            if i < len(self.starts) and self.starts[i] == start:
                del self.starts[i]
        self.gone.append(ident)
        # Tell the pager now when nobody is talking to it, so it closes the blobs (their
        # disk space comes back once gc removed them); else with the next map.
        if self.lock.acquire(blocking=False):
            try:
                self._flush_gone()
            except OSError:
                pass
            finally:
                self.lock.release()

    def _flush_gone(self) -> None:
        if self.gone and self.pid == os.getpid():
            ids, self.gone = self.gone, []
            send_frame(self.sock, {"op": "unmap", "ids": ids})

    def known_hash(self, view: memoryview) -> str | None:
        """The blob address of ``view`` when it is a restored chunk no page of which was touched.

        Such memory still reads as that blob (a write or a read would have filled it), so
        a save need not read it. Works in a forked child too: it asks about its own pages.
        """
        if not self.regions:
            return None
        try:
            where = address_of(view)
        except (BufferError, TypeError, ValueError):
            return None
        i = bisect.bisect_right(self.starts, where) - 1
        if i < 0:
            return None
        region = self.regions.get(self.starts[i])
        if region is None or where >= region.start + region.length:
            return None
        k = bisect.bisect_left(region.offsets, where - region.start)
        if k >= len(region.offsets) or region.offsets[k] != where - region.start:
            return None
        h, size = region.pieces[k]
        if size != view.nbytes or not untouched(where, size):
            return None
        return h


def mapped_pieces(address: int, size: int) -> list[tuple[int, int, str | None]] | None:
    """The restored chunks under ``[address, address+size)``, or None if it is not all mapped.

    Each is ``(start, size, blob)``, clipped to the span, with ``blob`` the chunk's blob
    address while no page of the chunk was touched (its bytes are that blob's), else None.
    """
    for pager in list(Pager._pagers.values()):
        i = bisect.bisect_right(pager.starts, address) - 1
        if i < 0:
            continue
        region = pager.regions.get(pager.starts[i])
        if region is None or address + size > region.start + region.length:
            continue
        out: list[tuple[int, int, str | None]] = []
        end = address + size
        k = bisect.bisect_right(region.offsets, address - region.start) - 1
        while k < len(region.offsets):
            h, n = region.pieces[k]
            lo = region.start + region.offsets[k]
            if lo >= end:
                break
            a, b = max(lo, address), min(lo + n, end)
            if b > a:
                out.append((a, b - a, h if untouched(lo, n) else None))
            k += 1
        return out
    return None


def known_hash(view: memoryview) -> str | None:
    """:meth:`Pager.known_hash` over every pager of this process (the parent's in a child)."""
    for pager in list(Pager._pagers.values()):
        h = pager.known_hash(view)
        if h is not None:
            return h
    return None


_PAGEMAP: dict[int, int] = {}


def untouched(start: int, size: int) -> bool:
    """Whether no page of ``[start, start+size)`` was ever filled in this process.

    From ``/proc/self/pagemap``: a page neither present nor swapped out was never filled.
    """
    pid = os.getpid()
    fd = _PAGEMAP.get(pid)
    if fd is None:
        try:
            fd = _PAGEMAP[pid] = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
    first = start // uffd.PAGE
    count = uffd.round_up(start + size) // uffd.PAGE - first
    try:
        raw = os.pread(fd, count * 8, first * 8)
    except OSError:
        return False
    if len(raw) != count * 8:
        return False
    flags = (1 << 63) | (1 << 62)
    return not any(entry & flags for entry in struct.unpack(f"<{count}Q", raw))
