"""The pager process: fills a restored kernel's lazily mapped buffers, each chunk checked first.

Started by :class:`.pager.Pager` with the kernel's userfaultfd and one end of a socket.
The kernel says which memory holds which blobs (``map``) and when it let go of some
(``unmap``). On a page fault this process reads the whole chunk from the file it opened at
map time (so ``gc`` or ``rm`` of the store cannot take it away), decompresses it, checks
its BLAKE3 hash, and only then copies it in. A chunk that fails its check is poisoned:
the read stops with SIGBUS rather than see wrong bytes, and the reason is written to the
kernel's error stream.

A forked child of the kernel (a snapshot writer) arrives as a fork event with its own
userfaultfd and is served the same way. This process ends when the kernel and every
child it served are gone.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import mmap
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreEntryRefused, StoreError
from . import uffd
from .backends.base import set_aside_name
from .backends.local import LocalBackend
from .blobs import (
    BLOB_MAGIC,
    CODEC_RAW,
    HEADER_LEN,
    decode_blob,
    missing_why,
)
from .blobs import BlobError as _BlobError
from .blobs import blob_limit as _blob_limit
from .blobs import blob_path as _blob_path
from .pager import recv_frame, send_frame

PROBE_EVERY = 2.0
IDLE = 0.5  # seconds without a fault (or a new map) before the background check goes on
MAX_AHEAD = 16  # pieces read ahead of an in-order fault, at most (64 MiB of 4 MiB chunks)
WORKERS = min(4, os.cpu_count() or 2)  # threads reading, checking and copying chunks


class _At:
    """A file read from its start with ``pread``: shared descriptors keep no position."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.pos, self.cap = fd, 0, cap

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(view.nbytes, self.cap - self.pos)
        n = os.preadv(self.fd, [view[:want]], self.pos) if want > 0 else 0
        self.pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.cap - self.pos
        data = os.pread(self.fd, max(0, min(size, self.cap - self.pos)), self.pos)
        self.pos += len(data)
        return data


@dataclass
class Blob:
    h: str
    size: int
    fd: int
    users: int = 0
    damaged: str | None = None  # why, once a check failed
    checked: bool = False  # passed the background check (reads still check again)
    set_aside: bool = False  # (tried to) move it out of the store, see Pagerd.set_aside


@dataclass
class Region:
    ident: int
    start: int
    length: int
    offsets: list[int]
    blobs: list[Blob]
    label: str
    spaces: int = 0
    served: set[int] = field(default_factory=set)  # pieces copied into the kernel


@dataclass
class Space:
    """One watched process: the kernel, or a forked child of it."""

    fd: int
    regions: dict[int, Region] = field(default_factory=dict)
    starts: list[tuple[int, int]] = field(default_factory=list)  # (start, ident), sorted
    served: set[tuple[int, int]] = field(default_factory=set)  # (region, piece) copied in
    pending: set[tuple[int, int]] = field(default_factory=set)  # given to a worker
    window: dict[int, int] = field(default_factory=dict)  # region -> read-ahead, in pieces

    def add(self, region: Region) -> None:
        self.regions[region.ident] = region
        region.spaces += 1
        bisect.insort(self.starts, (region.start, region.ident))

    def overlapping(self, start: int, end: int) -> list[int]:
        return [
            ident
            for at, ident in self.starts
            if at < end and start < at + self.regions[ident].length
        ]

    def find(self, address: int) -> Region | None:
        i = bisect.bisect_right(self.starts, (address, 1 << 62)) - 1
        if i < 0:
            return None
        region = self.regions[self.starts[i][1]]
        return region if address < region.start + region.length else None


class Checker:
    """Checks every mapped chunk once, from the last, on a low-priority thread, when reads pause.

    A chunk found damaged here is reported at once (the kernel can then tell the user and
    take the variables away before anything reads them) and poisoned when read. The
    checks of chunks as they are read stay: the file may change after this one.
    """

    def __init__(self, pager: Pagerd) -> None:
        self.pager = pager
        self.todo: collections.deque[tuple[Region, int]] = collections.deque()
        self.ready = threading.Condition()
        threading.Thread(target=self.run, name="nbcheckpoint-check", daemon=True).start()

    def add(self, region: Region) -> None:
        with self.ready:
            self.todo.extend((region, i) for i in reversed(range(len(region.blobs))))
            self.ready.notify()

    def run(self) -> None:
        with contextlib.suppress(OSError):  # lower this thread's priority only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        buffer = bytearray(0)
        while True:
            with self.ready:
                while not self.todo:
                    self.ready.wait()
                region, i = self.todo.pop()
            # While the kernel is reading, its reads check what they load: checking it here
            # too would only take the CPU from them.
            while (quiet := time.monotonic() - self.pager.last_fault) < IDLE:
                time.sleep(IDLE - quiet)
            blob = region.blobs[i]
            if i in region.served or blob.checked or blob.damaged or region.spaces == 0:
                continue
            if len(buffer) < blob.size:
                buffer = bytearray(blob.size)
            try:
                with self.pager.files:
                    if blob.fd < 0:
                        continue  # let go of meanwhile
                    at = _At(os.dup(blob.fd), _blob_limit(blob.size) + 1)
                try:
                    decode_blob(at, blob.h, blob.size, memoryview(buffer)[: blob.size])
                finally:
                    os.close(at.fd)
                blob.checked = True
            except _BlobError as e:
                blob.damaged = e.why
                self.pager.tell(region, blob, e.why, read=False)
                self.pager.set_aside(blob)
            except OSError:
                continue


class Pagerd:
    def __init__(self, fd: int, sock: socket.socket, root: str) -> None:
        self.backend = LocalBackend(root)
        self.sock = sock
        self.main = Space(fd)
        self.spaces: dict[int, Space] = {fd: self.main}
        self.blobs: dict[str, Blob] = {}
        self.kernel_gone = False
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="nbcheckpoint-fill")
        self.last_probe = time.monotonic()
        self.last_fault = 0.0
        self.files = threading.Lock()  # blob descriptors: closed here, read by the checker
        self.sending = threading.Lock()
        self.checker = Checker(self)

    # ---------------------------------------------------------------- the kernel's requests
    def on_request(self) -> None:
        try:
            request = recv_frame(self.sock)
        except (OSError, ValueError):
            request = None
        if request is None:
            self.kernel_gone = True
            return
        if request.get("op") == "map" and request.get("again"):
            self.map(request, again=True)  # for a pager that ended: nobody waits for it
        elif request.get("op") == "map":
            reply: dict[str, Any] = {"id": request.get("id")}
            try:
                self.map(request)
                reply["ok"] = True
            except _BlobError as e:
                reply.update(blob=e.h, why=e.why)
            self.send(reply)
        elif request.get("op") == "unmap":
            for ident in request.get("ids", []):
                self.drop(self.main, int(ident))

    def map(self, request: dict[str, Any], again: bool = False) -> None:
        """Take a region to serve; ``again``: one another pager served, whose blobs may be gone.

        A blob that cannot be opened fails the map, unless ``again``: then its reads stop.
        """
        blobs: list[Blob] = []
        offsets: list[int] = []
        at = 0
        try:
            with self.backend.opener() as open_file:
                for h, size in request["pieces"]:
                    try:
                        blobs.append(self.open_blob(str(h), int(size), open_file))
                    except _BlobError as e:
                        if not again:
                            raise
                        blobs.append(Blob(e.h, int(size), -1, damaged=e.why))
                    offsets.append(at)
                    at += int(size)
        except BaseException:
            for blob in blobs:
                self.release(blob)
            raise
        region = Region(
            int(request["id"]), int(request["start"]), uffd.round_up(at), offsets, blobs,
            str(request.get("label", "")),
        )  # fmt: skip
        # A region of the same place that the kernel freed (its unmap may come later).
        for old in self.main.overlapping(region.start, region.start + region.length):
            self.drop(self.main, old)
        self.main.add(region)
        # The background check waits as after a read: the restore that asked for this map
        # is still unpickling, and a check now (hashing, decompressing, importing NumPy
        # for shuffled chunks) would take the CPU from it.
        self.last_fault = time.monotonic()
        self.checker.add(region)
        for blob in blobs:
            if blob.damaged:  # (a map again) gone since the restore: the kernel hears now
                self.tell(region, blob, blob.damaged, read=False)

    def open_blob(
        self, h: str, size: int, open_file: Callable[[str], tuple[int, int]] | None = None
    ) -> Blob:
        blob = self.blobs.get(h)
        if blob is not None and blob.damaged:  # known bad: a map of it fails at once
            raise _BlobError(h, f"was found damaged when read ({blob.damaged})")
        if blob is None:
            try:
                fd, on_disk = (open_file or self.backend.open_descriptor)(_blob_path(h))
            except FileNotFoundError:
                raise _BlobError(h, missing_why(self.backend, h)) from None
            except StoreEntryRefused as e:
                raise _BlobError(h, f"was refused: {e.reason}") from None
            try:
                header = os.pread(fd, HEADER_LEN, 0)
                if len(header) != HEADER_LEN or header[:-1] != BLOB_MAGIC:
                    raise _BlobError(h, "its header is damaged")
                if on_disk > _blob_limit(size) or (
                    header[-1] == CODEC_RAW and on_disk != HEADER_LEN + size
                ):
                    raise _BlobError(h, "it has the wrong length (truncated or extended)")
            except BaseException:
                os.close(fd)
                raise
            blob = self.blobs[h] = Blob(h, size, fd)
        blob.users += 1
        return blob

    def set_aside(self, blob: Blob) -> None:
        """Move a blob whose bytes failed their check out of the store's blobs, into tmp/.

        Read again first, from the file the store now has: only a blob that fails twice
        goes (a flaky read, or a file replaced by a good one since, stays). Then the next
        restore that needs it fails at once, saying why, instead of mapping it again (a
        lazy read that fails stops the kernel). Once per blob; a store this process may
        not write to keeps it.
        """
        if blob.set_aside:
            return
        blob.set_aside = True
        try:
            self._set_aside(blob)
        except Exception as e:  # never stop serving reads for this
            with contextlib.suppress(OSError):
                os.write(2, f"nbcheckpoint: blob {blob.h[:12]} not set aside ({e!r}).\n".encode())

    def _set_aside(self, blob: Blob) -> None:
        path = _blob_path(blob.h)
        try:
            fd, _ = self.backend.open_descriptor(path)
        except (OSError, StoreEntryRefused):
            return  # gone already, or not a file of the store's
        try:
            decode_blob(
                _At(fd, _blob_limit(blob.size) + 1), blob.h, blob.size, bytearray(blob.size),
                threads=False,
            )  # fmt: skip
            return  # it reads well now
        except _BlobError:
            pass
        except OSError:
            return
        finally:
            os.close(fd)
        try:
            if not self.backend.set_aside(path, set_aside_name(blob.h)):
                return
            note = f"blob {blob.h[:12]} failed its check twice: set aside in the store's tmp/"
        except (OSError, StoreError) as e:  # read-only, or tmp/ holds something else there
            note = f"blob {blob.h[:12]} failed its check; it could not be set aside ({e})"
        with contextlib.suppress(OSError):
            os.write(2, f"nbcheckpoint: {note}.\n".encode())

    def release(self, blob: Blob) -> None:
        if blob.fd < 0:
            return  # never opened (see map)
        blob.users -= 1
        if blob.users <= 0:
            self.blobs.pop(blob.h, None)
            with self.files:
                os.close(blob.fd)
                blob.fd = -1

    def drop(self, space: Space, ident: int) -> None:
        region = space.regions.pop(ident, None)
        if region is None:
            return
        space.starts.remove((region.start, ident))
        region.spaces -= 1
        if region.spaces == 0:
            for blob in region.blobs:
                self.release(blob)

    # ---------------------------------------------------------------- faults and forks
    def on_events(self, space: Space) -> None:
        while True:
            try:
                data = os.read(space.fd, uffd.MSG_SIZE * 16)
            except BlockingIOError:
                return
            except OSError:
                self.forget(space)
                return
            if not data:
                self.forget(space)
                return
            for at in range(0, len(data) - uffd.MSG_SIZE + 1, uffd.MSG_SIZE):
                event, value = uffd.parse(data[at : at + uffd.MSG_SIZE])
                if event == uffd.EVENT_PAGEFAULT:
                    self.fault(space, value)
                elif event == uffd.EVENT_FORK:
                    child = Space(value)
                    os.set_blocking(value, False)
                    for region in space.regions.values():
                        child.add(region)
                    # What the parent had filled, the child has too (copy-on-write).
                    child.served = set(space.served)
                    self.spaces[value] = child

    def fault(self, space: Space, address: int) -> None:
        self.last_fault = time.monotonic()
        region = space.find(address)
        if region is None and space is self.main:
            self.read_pending_requests()
            region = space.find(address)
        if region is None:
            # Memory registered but never described: no bytes can be vouched for.
            self.say(f"a read at {address:#x} that no restored buffer covers")
            uffd.poison(space.fd, address & ~(uffd.PAGE - 1), uffd.PAGE)
            return
        i = bisect.bisect_right(region.offsets, address - region.start) - 1
        self.fill(space, region, i, faulted=True)
        # Read ahead when the reads go in order, as a file system does: chunks copied in
        # before they are touched spare the reader a wait for each. The window doubles
        # while the reads stay in order; a read elsewhere loads its own chunk only.
        before = (region.ident, i - 1)
        if i == 0 or before in space.served or before in space.pending:
            window = min(2 * space.window.get(region.ident, 1), MAX_AHEAD)
            for j in range(i + 1, min(i + 1 + window, len(region.blobs))):
                self.fill(space, region, j)
        else:
            window = 1
        space.window[region.ident] = window

    def fill(self, space: Space, region: Region, i: int, faulted: bool = False) -> None:
        """Have a worker read, check and copy in piece ``i`` unless it is there or on its way."""
        key = (region.ident, i)
        if key in space.served:
            if faulted:  # the fault was queued before the copy: make sure it is woken
                dst, length = self.span(region, i)
                uffd.wake(space.fd, dst, length)
            return
        if key in space.pending:
            return  # its worker's copy wakes the reader
        space.pending.add(key)
        blob = region.blobs[i]
        with self.files:
            blob_fd = os.dup(blob.fd) if blob.fd >= 0 else -1
        self.pool.submit(self.copy_piece, space, os.dup(space.fd), region, i, blob_fd)

    @staticmethod
    def span(region: Region, i: int) -> tuple[int, int]:
        dst = region.start + region.offsets[i]
        return dst, min(uffd.round_up(region.blobs[i].size), region.start + region.length - dst)

    def copy_piece(self, space: Space, fd: int, region: Region, i: int, blob_fd: int) -> None:
        """On a worker: the piece's blob read, checked, and copied into the process (or poisoned)."""
        blob = region.blobs[i]
        dst, length = self.span(region, i)
        try:
            buffer, at = self.buffer_of(length)
            out = memoryview(buffer)[: blob.size]
            try:
                if blob.damaged:
                    raise _BlobError(blob.h, blob.damaged)
                if blob_fd < 0:
                    raise OSError(errno.EBADF, "the blob was let go")
                at_ = _At(blob_fd, _blob_limit(blob.size) + 1)
                decode_blob(at_, blob.h, blob.size, out, threads=False)
            finally:
                out.release()
            if length > blob.size:  # the last page's tail: the zeros a fresh map has
                buffer[blob.size : length] = bytes(length - blob.size)
            uffd.copy(fd, dst, at, length)
            space.served.add((region.ident, i))
            if space is self.main:
                region.served.add(i)
        except BaseException as e:  # never leave a reader waiting: stop its read instead
            why = e.why if isinstance(e, _BlobError) else f"could not be read ({e})"
            blob.damaged = blob.damaged or why
            self.tell(region, blob, why, read=True)
            with contextlib.suppress(OSError):
                uffd.poison(fd, dst, length)
            if isinstance(e, _BlobError):
                self.set_aside(blob)
        finally:
            space.pending.discard((region.ident, i))
            os.close(fd)
            if blob_fd >= 0:
                os.close(blob_fd)

    def buffer_of(self, length: int) -> tuple[mmap.mmap, int]:
        """This worker's buffer, of at least ``length`` bytes, and its address."""
        mine = getattr(self.local, "buffer", None)
        if mine is None or len(mine) < length:
            mine = mmap.mmap(-1, max(length, 8 << 20))
            self.local.buffer, self.local.at = mine, _address(mine)
        return mine, self.local.at

    def read_pending_requests(self) -> None:
        while not self.kernel_gone and select.select([self.sock], [], [], 0)[0]:
            self.on_request()

    def tell(self, region: Region, blob: Blob, why: str, *, read: bool) -> None:
        """A chunk failed its check: the kernel hears which region, blob and why."""
        if read:
            self.say(f"{region.label}: blob {blob.h[:12]} {why}")
        self.send({"op": "damaged", "id": region.ident, "blob": blob.h, "why": why})

    def say(self, what: str) -> None:
        """The reason a read of restored data was stopped, where the kernel's errors go."""
        text = (
            f"nbcheckpoint: restored data failed its check when first read ({what}); the "
            "read was stopped (SIGBUS) so no wrong value is used. Restore another checkpoint.\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, text.encode())

    def send(self, message: dict[str, Any]) -> None:
        if self.kernel_gone:
            return
        with self.sending, contextlib.suppress(OSError):
            send_frame(self.sock, message)

    def forget(self, space: Space) -> None:
        for ident in list(space.regions):
            self.drop(space, ident)
        self.spaces.pop(space.fd, None)
        with contextlib.suppress(OSError):
            os.close(space.fd)

    def probe(self) -> None:
        """Let go of the processes that are gone (no event says so)."""
        self.last_probe = time.monotonic()
        for space in list(self.spaces.values()):
            if (space is not self.main or self.kernel_gone) and not uffd.alive(space.fd):
                self.forget(space)

    def run(self) -> None:
        poller = select.poll()
        watched: set[int] = set()
        while self.spaces:
            fds = set(self.spaces) | ({self.sock.fileno()} if not self.kernel_gone else set())
            for fd in watched - fds:
                poller.unregister(fd)
            for fd in fds - watched:
                poller.register(fd, select.POLLIN)
            watched = fds
            try:
                ready = poller.poll(PROBE_EVERY * 1000)
            except InterruptedError:
                continue
            for fd, _ in ready:
                try:
                    if fd == self.sock.fileno():
                        # (A fault may have read the request already: see fault.)
                        self.read_pending_requests()
                    elif fd in self.spaces:
                        self.on_events(self.spaces[fd])
                except Exception as e:  # the kernel's reads depend on this loop going on
                    with contextlib.suppress(OSError):
                        os.write(2, f"nbcheckpoint pager: {type(e).__name__}: {e}\n".encode())
            if time.monotonic() - self.last_probe >= PROBE_EVERY:
                self.probe()


def _address(buffer: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def main(argv: list[str]) -> int:
    fd, sock_fd, root = int(argv[0]), int(argv[1]), argv[2]
    # The kernel's interrupt (sent to its process group) is not for this process: it
    # ends when the processes it serves are gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_blocking(fd, False)
    sock = socket.socket(fileno=sock_fd)
    try:
        Pagerd(fd, sock, root).run()
    except OSError as e:
        if e.errno != errno.EBADF:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
