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
fingerprinted by value. Identity is in it too: the variable's own object, and which
objects its first-level parts are (see ``_parts``).

The bytes of a span are watched, not read: spans of 8 MiB or more in private anonymous
memory are write-protected through a userfaultfd (:class:`.pages.WriteTracker`), and a scan
asks the kernel which of their pages were written since the last one. Other spans are
hashed (xxh3, on worker threads for the large ones). See :mod:`.pages`.

Limits: the scan pickles every variable's in-band part at each look, so its cost grows
with the number of small Python objects (a list of a million floats: ~45 ms here); a
variable the C pickler cannot fingerprint (a lock inside, an open file) counts as
changed at every scan, unless the store could not save it either. Memory written by a
device or another process without going through this process's page tables (RDMA,
pinned buffers) is seen only where it is hashed.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import io
import operator
import pickle
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import xxhash

from ..store.hashing import THREADS, _hash_pool, fast_hash
from ..store.pager import Pager, mapped_pieces
from ..store.serializer import (
    _callback_registry,
    _dtype_types,
    _reduce_registry,
    _reduce_tensor_with_grad,
    _storage_types,
)
from ..store.store import CHUNK_MIN, CHUNK_SIZE
from .pages import TRACK_MIN, buffer_address, tracker

# Buffers at least this large are hashed on worker threads, and in pieces of REGION_PIECE.
LARGE = 1 << 20
REGION_PIECE = 64 << 20
SMALL_PICKLE = 256
_IMMUTABLE = frozenset({int, float, complex, bool, type(None), str, bytes})

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


class _Pickler(pickle.Pickler):
    """The C pickler with out-of-band large buffers, and arrays, functions and classes
    reduced to what identifies their content (never loaded back)."""

    def __init__(self, file: io.BytesIO, regions: list[_Region]) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self.regions = regions
        numpy = sys.modules.get("numpy")
        self._ndarray = numpy.ndarray if numpy is not None else None
        self._uint8 = numpy.uint8 if numpy is not None else None
        self._storages = _storage_types()
        torch: Any = sys.modules.get("torch")
        self._tensors = (
            frozenset({torch.Tensor, torch.nn.Parameter}) if self._storages else frozenset()
        )
        self.registry = _callback_registry()  # looked up again at each scan

    def _buffer(self, buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()  # a non-contiguous buffer raises: the caller marks the variable volatile
        if raw.nbytes < LARGE:
            return True  # small: in band, hashed with the payload
        self.regions.append(_Region(buffer_address(raw), raw.nbytes, buf))
        return False

    def _region(self, address: int, size: int, keep: object) -> Any:
        """A large span: recorded for hashing, stands in the pickle as its index."""
        self.regions.append(_Region(address, size, keep))
        return len(self.regions) - 1

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is self._ndarray:
            return self._reduce_array(obj)
        if kind in self._storages:
            return self._reduce_storage(obj)
        if kind in self._tensors:
            return _reduce_tensor_with_grad(obj)  # the gradient is state too
        if kind is types.ModuleType:
            return _obj_marker, ("module", obj.__name__)
        if kind is functools.partial:
            # Its state holds its __dict__, or None until something asks for it (the
            # store's search for credentials does): an empty one is no change.
            _, args, (func, fargs, keywords, attrs) = obj.__reduce__()
            return _obj_marker, ("partial", args, func, fargs, keywords, attrs or None)
        if kind is self.registry:
            # Without its callback-id counter, which each pickling steps (then set back).
            func, args, state, *rest = _reduce_registry(obj)
            return (func, args, {k: v for k, v in state.items() if k != "_cid_gen"}, *rest)
        if kind is bytearray and len(obj) >= LARGE:
            return _obj_marker, (
                "bytearray",
                self._region(buffer_address(memoryview(obj)), len(obj), obj),
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
        if isinstance(obj, enum.Enum) and _by_value(kind):
            # A member of a notebook's enum: its class is pickled by value, and its members
            # with it, each of which names its class again: that never ended.
            return _obj_marker, ("enum member", id(kind), obj._name_)
        if isinstance(obj, type) and _by_value(obj):
            attrs = {
                k: _describe_attr(v)
                for k, v in vars(obj).items()
                # __slotnames__: a cache copyreg adds the first time an instance is pickled
                if k not in ("__dict__", "__weakref__", "__slotnames__")
            }
            bases = tuple(obj.__bases__)
            return _obj_marker, ("class", obj.__module__, obj.__qualname__, id(obj), bases, attrs)
        if kind in (classmethod, staticmethod):
            return _obj_marker, (kind.__name__, obj.__func__)
        if kind is property:
            return _obj_marker, ("property", obj.fget, obj.fset, obj.fdel)
        return NotImplemented

    def _reduce_storage(self, obj: Any) -> Any:
        """A PyTorch storage on the CPU: its span, as for an array's buffer (the store
        saves its bytes as one buffer, see ``serializer._reduce_storage``)."""
        if isinstance(obj, sys.modules["torch"].storage.TypedStorage):  # bytes: its untyped one's
            return _nd_marker, ("typed storage", obj._untyped_storage, obj.dtype)
        if obj.device.type != "cpu":
            return NotImplemented  # memory this process cannot read: PyTorch's own copy
        size = obj.nbytes()
        if size < LARGE:
            return _nd_marker, ("storage", ctypes.string_at(obj.data_ptr(), size))
        return _nd_marker, ("storage", self._region(obj.data_ptr(), size, obj))

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


class ChunkWatch:
    """Between the snapshots of one cell, which chunks of its large buffers were written.

    A loop's snapshots see the same arrays again and again, mostly unchanged: hashing all
    of them at each snapshot (about 0.1 s per GiB) was the whole of an inline snapshot's
    pause. After a save, the chunks of each large buffer it held are handed to the write
    tracker; before the next save, the tracker says which were written since
    (:meth:`written`), and the store hashes only those (``CheckpointStore.prepare``'s
    ``written``). Memory the tracker cannot watch, and buffers first seen, are hashed as
    before.

    Watching costs the loop one page fault (about 2 us) the first time it writes each
    4 KiB page after a snapshot: a loop that rewrites a whole array between snapshots
    would pay that for nothing (its chunks are new anyway), so a buffer whose chunks were
    mostly new at the last save, though the save before held it too, is not watched until
    a save finds it mostly unchanged.
    """

    def __init__(self) -> None:
        self.tracker = tracker()
        self.spans: list[tuple[int, int]] = []
        self._held: set[tuple[int, int]] = set()  # the large buffers of the last save
        self._asked: set[tuple[int, int]] = set()  # every span the tracker was asked about

    def written(self) -> dict[tuple[int, int], int] | None:
        """The tracker's number for each watched chunk, asked now (None: hash everything)."""
        if not self.spans or not self.tracker.active:
            return None
        self._asked.update(self.spans)
        tokens = self.tracker.tokens(self.spans)
        return {span: t for span in self.spans if (t := tokens.get(span)) is not None}

    def close(self) -> None:
        """The cell is over: stop watching (its pages no longer fault when written, and
        huge pages are no longer split to watch them)."""
        if self._asked and self.tracker.active:
            self.tracker.release(self._asked)
        self.spans = []
        self._held = set()
        self._asked = set()

    def saw(self, buffers: Iterable[tuple[int, int, int]]) -> None:
        """After a save: its large buffers ``(address, size, chunks new)``; watch the
        mostly unchanged ones from now on."""
        spans: list[tuple[int, int]] = []
        held = set()
        for address, size, new in buffers:
            held.add((address, size))
            chunks = _store_chunks((address, size))
            rewritten = (address, size) in self._held and 2 * new > len(chunks)
            if size >= TRACK_MIN and not rewritten:
                spans.extend(chunks)
        self.spans, self._held = spans, held


def _store_chunks(span: tuple[int, int]) -> list[tuple[int, int]]:
    """The memory spans of the pieces the store cuts a buffer into (``store._chunks``)."""
    address, size = span
    if size <= CHUNK_MIN:
        return []
    return [(address + at, min(CHUNK_SIZE, size - at)) for at in range(0, size, CHUNK_SIZE)]


def _parts(value: Any) -> int:
    """The identities of a variable's first-level parts (items of a list, tuple, set or
    dict, attributes of an instance), as one hash; parts whose identity does not matter
    are left out (see ``_is_shared_kind``).

    A pickle shows content, not identity: after ``x[0] = records[0]``, where ``x[0]`` was
    an equal copy, the pickle of ``x`` is the same, yet the restore must now give one
    object in both. With this, ``x`` counts as changed, and its save finds the object it
    shares with ``records`` and saves them together (``serialize(kept=...)``). Not seen:
    an equal object put deeper than the first level (``x[0]["k"] = records[0]``). Costs
    about 2 ms per 100,000 items.
    """
    kind = type(value)
    items: Any
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        items = value  # a tuple's items can be mutable too: x = (records[0], 1)
    elif kind is dict:
        items = value.values()
    else:
        if kind not in _SORTED:
            _sort_kinds({kind})
        if kind in _SHARED:
            return 0
        try:
            attrs = object.__getattribute__(value, "__dict__")
        except Exception:  # no instance dict (a C type, __slots__)
            return 0
        if type(attrs) is not dict:
            return 0
        items = attrs.values()
    kinds = set(map(type, items))
    if not kinds <= _SORTED:
        _sort_kinds(kinds - _SORTED)
    skip = kinds & _SHARED
    if skip == kinds:
        return 0
    if skip:
        kept = map(operator.not_, map(skip.__contains__, map(type, items)))
        items = compress(items, kept)
    return hash(tuple(map(id, items)))


# Types sorted so far by ``_is_shared_kind`` (strong references: cleared past a bound, so
# that classes a notebook redefines are not kept for ever).
_SORTED: set[type] = set()
_SHARED: set[type] = set()
_MAX_SORTED = 4096


def _sort_kinds(kinds: set[type]) -> None:
    if len(_SORTED) + len(kinds) > _MAX_SORTED:
        _SORTED.clear()
        _SHARED.clear()
    _SORTED.update(kinds)
    _SHARED.update(filter(_is_shared_kind, kinds))


def _is_shared_kind(kind: type) -> bool:
    """Whether the identity of objects of this type does not matter, or comes back on its
    own: values that cannot change (numbers, strings, tuples; an equal one computed again
    is a new object), None and the like, classes, modules, enum members, dtypes."""
    if kind in _IMMUTABLE or kind in (tuple, frozenset, type(Ellipsis), type(NotImplemented)):
        return True
    numpy = sys.modules.get("numpy")
    scalar = (numpy.generic,) if numpy is not None else ()
    return issubclass(kind, (type, types.ModuleType, enum.Enum, *scalar, *_dtype_types()))


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
        # The spans the tracker was last asked about: the large buffers, and the chunks
        # the store cuts them into (see ``written_now``).
        self._asked: list[tuple[int, int]] = []
        self._chunks: set[tuple[int, int]] = set()

    def scan(self, ns: Mapping[str, Any], names: Iterable[str]) -> Scan:
        out = Scan()
        if self._pickler._ndarray is None and "numpy" in sys.modules:
            self._pickler = _Pickler(self._file, self._regions)  # numpy came since
        self._pickler.registry = _callback_registry()
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
            head = (kind, id(value), payload, _parts(value))
            if self._regions:
                pending.append((name, head, list(self._regions)))
                del self._regions[:]  # they hold the buffers: kept no longer than the scan
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
        finally:
            # The memo holds what it pickled: let go of it, so that nothing here keeps a
            # variable's objects alive, or makes them look held by something else (the
            # store's grouping reads reference counts).
            pickler.memo = {}
        with file.getbuffer() as view:
            if view.nbytes <= SMALL_PICKLE:
                return bytes(view)  # the pickle itself: cheaper than a hash
            return xxhash.xxh3_128_hexdigest(view) if view.nbytes < LARGE else fast_hash(view)

    def _hash_regions(self, regions: list[_Region]) -> dict[tuple[int, int], str]:
        """A state for each distinct span: a write-tracking token for large spans where
        the kernel can watch writes, else a fast hash (large ones in pieces on threads)."""
        spans = {(r.address, r.size) for r in regions}
        states: dict[tuple[int, int], str] = {}
        if Pager.any_mapped():
            # Restored by mapping (lazy restore): a chunk never touched is still its blob,
            # and reading it to hash it would load it. Those memories are the pager's to
            # watch, not the write tracker's.
            for span in spans:
                parts = mapped_pieces(*span)
                if parts is not None:
                    hs = [h or _region_hash(a, n) for a, n, h in parts]
                    states[span] = "mapped#" + fast_hash(memoryview("".join(hs).encode()))
            spans -= set(states)
        watch = self.tracker if self.tracker is not None and self.tracker.active else None
        if watch is not None:
            large = [span for span in spans if span[1] >= TRACK_MIN]
            chunks = {chunk for span in large for chunk in _store_chunks(span)}
            self._asked, self._chunks = [*large, *sorted(chunks - set(large))], chunks
            tokens = watch.tokens(self._asked)
            for span in large:
                token = tokens.get(span)
                if token is not None:
                    states[span] = f"written#{token}"
            spans -= set(states)
        states.update(self._hash_spans(spans))
        return states

    def written_now(self) -> dict[tuple[int, int], int]:
        """For each store chunk of the large buffers of the last scan, a number that stays
        the same while none of its pages is written, asked of the kernel now.

        Given to the store right before a save (:meth:`CheckpointStore.prepare`), it lets
        the save hash only the chunks written since it last hashed them. Asked at save
        time, not at scan time: code may run between the two (a widget's callback). The
        spans asked are the same as the scan's, so the scan's own numbers stay valid.
        """
        watch = self.tracker if self.tracker is not None and self.tracker.active else None
        if watch is None or not self._chunks:
            return {}
        tokens = watch.tokens(self._asked)
        return {span: t for span in self._chunks if (t := tokens.get(span)) is not None}

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
