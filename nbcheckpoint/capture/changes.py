"""Which variables changed since the last look: a scan of the namespace by fingerprint.

A cell can change a variable its text never names (a method appending to a global,
``globals()['z'] = 5``, ``exec``, a helper mutating an object reached from another
variable, a cell that raised half way, ``%time``). So auto mode does not trust the
cell's text: after each cell it fingerprints every variable and compares with the last
scan.

A fingerprint is what a save would store, without the large bytes: the variable's
pickle (the C pickler, protocol 5), with each buffer of 1 MiB or more (NumPy arrays,
pandas blocks, bytearrays) replaced by the span of memory it occupies. An array is
fingerprinted by its dtype, shape, strides and the span its elements cover, so views
and arrays that share memory see each other's edits. Immutable scalars and strings are
fingerprinted by value.

The bytes of a span are watched, not read: spans of 8 MiB or more in private anonymous
memory are write-protected through a userfaultfd (:class:`WriteTracker`), and a scan
asks the kernel which of their pages were written since the last one. Other spans are
hashed (xxh3, on worker threads for the large ones). Linux's soft-dirty bits would do
the same job but need ``CONFIG_MEM_SOFT_DIRTY``, which many kernels lack
(:func:`soft_dirty_available` says why).

Limits: the scan pickles every variable's in-band part at each look, so its cost grows
with the number of small Python objects (a list of a million floats: ~45 ms here); a
variable the C pickler cannot fingerprint (a lock inside, an open file) counts as
changed at every scan, unless the store could not save it either. Memory written by a
device or another process without going through this process's page tables (RDMA,
pinned buffers) is seen only where it is hashed.
"""

from __future__ import annotations

import ctypes
import io
import pickle
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from ..store.hashing import THREADS, _hash_pool, fast_hash

# Buffers at least this large are hashed on worker threads, and in pieces of REGION_PIECE.
LARGE = 1 << 20
REGION_PIECE = 64 << 20
SMALL_PICKLE = 256
_IMMUTABLE = (int, float, complex, bool, type(None), str, bytes)
PAGE = 4096

Fingerprint = tuple[Any, ...]


class _Region:
    """A span of memory ``[address, address + size)`` whose bytes a fingerprint covers."""

    __slots__ = ("address", "keep", "size")

    def __init__(self, address: int, size: int, keep: object) -> None:
        self.address = address
        self.size = size
        self.keep = keep  # the object owning the memory, alive while the scan reads it


def _scalar(value: Any) -> Fingerprint:
    """An immutable value's fingerprint, by value: floats by their bits (``0.0 != -0.0``),
    strings and bytes by their (cached) hash, so that no old value is kept alive."""
    kind = type(value)
    if kind is float:
        return (kind, value.hex())
    if kind is complex:
        return (kind, value.real.hex(), value.imag.hex())
    if kind in (str, bytes):
        return (kind, len(value), hash(value))
    return (kind, value)  # int (compared exactly, not by hash), bool, None


def _region_hash(address: int, size: int) -> str:
    if size == 0:
        return fast_hash(memoryview(b""))
    view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
    return fast_hash(view)


def _nd_marker(*_args: object) -> None:  # pragma: no cover - never unpickled
    """Stands in for an array in a fingerprint pickle; fingerprints are never loaded."""


def _obj_marker(*_args: object) -> None:  # pragma: no cover - never unpickled
    """Stands in for a function, class or descriptor in a fingerprint pickle."""


def _buffer_address(view: memoryview) -> int:
    from ..store.hashing import _PyBuffer

    buf = _PyBuffer()
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.restype = ctypes.c_int
    get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    release = ctypes.pythonapi.PyBuffer_Release
    release.restype = None
    release.argtypes = [ctypes.POINTER(_PyBuffer)]
    get(view, ctypes.byref(buf), 0)
    try:
        return int(buf.buf or 0)
    finally:
        release(ctypes.byref(buf))


class _Pickler(pickle.Pickler):
    """The C pickler with out-of-band large buffers, and arrays, functions and classes
    reduced to what identifies their content (never loaded back)."""

    def __init__(self, file: io.BytesIO, regions: list[_Region]) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self.regions = regions
        numpy = sys.modules.get("numpy")
        self._ndarray = numpy.ndarray if numpy is not None else None
        self._uint8 = numpy.uint8 if numpy is not None else None

    def _buffer(self, buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()  # a non-contiguous buffer raises: the caller marks the variable volatile
        if raw.nbytes < LARGE:
            return True  # small: in band, hashed with the payload
        self.regions.append(_Region(_buffer_address(raw), raw.nbytes, buf))
        return False

    def _region(self, address: int, size: int, keep: object) -> Any:
        """A large span: recorded for hashing, stands in the pickle as its index."""
        self.regions.append(_Region(address, size, keep))
        return len(self.regions) - 1

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is self._ndarray:
            return self._reduce_array(obj)
        if kind is types.ModuleType:
            return _obj_marker, ("module", obj.__name__)
        if kind is bytearray and len(obj) >= LARGE:
            return _obj_marker, (
                "bytearray",
                self._region(_buffer_address(memoryview(obj)), len(obj), obj),
            )
        if kind is types.FunctionType and _by_value(obj):
            cells = tuple(_cell_content(c) for c in obj.__closure__ or ())
            return _obj_marker, (
                "function",
                obj.__module__,
                obj.__qualname__,
                hash(obj.__code__),
                obj.__defaults__,
                obj.__kwdefaults__,
                cells,
                obj.__dict__,
            )
        if isinstance(obj, type) and _by_value(obj):
            attrs = {
                k: _describe_attr(v)
                for k, v in vars(obj).items()
                if k not in ("__dict__", "__weakref__")
            }
            bases = tuple(obj.__bases__)
            return _obj_marker, ("class", obj.__module__, obj.__qualname__, id(obj), bases, attrs)
        if kind in (classmethod, staticmethod):
            return _obj_marker, (kind.__name__, obj.__func__)
        if kind is property:
            return _obj_marker, ("property", obj.fget, obj.fset, obj.fdel)
        return NotImplemented

    def _reduce_array(self, a: Any) -> Any:
        if a.dtype.hasobject:
            return NotImplemented  # its items are objects: pickled as usual
        if a.nbytes < LARGE:
            if a.flags.c_contiguous:  # hashed where it lies, not copied
                raw = memoryview(a.reshape(-1).view(self._uint8))
                return _nd_marker, (a.dtype, a.shape, xxhash.xxh3_128_hexdigest(raw))
            return _nd_marker, (a.dtype, a.shape, a.tobytes())
        lo, hi = _byte_bounds(a)
        return _nd_marker, (a.dtype, a.shape, a.strides, lo, self._region(lo, hi - lo, a))


def _byte_bounds(a: Any) -> tuple[int, int]:
    """The first and one-past-last byte addresses an array's elements occupy."""
    lo = hi = int(a.__array_interface__["data"][0])
    if a.size == 0:
        return lo, lo
    for n, stride in zip(a.shape, a.strides):
        if stride < 0:
            lo += (n - 1) * stride
        else:
            hi += (n - 1) * stride
    return lo, hi + a.itemsize


def _by_value(obj: object) -> bool:
    from ..store.serializer import _by_value as by_value

    return by_value(obj)


def _cell_content(cell: Any) -> Any:
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return ("empty",)
    if isinstance(value, types.FunctionType):
        # A closure over a function (often itself): its identity, to stop recursion.
        return ("function-ref", id(value), hash(value.__code__))
    return value


def _describe_attr(value: Any) -> Any:
    """A class attribute as it goes in a fingerprint: descriptors the pickler cannot
    handle are named by type and identity (they cannot change in place)."""
    if isinstance(value, (types.MemberDescriptorType, types.GetSetDescriptorType)):
        return ("descriptor", type(value).__name__, id(value))
    if isinstance(value, (types.BuiltinFunctionType, types.WrapperDescriptorType)):
        return ("builtin", id(value))
    return value


@dataclass
class Scan:
    """One look at the namespace: a fingerprint per variable, and which ones could not be taken."""

    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    volatile: set[str] = field(default_factory=set)

    def changed_since(self, earlier: Scan | None, unsaveable: Iterable[str] = ()) -> set[str]:
        """Names new, gone or different since ``earlier`` (all of them when there was none),
        and every volatile name but those in ``unsaveable`` (which the store skipped: they
        count as changed only when rebound)."""
        if earlier is None:
            return set(self.fingerprints)
        old = earlier.fingerprints
        changed = {n for n, fp in self.fingerprints.items() if old.get(n) != fp}
        changed |= set(old) - set(self.fingerprints)
        return changed | (self.volatile - set(unsaveable))


class Scanner:
    """Fingerprints variables; large buffers are hashed on worker threads.

    Examples
    --------
    >>> ns = {"x": [1, 2]}
    >>> first = Scanner().scan(ns, ["x"])
    >>> ns["x"].append(3)
    >>> Scanner().scan(ns, ["x"]).changed_since(first)
    {'x'}
    """

    def __init__(self, track_writes: bool = True) -> None:
        self.tracker = tracker() if track_writes else None
        self._file = io.BytesIO()
        self._regions: list[_Region] = []
        self._pickler = _Pickler(self._file, self._regions)

    def scan(self, ns: Mapping[str, Any], names: Iterable[str]) -> Scan:
        out = Scan()
        if self._pickler._ndarray is None and "numpy" in sys.modules:
            self._pickler = _Pickler(self._file, self._regions)  # numpy came since
        pending: list[tuple[str, tuple[Any, ...], list[_Region]]] = []
        for name in names:
            value = ns[name]
            kind = type(value)
            if kind in _IMMUTABLE:
                out.fingerprints[name] = _scalar(value)
                continue
            try:
                payload = self._pickle(value)
            except Exception:
                out.volatile.add(name)
                out.fingerprints[name] = ("volatile", kind, id(value))
                continue
            head = (kind, id(value), payload)
            if self._regions:
                pending.append((name, head, list(self._regions)))
            else:
                out.fingerprints[name] = head
        if pending:
            hashes = self._hash_regions([r for _, _, regions in pending for r in regions])
            for name, head, regions in pending:
                spans = tuple((r.address, r.size, hashes[(r.address, r.size)]) for r in regions)
                out.fingerprints[name] = (*head, spans)
        return out

    def _pickle(self, value: Any) -> str | bytes:
        file = self._file
        file.seek(0)
        file.truncate()
        # A new, empty memo: ``clear_memo`` would wipe the whole table, which keeps the
        # size of the largest pickle so far (25 us per call after a dict of 1,000 items).
        pickler = self._pickler
        pickler.memo = {}
        del self._regions[:]
        try:
            pickler.dump(value)
        except BaseException:
            del self._regions[:]
            raise
        with file.getbuffer() as view:
            if view.nbytes <= SMALL_PICKLE:
                return bytes(view)  # the pickle itself: cheaper than a hash
            return xxhash.xxh3_128_hexdigest(view) if view.nbytes < LARGE else fast_hash(view)

    def _hash_regions(self, regions: list[_Region]) -> dict[tuple[int, int], str]:
        """A state for each distinct span: a write-tracking token for large spans where
        the kernel can watch writes, else a fast hash (large ones in pieces on threads)."""
        spans = {(r.address, r.size) for r in regions}
        states: dict[tuple[int, int], str] = {}
        watch = self.tracker if self.tracker is not None and self.tracker.active else None
        if watch is not None:
            large = [span for span in spans if span[1] >= TRACK_MIN]
            for span, token in watch.tokens(large).items():
                if token is not None:
                    states[span] = f"written#{token}"
            spans -= set(states)
        states.update(self._hash_spans(spans))
        return states

    @staticmethod
    def _hash_spans(spans: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
        pieces: list[tuple[tuple[int, int], int, int]] = []
        for address, size in sorted(spans):
            for start in range(0, max(size, 1), REGION_PIECE):
                pieces.append(((address, size), address + start, min(REGION_PIECE, size - start)))
        if len(pieces) > 1 and THREADS["enabled"]:
            results = list(_hash_pool().map(lambda p: _region_hash(p[1], p[2]), pieces))
        else:
            results = [_region_hash(p[1], p[2]) for p in pieces]
        out: dict[tuple[int, int], list[str]] = {}
        for (span, _, _), h in zip(pieces, results):
            out.setdefault(span, []).append(h)
        return {span: fast_hash(memoryview("".join(hs).encode())) for span, hs in out.items()}


def soft_dirty_available() -> str | None:
    """None when Linux soft-dirty page tracking works in this process, else why not.

    Checked by clearing the bits, writing one page and reading its pagemap entry.
    Not used for scans (:class:`WriteTracker` is); kept to say why in reports.
    """
    try:
        page = bytearray(PAGE * 2)
        address = _buffer_address(memoryview(page))
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


class _UffdApi(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


class _UffdRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _UffdRegister(ctypes.Structure):
    _fields_ = [("range", _UffdRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _UffdWriteProtect(ctypes.Structure):
    _fields_ = [("range", _UffdRange), ("mode", ctypes.c_uint64)]


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


_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
_UFFD_USER_MODE_ONLY = 1
_UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
_UFFD_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_API = _iowr(0xAA, 0x3F, ctypes.sizeof(_UffdApi))
_UFFDIO_REGISTER = _iowr(0xAA, 0x00, ctypes.sizeof(_UffdRegister))
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

    Linux (6.7 and later) can write-protect memory with a userfaultfd in "async" mode:
    the first write to a protected page is let through by the kernel itself, which notes
    that the page was written. ``PAGEMAP_SCAN`` on ``/proc/self/pagemap`` lists the written
    pages and protects them again in the same call, so no write is lost between the two.
    A scan then costs about 0.1 ms however large the arrays; the price is one minor page
    fault (a few microseconds) the first time each page is written after a scan.

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
        number = _SYS_USERFAULTFD.get(platform.machine())
        if not sys.platform.startswith("linux") or number is None:
            self.reason = "write tracking needs Linux on x86_64 or aarch64"
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
            libc.ioctl.restype = ctypes.c_int
        except (OSError, AttributeError) as e:  # pragma: no cover - no C library
            self.reason = f"no C library ({e})"
            return
        fd = int(libc.syscall(number, os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY))
        if fd < 0:
            self.reason = f"userfaultfd is not allowed here ({os.strerror(ctypes.get_errno())})"
            return
        api = _UffdApi(0xAA, _UFFD_FEATURE_WP_ASYNC | _UFFD_FEATURE_WP_UNPOPULATED, 0)
        if libc.ioctl(fd, _UFFDIO_API, ctypes.byref(api)) != 0:
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
            address = _buffer_address(memoryview(area))
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
        register = _UffdRegister(_UffdRange(start, end - start), _REGISTER_MODE_WP, 0)
        if self._libc.ioctl(self._uffd, _UFFDIO_REGISTER, ctypes.byref(register)) != 0:
            return False
        protect = _UffdWriteProtect(_UffdRange(start, end - start), _WRITEPROTECT_MODE_WP)
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
        its pages is written, or None when its memory cannot be watched (hash it)."""
        wanted = sorted(set(spans))
        out: dict[tuple[int, int], int | None] = {}
        # Page-aligned, merged: each page is looked at once, since a look protects it again.
        intervals: list[list[Any]] = []
        for span in wanted:
            lo = span[0] // PAGE * PAGE
            hi = -(-(span[0] + span[1]) // PAGE) * PAGE
            if intervals and lo <= intervals[-1][1]:
                intervals[-1][1] = max(intervals[-1][1], hi)
                intervals[-1][2].append(span)
            else:
                intervals.append([lo, hi, [span]])
        tokens: dict[tuple[int, int], int] = {}
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
            for span in members:
                old = self._tokens.get(span)
                end = span[0] + span[1]
                hit = any(w_lo < end and span[0] < w_hi for w_lo, w_hi in written)
                tokens[span] = self._fresh() if old is None or hit else old
        self._tokens = tokens  # spans not asked about now start afresh when asked again
        self._unwatchable = unwatchable
        out.update(tokens)
        return out

    def _fresh(self) -> int:
        self._next += 1
        return self._next


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
