"""Which pages of memory were written since the last look, without reading them.

Linux (6.7 and later) can write-protect memory through a userfaultfd in "async" mode:
the first write to a protected page is let through by the kernel itself, which notes
that the page was written. ``PAGEMAP_SCAN`` on ``/proc/self/pagemap`` lists the written
pages and protects them again in the same call, so no write slips between the two. A
look costs about 0.1 ms however large the memory; the price is one minor page fault
(about 2 us) the first time each 4 KiB page is written after a look. Measured here on
1 GiB: a look 0.1 ms, against 40-65 ms to hash it; rewriting all of it in one cell 0.6 s
instead of 0.06 s (the kernel splits huge pages to track them). A cell that rewrites a
large array pays this once, not per pass, and its save then writes that array anyway.

Linux's soft-dirty bits (``/proc/self/clear_refs``) would do the same job but need
``CONFIG_MEM_SOFT_DIRTY``, which many kernels lack (:func:`soft_dirty_available` says why),
and clearing them is a separate step from reading them.
"""

from __future__ import annotations

import bisect
import ctypes
import sys
from collections.abc import Iterable
from typing import Any

from ..store.uffd import (
    SYSCALL,
    UFFDIO_API,
    UFFDIO_REGISTER,
    UFFDIO_UNREGISTER,
    USER_MODE_ONLY,
    Api,
    Range,
    Register,
)

PAGE = 4096


def buffer_address(view: memoryview) -> int:
    """The address of a buffer's first byte."""
    from ..store.hashing import address_of

    return address_of(view)


def soft_dirty_available() -> str | None:
    """None when Linux soft-dirty page tracking works in this process, else why not.

    Checked by clearing the bits, writing one page and reading its pagemap entry.
    Not used for scans (:class:`WriteTracker` is); kept to say why in reports.
    """
    try:
        page = bytearray(PAGE * 2)
        address = buffer_address(memoryview(page))
        first = (address + PAGE - 1) // PAGE * PAGE
        with open("/proc/self/clear_refs", "w") as f:
            f.write("4")
        ctypes.memset(first, 1, 1)
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(first // PAGE * 8)
            entry = int.from_bytes(f.read(8), "little")
    except OSError as e:
        return f"soft-dirty bits are not readable here ({e})"
    if not entry >> 55 & 1:
        return "the kernel does not track soft-dirty pages (CONFIG_MEM_SOFT_DIRTY is not set)"
    return None


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


class _UffdWriteProtect(ctypes.Structure):
    _fields_ = [("range", Range), ("mode", ctypes.c_uint64)]


class _PageRegion(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("categories", ctypes.c_uint64),
    ]


class _ScanArg(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in [
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        ]
    ]


_UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
_UFFD_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_WRITEPROTECT = _iowr(0xAA, 0x06, ctypes.sizeof(_UffdWriteProtect))
_REGISTER_MODE_WP = 1 << 1
_WRITEPROTECT_MODE_WP = 1 << 0
_PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(_ScanArg))
_PM_SCAN_WP_MATCHING = 1 << 0
_PM_SCAN_CHECK_WPASYNC = 1 << 1
_PAGE_IS_WRITTEN = 1 << 1
# Spans at least this large are watched for writes rather than hashed at each scan.
TRACK_MIN = 8 << 20


class WriteTracker:
    """Which pages of private anonymous memory were written since the last look.

    Only memory that the kernel lets us register is watched: private anonymous memory
    (NumPy and pandas buffers). Memory mapped from a file or shared with other processes,
    whose pages others can change, cannot be registered and is hashed instead. A span
    whose memory was unmapped, remapped or never registered is reported as changed.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._uffd = -1
        self._pagemap = -1
        self._libc: Any = None
        self._tokens: dict[tuple[int, int], int] = {}
        # A copy of a span's own bytes in each of its edge pages (see ``tokens``).
        self._edges: dict[tuple[tuple[int, int], int], bytes] = {}
        self._unwatchable: set[tuple[int, int]] = set()
        self._next = 0
        self._vec = (_PageRegion * 256)()
        self._setup()

    def _setup(self) -> None:
        import os
        import platform

        if os.environ.get("NBCHECKPOINT_NO_WRITE_TRACKING"):
            self.reason = "NBCHECKPOINT_NO_WRITE_TRACKING is set"
            return
        number = SYSCALL.get(platform.machine())
        if not sys.platform.startswith("linux") or number is None:
            self.reason = "write tracking needs Linux on x86_64 or aarch64"
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
            libc.ioctl.restype = ctypes.c_int
            libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            libc.memcmp.restype = ctypes.c_int
        except (OSError, AttributeError) as e:  # pragma: no cover - no C library
            self.reason = f"no C library ({e})"
            return
        fd = int(libc.syscall(number, os.O_CLOEXEC | os.O_NONBLOCK | USER_MODE_ONLY))
        if fd < 0:
            self.reason = f"userfaultfd is not allowed here ({os.strerror(ctypes.get_errno())})"
            return
        api = Api(0xAA, _UFFD_FEATURE_WP_ASYNC | _UFFD_FEATURE_WP_UNPOPULATED, 0)
        if libc.ioctl(fd, UFFDIO_API, ctypes.byref(api)) != 0:
            os.close(fd)
            self.reason = "the kernel has no asynchronous write-protect (Linux 6.7 or later)"
            return
        try:
            pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(fd)
            self.reason = f"/proc/self/pagemap is not readable ({e})"
            return
        self._libc, self._uffd, self._pagemap = libc, fd, pagemap
        if not self._probe():
            os.close(fd)
            os.close(pagemap)
            self._uffd = self._pagemap = -1
            self.reason = "PAGEMAP_SCAN did not report a page written after protecting it"

    def _probe(self) -> bool:
        """Protect a fresh mapping, write one page, and see it reported: then it works."""
        import mmap

        area = mmap.mmap(-1, PAGE * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            address = buffer_address(memoryview(area))
            if not self._protect(address, address + PAGE * 4):
                return False
            quiet = self._written(address, address + PAGE * 4)
            area[PAGE * 2] = 1
            seen = self._written(address, address + PAGE * 4)
            return quiet == [] and seen == [(address + PAGE * 2, address + PAGE * 3)]
        finally:
            area.close()

    @property
    def active(self) -> bool:
        return self._uffd >= 0

    def _protect(self, start: int, end: int) -> bool:
        if not _private_anonymous(start, end):
            return False  # others can change these pages without writing through ours
        register = Register(Range(start, end - start), _REGISTER_MODE_WP, 0)
        if self._libc.ioctl(self._uffd, UFFDIO_REGISTER, ctypes.byref(register)) != 0:
            return False
        protect = _UffdWriteProtect(Range(start, end - start), _WRITEPROTECT_MODE_WP)
        return bool(self._libc.ioctl(self._uffd, _UFFDIO_WRITEPROTECT, ctypes.byref(protect)) == 0)

    def _written(self, start: int, end: int) -> list[tuple[int, int]] | None:
        """Written page ranges in ``[start, end)``, protected again; None when some of
        it is not registered for asynchronous write-protect (nothing is known)."""
        found: list[tuple[int, int]] = []
        vec = self._vec
        while start < end:
            arg = _ScanArg(
                ctypes.sizeof(_ScanArg),
                _PM_SCAN_WP_MATCHING | _PM_SCAN_CHECK_WPASYNC,
                start,
                end,
                0,
                ctypes.addressof(vec),
                len(vec),
                0,
                0,
                _PAGE_IS_WRITTEN,
                0,
                _PAGE_IS_WRITTEN,
            )
            n = self._libc.ioctl(self._pagemap, _PAGEMAP_SCAN, ctypes.byref(arg))
            if n < 0:
                return None
            found.extend((vec[i].start, vec[i].end) for i in range(n))
            if arg.walk_end <= start:
                return None  # no progress: do not trust it
            start = arg.walk_end
        return found

    def tokens(self, spans: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int | None]:
        """For each span ``(address, size)``: a number that stays the same while none of
        its bytes is written, or None when its memory cannot be watched (hash it).

        Pages are the kernel's unit, bytes are ours: a span that does not start or end on
        a page boundary shares its first or last page with whatever lies beside it (on the
        heap, other objects, written all the time). Such a page, unless other spans asked
        about cover the rest of it, is an *edge*: its written mark says nothing about the
        span. The span's own bytes there (at most a page at each end) are compared with a
        copy kept from the last look instead.
        """
        out: dict[tuple[int, int], int | None] = {}
        # Page-aligned, merged: each page is looked at once, since a look protects it again.
        intervals = _page_hulls(spans)
        tokens: dict[tuple[int, int], int] = {}
        edges: dict[tuple[tuple[int, int], int], bytes] = {}
        unwatchable: set[tuple[int, int]] = set()
        for lo, hi, members in intervals:
            # Memory found not to be private anonymous is hashed; asked again only
            # after a scan that did not need it (reading /proc/self/maps takes ~1 ms).
            written = None if (lo, hi) in self._unwatchable else self._written(lo, hi)
            if written is None:
                # Not watched yet (or remapped since): watch it from now on; changed.
                trackable = (lo, hi) not in self._unwatchable and self._protect(lo, hi)
                for span in members:
                    if trackable:
                        tokens[span] = self._fresh()
                    else:
                        out[span] = None
                if not trackable:
                    unwatchable.add((lo, hi))
                    continue
                written = []
            exposed = _edge_pages(members)
            # Written ranges come sorted and apart: one binary search per range asked,
            # since a buffer's chunks are spans too (thousands at 10 GiB, against as many
            # ranges after scattered writes).
            written.sort()
            ends = [w_hi for _, w_hi in written]
            for span in members:
                start, end = span[0], span[0] + span[1]
                own = {start // PAGE * PAGE, max(start, end - 1) // PAGE * PAGE} & exposed
                inner_lo = start // PAGE * PAGE + PAGE if start // PAGE * PAGE in own else start
                inner_hi = (end - 1) // PAGE * PAGE if (end - 1) // PAGE * PAGE in own else end
                changed = span not in self._tokens or (
                    inner_lo < inner_hi and _hit(written, ends, inner_lo, inner_hi)
                )
                for page in sorted(own):
                    lo_byte, hi_byte = max(start, page), min(end, page + PAGE)
                    before = self._edges.get((span, page))
                    if before is not None and self._same(lo_byte, before):
                        edges[span, page] = before
                    else:
                        edges[span, page] = ctypes.string_at(lo_byte, hi_byte - lo_byte)
                        changed = True
                if span not in tokens:
                    tokens[span] = self._fresh() if changed else self._tokens[span]
        self._tokens = tokens  # spans not asked about now start afresh when asked again
        self._edges = edges
        self._unwatchable = unwatchable
        out.update(tokens)
        return out

    def release(self, spans: Iterable[tuple[int, int]]) -> None:
        """Stop watching the pages of ``spans``: writes to them no longer fault.

        While watched, a page that is written after a look costs a page fault, and a huge
        page is split to be watched in pieces (which makes every later ``fork`` slower).
        A span asked about again after this is watched afresh, and reported changed once.
        """
        if not self.active:
            return
        for lo, hi, _ in _page_hulls(spans):
            # An error (unmapped since, never registered) leaves nothing to release.
            self._libc.ioctl(self._uffd, UFFDIO_UNREGISTER, ctypes.byref(Range(lo, hi - lo)))
            for span in [s for s in self._tokens if lo <= s[0] < hi]:
                del self._tokens[span]

    def _same(self, address: int, copy: bytes) -> bool:
        """Whether memory at ``address`` holds ``copy``'s bytes. Compared in place: an
        allocation here could land beside the span and write the very page looked at."""
        return bool(self._libc.memcmp(address, copy, len(copy)) == 0)

    def _fresh(self) -> int:
        self._next += 1
        return self._next


def _page_hulls(
    spans: Iterable[tuple[int, int]],
) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """The spans' pages as merged page-aligned ranges ``(lo, hi, the spans in it)``."""
    hulls: list[list[Any]] = []
    for span in sorted(set(spans)):
        lo = span[0] // PAGE * PAGE
        hi = -(-(span[0] + span[1]) // PAGE) * PAGE
        if hulls and lo <= hulls[-1][1]:
            hulls[-1][1] = max(hulls[-1][1], hi)
            hulls[-1][2].append(span)
        else:
            hulls.append([lo, hi, [span]])
    return [(lo, hi, members) for lo, hi, members in hulls]


def _hit(written: list[tuple[int, int]], ends: list[int], start: int, end: int) -> bool:
    """Whether a range of ``written`` (sorted, apart; ``ends`` their ends) meets
    ``[start, end)``."""
    first = bisect.bisect_right(ends, start)  # the first range ending past it
    return first < len(written) and written[first][0] < end


def _edge_pages(spans: list[tuple[int, int]]) -> set[int]:
    """The pages that spans start or end in and that the spans together do not cover."""
    covered: list[list[int]] = []
    for address, size in sorted(spans):
        if covered and address <= covered[-1][1]:
            covered[-1][1] = max(covered[-1][1], address + size)
        else:
            covered.append([address, address + size])
    exposed = set()
    for lo, hi in covered:
        if lo % PAGE:
            exposed.add(lo // PAGE * PAGE)
        if hi % PAGE:
            exposed.add(hi // PAGE * PAGE)
    return exposed


def _private_anonymous(start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies wholly in private anonymous mappings (``/proc/self/maps``).

    A file mapping or shared memory changes when the file or another process writes it,
    which no write-protect of our own page tables sees.
    """
    try:
        with open("/proc/self/maps", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    covered = start
    for line in lines:
        fields = line.split(None, 5)
        lo_text, _, hi_text = fields[0].partition(b"-")
        lo, hi = int(lo_text, 16), int(hi_text, 16)
        if hi <= start or lo >= end:
            continue
        path = fields[5].strip() if len(fields) > 5 else b""
        private = fields[1][3:4] == b"p"
        anonymous = fields[4] == b"0" and (not path or path == b"[heap]")
        if lo > covered or not (private and anonymous):
            return False
        covered = max(covered, hi)
    return covered >= end


_TRACKER: WriteTracker | None = None


def tracker() -> WriteTracker:
    """The process's write tracker (one userfaultfd for all scans)."""
    global _TRACKER
    if _TRACKER is None:
        _TRACKER = WriteTracker()
    return _TRACKER


# ----------------------------------------------------- huge pages after a fork
HUGE = 2 << 20
_MADV_COLLAPSE = 25  # Linux 6.1 and later


def collapse_huge_pages(spans: Iterable[tuple[int, int]]) -> int:
    """Ask Linux to map ``spans`` (address, size) with huge pages again; returns the bytes
    it was asked about without an error.

    A fork snapshot shares the kernel's memory with its child copy-on-write, and each page
    the cell writes while the child lives is copied, which splits the transparent huge
    page it lay in into 512 small ones. They stay split after the child exits, and every
    later ``fork`` copies 512 page-table entries for each of them instead of one: measured
    here, a bare fork of a 4 GiB process went from 3 ms to 29 ms once writes had split most
    of its arrays, and back to 3 ms after ``MADV_COLLAPSE`` (0.85 s to copy 3 GB back into
    huge pages, on a thread, the GIL released). Call it only once the child has exited:
    collapsing memory still shared with the child would copy it.

    Only the 2 MiB-aligned interior of each span is asked about (the rest cannot be a huge
    page, and may lie in a neighbouring mapping). Memory already mapped huge costs almost
    nothing; memory unmapped meanwhile, or a kernel without ``MADV_COLLAPSE``, gives an
    error that is ignored: this only changes how memory is mapped, never what it holds.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):  # pragma: no cover - no C library
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    done = 0
    for address, size in spans:
        lo = -(-address // HUGE) * HUGE
        hi = (address + size) // HUGE * HUGE
        if hi > lo and madvise(lo, hi - lo, _MADV_COLLAPSE) == 0:
            done += hi - lo
    return done
