"""Turn a namespace into pickles plus out-of-band buffers, and back; no IPython here."""

from __future__ import annotations

import enum
import functools
import gc
import importlib
import io
import itertools
import operator
import pickle
import random
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

from ..gcpause import paused
from .credentials import MAX_NODES, MIN_NODES, SAVE_NODES, describe, find_credentials
from .handles import HandleError, fresh_lock, guarded_loads, handle_reason

PROTOCOL = 5
# Objects that cannot hold references to other objects, or whose identity never matters.
_ATOMIC = (int, float, complex, str, bytes, bool, type(None), range, slice)
# A bound on the referents the walk that groups variables may look at (about 0.1 s);
# past it, all go in one group.
MAX_WALK = 1_000_000
# Plain containers: often many small objects, the slow part of pickling, and no buffers.
_CONTAINERS = (list, dict, set, frozenset, tuple)
_SIZED = frozenset(_CONTAINERS)
# The walk follows the items of arrays of Python objects up to this many items each.
OBJECT_ITEMS = 65_536

OnBuffer = Callable[[memoryview], object]
ShareGil = Callable[[], bool]


@dataclass
class Group:
    """Variables whose object graphs overlap, pickled together so shared references survive."""

    names: list[str]
    payload: bytes = b""
    buffers: list[memoryview] = field(default_factory=list)
    pickler: str = "pickle"

    @property
    def size(self) -> int:
        return len(self.payload) + sum(b.nbytes for b in self.buffers)


@dataclass
class Snapshot:
    """What a namespace became: groups to store, and what was left out and why."""

    groups: list[Group]
    types: dict[str, str]
    modules: dict[str, str]
    skipped: dict[str, dict[str, str]]
    withheld: dict[str, dict[str, str]]
    rng: bytes | None
    # The text of what was withheld: in memory only, so recorded cell text can be redacted.
    secrets: list[str] = field(default_factory=list, repr=False)
    # Shape and dtype of arrays and pandas objects, for comparing checkpoints without loading.
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Which of the ``kept`` groups given to ``serialize`` were pickled again, joined with
    # a variable that now shares with them (by their index in ``kept``).
    redone: list[int] = field(default_factory=list)


def type_name(obj: object) -> str:
    """A qualified type name for listings: ``numpy.ndarray``, ``dict``, ``__main__.Model``."""
    t = type(obj)
    module = getattr(t, "__module__", "") or ""
    if module == "builtins":
        return t.__qualname__
    return f"{module}.{t.__qualname__}"


def shape_of(obj: object) -> dict[str, Any] | None:
    """``{"shape": [...], "dtype": "..."}`` for a NumPy array, a pandas or polars DataFrame
    or Series, or a PyTorch tensor, else None. Reads attributes only, so it costs
    microseconds whatever the size; a DataFrame's dtype counts its columns by dtype.

    Examples
    --------
    >>> import numpy as np
    >>> shape_of(np.zeros((2, 3), dtype="float32"))
    {'shape': [2, 3], 'dtype': 'float32'}
    >>> shape_of([1, 2]) is None
    True
    """
    try:
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(obj, numpy.ndarray):
            return {"shape": [int(n) for n in obj.shape], "dtype": str(obj.dtype)[:300]}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            dtype = str(obj.dtype).removeprefix("torch.")
            return {"shape": [int(n) for n in obj.shape], "dtype": dtype[:300]}
        polars = sys.modules.get("polars")
        if polars is not None and isinstance(obj, (polars.DataFrame, polars.Series)):
            if isinstance(obj, polars.Series):
                return {"shape": [int(obj.len())], "dtype": str(obj.dtype)[:300]}
            counts: dict[str, int] = {}
            for dtype in obj.dtypes:
                counts[str(dtype)] = counts.get(str(dtype), 0) + 1
            summary = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
            return {"shape": [int(n) for n in obj.shape], "dtype": summary[:300]}
        pandas = sys.modules.get("pandas")
        if pandas is None:
            return None
        if isinstance(obj, pandas.Series):
            return {"shape": [int(n) for n in obj.shape], "dtype": str(obj.dtype)[:300]}
        if isinstance(obj, pandas.DataFrame):
            counts = _column_dtypes(obj)
            summary = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
            return {"shape": [int(n) for n in obj.shape], "dtype": summary[:300]}
    except Exception:  # a subclass with odd attributes: no shape rather than no save
        return None
    return None


def _column_dtypes(frame: Any) -> dict[str, int]:
    """A DataFrame's columns counted by dtype, from its blocks (one per dtype, usually):
    tens of microseconds where one ``str(dtype)`` per column took 80 ms for 5000 columns."""
    counts: dict[str, int] = {}
    try:
        for block in frame._mgr.blocks:  # pandas internals: checked against the shape
            name = str(block.dtype)
            counts[name] = counts.get(name, 0) + int(block.shape[0])
        if sum(counts.values()) == frame.shape[1]:
            return counts
    except Exception:  # another pandas layout: the public, slower way
        pass
    return {str(k): int(n) for k, n in frame.dtypes.astype(str).value_counts().items()}


def _is_main(obj: object) -> bool:
    return getattr(obj, "__module__", None) == "__main__"


def _walk_roots(values: list[object], skip_ids: set[int]) -> list[int]:
    """For each value, the index of its group's root (see :class:`_Grouping`)."""
    grouping = _Grouping(skip_ids)
    grouping.add(values)
    return grouping.roots()


class _Grouping:
    """Union-find over the objects reachable from variables, given in one or more batches.

    Two variables are grouped when an object other than an immutable scalar or string is
    reachable from both, so that they are pickled together and their shared references
    survive a restore.

    The walk goes a level at a time: one ``gc.get_referents`` call for all the objects of
    a level, and filters over whole lists, with no Python code per object. Only objects
    that more than one reference holds are recorded by id: an object held once is
    reached through that one reference only, so no other variable can reach it (a cycle
    through it passes by an object held at least twice, where the walk stops). A list of
    100k small dicts takes about as long as pickling it (40 ms here, against 240 ms
    object by object).
    """

    def __init__(self, skip_ids: set[int]) -> None:
        self.skip_ids = skip_ids
        self.parent: list[int] = []
        # Past MAX_WALK referents: every variable in one group, which keeps every shared
        # reference (only the finer grouping is lost).
        self.whole = False
        self.walked = 0
        self.owner: dict[int, int] = {}  # objects held more than once: the first variable
        # How many of ``owner`` are not variables' own values (see ``reaches_shared``).
        self.inner = 0
        self.storages: dict[int, int] = {}
        self.by_reference: set[int] = set()
        self.looked: set[type] = set()  # the types met so far, sorted into the next two
        self.followed: set[type] = set()  # types whose instances can hold references
        self.special: set[type] = set()  # of those, the ones each instance of which is looked at
        # Tensors share memory through their storage, which the garbage collector does not
        # list among their referents: by address, then. NumPy arrays list nothing (they are
        # not tracked): a view is followed to the array it views (pickled with it, see
        # ``_reduce_view``).
        self.tensor = getattr(sys.modules.get("torch"), "Tensor", None)
        self.ndarray = getattr(sys.modules.get("numpy"), "ndarray", None)
        self.dtypes = _dtype_types()

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[a] = b

    def roots(self) -> list[int]:
        """For each value given so far, the index of its group's root."""
        if self.whole:
            return [0] * len(self.parent)
        return [self.find(i) for i in range(len(self.parent))]

    def reaches_shared(self) -> bool:
        """Whether the values walked so far reach an object something else may hold too:
        one held more than once inside them, or a storage. (A value's own object is
        judged by the caller.)"""
        return self.whole or self.inner > 0 or bool(self.storages)

    def _sort_types(self, objs: list[Any]) -> None:
        tensor = self.tensor
        for kind in set(map(type, objs)) - self.looked:
            self.looked.add(kind)
            if issubclass(kind, enum.Enum):
                # A member of a library's enum comes back by name, itself; one of a
                # notebook's enum (an IntEnum member is an int too) leads to its class.
                if _by_value(kind):
                    self.followed.add(kind)
                continue
            if issubclass(kind, _ATOMIC) or issubclass(kind, self.dtypes):
                continue
            self.followed.add(kind)
            if issubclass(kind, (types.ModuleType, type, types.FunctionType)) or (
                kind is self.ndarray or (tensor is not None and issubclass(kind, tensor))
            ):
                self.special.add(kind)

    def add(self, values: list[object]) -> None:
        """Walk from more variables; their indexes follow those of the earlier ones."""
        start = len(self.parent)
        self.parent.extend(range(start, start + len(values)))
        if self.whole:
            return
        self._sort_types(values)
        join, owner, skip_ids, by_reference = (
            self.join,
            self.owner,
            self.skip_ids,
            self.by_reference,
        )
        followed, special, ndarray = self.followed, self.special, self.ndarray
        many = _held_once().__lt__
        get_referents = gc.get_referents
        for index, value in enumerate(values, start):
            if type(value) not in followed or id(value) in skip_ids or id(value) in by_reference:
                continue  # an immutable scalar or string (a small int is one object): alone
            shared: list[Any] = [value]
            once: list[Any] = []
            root = True
            while shared or once:
                level = once
                if shared:
                    found = dict(zip(map(id, shared), shared))
                    fresh = found.keys() - owner.keys()
                    if len(fresh) != len(found):
                        for oid in found.keys() & owner.keys():
                            join(owner[oid], index)
                    fresh -= skip_ids
                    fresh -= by_reference
                    owner.update(dict.fromkeys(fresh, index))
                    self.inner += 0 if root else len(fresh)
                    level = [*once, *map(found.__getitem__, fresh)]
                    del found
                root = False
                if not level:
                    break
                extra: list[Any] = []
                if not special.isdisjoint(map(type, level)):
                    leaves: set[int] = set()
                    for obj in compress(level, map(special.__contains__, map(type, level))):
                        if isinstance(obj, types.ModuleType) or (
                            isinstance(obj, (type, types.FunctionType)) and not _by_value(obj)
                        ):
                            # Pickled by reference: identity comes back on its own. Not
                            # owned either, or every instance of a library class would join
                            # one group through it.
                            by_reference.add(id(obj))
                            if owner.pop(id(obj), None) is not None and obj is not value:
                                self.inner -= 1
                            leaves.add(id(obj))
                        elif isinstance(obj, (type, types.FunctionType)):
                            if not _is_main(obj):
                                leaves.add(id(obj))  # by value, not the notebook's: as is
                        elif type(obj) is ndarray:
                            base: Any = getattr(obj, "base", None)
                            if type(base) is ndarray:
                                extra.append(base)
                            if obj.dtype.hasobject and obj.size <= OBJECT_ITEMS:
                                # Its items, which the gc does not list (a big column of
                                # strings in pandas 2 is left out: it would use the bound).
                                extra.extend(obj.ravel().tolist())
                        else:  # a tensor
                            address = _storage_address(obj)
                            if address:
                                join(self.storages.setdefault(address, index), index)
                    if leaves:
                        level = [obj for obj in level if id(obj) not in leaves]
                # What the level's containers hold, counted before it is listed: a list of
                # a million dicts gives up here, not after listing their four million keys
                # and values (which took a third of a second).
                sized = compress(level, map(_SIZED.__contains__, map(type, level)))
                if self.walked + len(level) + sum(map(len, sized)) > MAX_WALK:
                    self.whole = True  # too much to follow at a safe point
                    return
                refs = get_referents(*level)
                del level
                refs.extend(extra)
                self.walked += len(refs)
                if self.walked > MAX_WALK:
                    self.whole = True
                    return
                self._sort_types(refs)
                refs = list(compress(refs, map(followed.__contains__, map(type, refs))))
                # Counted while ``refs`` is the only list holding them, as in ``_held_once``.
                flags = list(map(many, map(sys.getrefcount, refs)))
                shared = list(compress(refs, flags))
                once = list(compress(refs, map(operator.not_, flags)))
                del refs, flags


def _dtype_types() -> tuple[type, ...]:
    """NumPy's and pandas' dtype classes: their instances are shared by every array or
    column of that type (one ``StringDtype()`` for all the string columns of every frame),
    are never changed, and come back equal, so sharing one joins no groups."""
    found = []
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        found.append(numpy.dtype)
    extensions = sys.modules.get("pandas.api.extensions")
    dtype = getattr(extensions, "ExtensionDtype", None)
    if isinstance(dtype, type):
        found.append(dtype)
    return tuple(found)


@functools.cache
def _held_once() -> int:
    """``sys.getrefcount`` of an object one reference holds, as the walk counts it: in the
    list ``gc.get_referents`` made (the count differs between Python versions)."""
    holder = [object()]
    refs = gc.get_referents(holder)
    counts = list(map(sys.getrefcount, refs))
    return counts[0]


def _storage_address(tensor: Any) -> int:
    """Where a tensor's storage starts (0 when it has none to share: meta, sparse...)."""
    try:
        return int(tensor.untyped_storage().data_ptr())
    except Exception:  # a tensor kind without a plain storage
        return 0


# The number of modules, the ids of their namespaces, and the namespaces themselves.
_MODULE_DICTS: tuple[int, set[int], list[object]] = (-1, set(), [])


def _module_dict_ids() -> set[int]:
    """Ids of every module's namespace, which the grouping walk must not enter.

    Cached while the number of loaded modules stays the same: walking ``sys.modules``
    after every auto-saved cell would cost a millisecond each time.

    The cache holds the namespaces themselves, not only their ids, for an id is unique
    only while its object lives. Some entries of ``sys.modules`` make a new ``__dict__`` at
    each access and drop it at once (cffi's compiled libraries, such as cryptography's
    ``_openssl.lib``; ``typing.io``, a class); and the same number of modules is not the
    same modules (one removed and imported again, or replaced), so a namespace freed since
    keeps its id in the cache. A new dict may then take its memory, so its id: the walk
    would skip it as a module's namespace and never see what it holds (an optimizer kept
    in a dict was pickled apart from its model, and came back stepping copies of the
    model's parameters). Held here, no namespace can be freed while its id is in use. At
    worst the walk then skips a namespace no module has anymore, or enters a new module's,
    which only joins groups (one group past ``MAX_WALK``): every shared reference is kept.
    """
    global _MODULE_DICTS
    count, ids, _ = _MODULE_DICTS
    if count == len(sys.modules):
        return ids
    ids = {id(sys.modules)}
    held: list[object] = []
    for module in list(sys.modules.values()):
        d = getattr(module, "__dict__", None)
        if d is not None:
            ids.add(id(d))
            held.append(d)
    _MODULE_DICTS = (len(sys.modules), ids, held)
    return ids


_PICKLER: type | None = None


def _pickler_class() -> type:
    """dill's Pickler, except that plain NumPy arrays take their protocol-5 path, and
    operating-system handles are refused (see ``handles``).

    dill reduces every ndarray with ``__reduce__`` (protocol 2), which copies the data
    in-band; ``__reduce_ex__(5)`` hands a ``PickleBuffer`` to the buffer callback instead.
    dill would save an open file as "reopen this path in this mode", which truncates a
    file opened with 'w' at restore; locks come back unlocked.
    """
    global _PICKLER
    if _PICKLER is not None:
        return _PICKLER
    import dill

    numpy = sys.modules.get("numpy")
    ndarray = numpy.ndarray if numpy is not None else None

    class Pickler(dill.Pickler):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._special = _special_reducers()

        def reducer_override(self, obj: Any) -> Any:
            special = self._special.get(type(obj))
            return NotImplemented if special is None else special(obj)

        def save(self, obj: object, save_persistent_id: bool = True) -> None:
            if ndarray is not None and type(obj) is ndarray:
                self.framer.commit_frame()
                memo = self.memo.get(id(obj))
                if memo is not None:
                    self.write(self.get(memo[0]))
                    return
                reduced = _reduce_view(obj)
                if reduced is NotImplemented:
                    reduced = obj.__reduce_ex__(self.proto)
                self.save_reduce(*reduced, obj=obj)
                return
            why = handle_reason(obj)
            if why is not None:
                raise HandleError(obj, why)
            lock = fresh_lock(obj)
            if lock is not None:
                self.save_reduce(*lock, obj=obj)
                return
            super().save(obj, save_persistent_id)

    if ndarray is not None:
        _PICKLER = Pickler  # numpy may be imported later: only cache once it was seen
    return Pickler


def _special_reducers() -> dict[type, Callable[[Any], Any]]:
    """Reductions for library types whose own pickling copies their data in band, by type,
    for the libraries imported now (none is imported here): PyTorch storages, polars frames.
    """
    out: dict[type, Callable[[Any], Any]] = {}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        out[numpy.ndarray] = _reduce_view
    torch = sys.modules.get("torch")
    try:
        out[torch.storage.TypedStorage] = out[torch.UntypedStorage] = _reduce_storage  # type: ignore[union-attr]
        out[torch.Tensor] = out[torch.nn.Parameter] = _reduce_tensor_with_grad  # type: ignore[union-attr]
    except AttributeError:  # no torch, or one without these classes: its own pickling
        pass
    polars = sys.modules.get("polars")
    try:
        out[polars.DataFrame] = out[polars.Series] = _reduce_polars  # type: ignore[union-attr]
    except AttributeError:
        pass
    blocks = sys.modules.get("pandas.core.internals.blocks")
    block = getattr(blocks, "NumpyBlock", None)
    if isinstance(block, type):
        out[block] = _reduce_block
    registry = _callback_registry()
    if registry is not None:
        out[registry] = _reduce_registry
    out[enum.EnumMeta] = _reduce_enum_class
    return out


def _reduce_enum_class(cls: Any) -> Any:
    """An enum class defined in the notebook: rebuilt from its members and methods.

    dill cannot pickle one by value (each member names its class again: it gives up on
    the recursion and pickles the class by name, which a new kernel does not have), so a
    restore lost the class and every variable saved with it. A class whose own ``__new__``
    sets the members' values cannot be made again this way: it is refused, so that the
    save says so (the variable is skipped, with why), rather than the restore.
    """
    if not _by_value(cls):
        return NotImplemented
    prefix = f"{cls.__qualname__}."
    attrs: dict[str, Any] = {"__module__": cls.__module__, "__doc__": cls.__doc__}
    for key, value in vars(cls).items():
        func = getattr(value, "__func__", getattr(value, "fget", value))
        if isinstance(func, types.FunctionType) and func.__qualname__.startswith(prefix):
            attrs[key] = value
    # Enum moves a body's __new__ aside (to _new_member_, or __new_member__ in 3.10).
    if any(getattr(v, "__name__", None) == "__new__" for v in attrs.values()):
        raise pickle.PicklingError(
            f"the enum {cls.__qualname__} defined in the notebook has its own __new__, which "
            "the store cannot rebuild; define it in a module the notebook imports to keep it"
        )
    members = [(name, member._value_) for name, member in cls._member_map_.items()]
    return _rebuild_enum, (type(cls), cls.__name__, cls.__qualname__, cls.__bases__, members, attrs)


def _rebuild_enum(
    meta: type,
    name: str,
    qualname: str,
    bases: tuple[type, ...],
    members: list[tuple[str, Any]],
    attrs: dict[str, Any],
) -> Any:
    """Counterpart of ``_reduce_enum_class``: the class body made again, then the class."""
    body = meta.__prepare__(name, bases)
    for key, value in [*attrs.items(), *members]:
        body[key] = value
    cls = meta(name, bases, body)
    cls.__qualname__ = qualname
    return cls


def _callback_registry() -> type | None:
    """matplotlib's ``CallbackRegistry``, if matplotlib is imported."""
    found = getattr(sys.modules.get("matplotlib.cbook"), "CallbackRegistry", None)
    return found if isinstance(found, type) else None


def _reduce_registry(obj: Any) -> Any:
    """A matplotlib ``CallbackRegistry`` (every figure and axes holds some), pickled as
    matplotlib pickles it, with its callback-id counter set back afterwards.

    Its ``__getstate__`` takes the next id from the counter (``next(self._cid_gen)``), so
    each pickling changed the figure: the change scan, which pickles every variable, found
    every figure changed after every cell, and auto mode saved them again each time.
    """
    reduced = obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
    step = state.get("_cid_gen") if isinstance(state, dict) else None
    if type(step) is int:
        obj._cid_gen = itertools.count(step)  # the id __getstate__ took is given out next
    return reduced


def _reduce_block(obj: Any) -> Any:
    """A pandas block whose values view an array something else holds (``pd.DataFrame(X,
    copy=False)``, ``df.to_numpy()``): pickled the older way, values as they are, so that
    ``_reduce_view`` keeps them a view of that array. pandas' own protocol-5 pickling makes
    a contiguous copy of them first, and the restored frame no longer shared ``X``."""
    values = getattr(obj, "values", None)
    if (
        type(getattr(values, "base", None)) is not type(values)
        or _reduce_view(values) is NotImplemented
    ):
        return NotImplemented
    return obj.__reduce__()


def _reduce_view(obj: Any) -> Any:
    """A NumPy view of another array: that array, pickled once and shared, and where in
    its memory the view lies. NotImplemented for any other array (NumPy's own pickling).

    NumPy pickles a view as a copy of what it shows: ``X_train = X[:800]`` came back as a
    second array, and a restore needed memory the kernel never did (and the copy was
    stored too). When something besides the view holds the array it views (a variable,
    another view, any object), that whole array is saved, as the kernel held it. An array
    only this view holds (NumPy's own restores make one per array) is nobody else's to
    see: the view is pickled as NumPy does. Only plain arrays laid out in one block (which
    pickling keeps as it is, be it a view itself), without Python objects, and only when
    the view can be rebuilt from that block now.
    """
    if _holders(obj) <= _held_by_view_alone():
        return NotImplemented
    base = obj.base
    numpy = sys.modules["numpy"]
    if (
        type(base) is not numpy.ndarray
        or obj.dtype.hasobject
        or base.dtype.hasobject
        or not obj.size
        or not (base.flags.c_contiguous or base.flags.f_contiguous)
    ):
        return NotImplemented
    offset = obj.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    args = (base, offset, obj.shape, obj.strides, obj.dtype, obj.flags.writeable)
    try:
        _view_of(*args)  # what a restore will do, on a block of the same layout
    except (TypeError, ValueError):
        return NotImplemented
    return _view_of, args


def _holders(obj: Any) -> int:
    """How many references the array ``obj`` views has (``sys.getrefcount``'s count)."""
    return sys.getrefcount(obj.base)


@functools.cache
def _held_by_view_alone() -> int:
    """``_holders`` of a view whose array nothing else holds, measured once here (the
    count differs between Python versions)."""
    numpy: Any = importlib.import_module("numpy")
    return _holders(numpy.arange(2)[:1])


def _view_of(base: Any, offset: int, shape: Any, strides: Any, dtype: Any, writeable: bool) -> Any:
    """Counterpart of ``_reduce_view``: the view, over the restored array's memory."""
    numpy: Any = importlib.import_module("numpy")

    view = numpy.ndarray(shape, dtype, buffer=base, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def _storage_types() -> frozenset[type]:
    """PyTorch's storage classes, when PyTorch is imported."""
    return frozenset(k for k, v in _special_reducers().items() if v is _reduce_storage)


def _reduce_polars(obj: Any) -> Any:
    """A polars DataFrame or Series as an Arrow table, whose buffers go out of band.

    polars pickles a frame as its own serialized bytes, in band: a copy of every column
    inside the pickle. Arrow hands its buffers over without a copy. Used only when the
    Arrow schema reads back as the same polars schema (checked on zero rows); otherwise
    (an Object column, a type Arrow cannot carry) polars' own pickling, exact, is used.
    """
    pl = sys.modules["polars"]
    series = isinstance(obj, pl.Series)
    frame = obj.to_frame() if series else obj
    try:
        table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
        if pl.from_arrow(table.slice(0, 0), rechunk=False).schema != frame.schema:
            return NotImplemented
    except Exception:  # a column Arrow cannot carry: polars' own way
        return NotImplemented
    return _polars_from_arrow, (table, series)


def _polars_from_arrow(table: Any, series: bool) -> Any:
    """Counterpart of ``_reduce_polars``."""
    pl: Any = importlib.import_module("polars")
    frame = pl.from_arrow(table, rechunk=False)
    return frame.to_series() if series else frame


def _reduce_storage(obj: Any) -> Any:
    """A PyTorch storage as its raw bytes, handed out of band like an array's.

    PyTorch's own pickling runs ``torch.save`` on each storage into an in-band bytes
    object: a copy of the whole model inside the pickle, never chunked or deduplicated.
    Here a tensor pickles as PyTorch pickles it (dtype, shape, strides, ``requires_grad``)
    except for its storage, whose bytes go to the store as a buffer; tensors sharing a
    storage share it again after a restore (PyTorch keeps one Python object per storage,
    so the pickle's memo sees it once). A storage on another device is saved from a CPU
    copy and goes back to that device when it exists (see ``_storage_from_buffer``).
    """
    torch = sys.modules["torch"]
    if isinstance(obj, torch.storage.TypedStorage):
        return _typed_storage, (obj._untyped_storage, obj.dtype)
    numpy = sys.modules.get("numpy")
    device = obj.device
    if numpy is None or device.type == "meta":
        return NotImplemented  # PyTorch's own way: no data, or no array to hand over
    cpu = obj if device.type == "cpu" else obj.cpu()
    if cpu.nbytes() == 0:
        return _storage_from_buffer, (bytearray(), str(device))
    data = torch.empty(0, dtype=torch.uint8).set_(cpu).numpy()  # the storage's bytes, no copy
    return _storage_from_buffer, (pickle.PickleBuffer(data), str(device))


def _reduce_tensor_with_grad(obj: Any) -> Any:
    """A tensor whose ``.grad`` is set: PyTorch's own reduction, then the gradient.

    PyTorch drops ``.grad`` when it pickles a tensor (so does ``torch.save``): a loop that
    accumulates gradients over several batches would resume with them gone. A tensor
    without a gradient is pickled as PyTorch pickles it.
    """
    if obj.grad is None:
        return NotImplemented
    reduced = obj.__reduce_ex__(PROTOCOL)
    if not isinstance(reduced, tuple) or len(reduced) != 2:
        return NotImplemented  # a shape of reduction not seen before: PyTorch's own
    return _with_grad, (reduced[0], reduced[1], obj.grad)


def _with_grad(rebuild: Callable[..., Any], args: tuple[Any, ...], grad: Any) -> Any:
    """Counterpart of ``_reduce_tensor_with_grad``."""
    tensor = rebuild(*args)
    tensor.grad = grad
    return tensor


def _storage_from_buffer(data: Any, device: str) -> Any:
    """Counterpart of ``_reduce_storage``: a storage over the restored bytes (no copy)."""
    torch: Any = importlib.import_module("torch")

    view = memoryview(data)
    if view.readonly:  # PyTorch writes into its storages: give it memory of its own
        data = bytearray(view)
    storage = (
        torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
        if view.nbytes
        else torch.UntypedStorage(0)
    )
    if device == "cpu":
        return storage
    try:
        return storage.to(device=torch.device(device))
    except (RuntimeError, AssertionError, AttributeError, TypeError) as e:
        import warnings

        warnings.warn(
            f"a tensor saved on {device} was restored on the CPU: {device} is not available "
            f"here ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
            f"move it with .to('{device}') once it is",
            RuntimeWarning,
            stacklevel=2,
        )
        return storage


def _typed_storage(untyped: Any, dtype: Any) -> Any:
    torch: Any = importlib.import_module("torch")

    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


#: Buffers under this many bytes are pickled in band. Out of band each would be a blob of
#: its own: a file to open, hash and check at every restore (a matplotlib figure holds
#: hundreds of arrays of a few bytes), for content too small to gain from dedup.
IN_BAND_MAX = 4096


def _keep(buffers: list[memoryview], on_buffer: OnBuffer | None = None) -> Any:
    def keep(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:
            return True  # not contiguous: let pickle copy it in-band
        if raw.nbytes < IN_BAND_MAX:
            return True
        buffers.append(raw)
        if on_buffer is not None:
            on_buffer(raw)
        return False

    return keep


def _by_value(obj: object) -> bool:
    """Whether a function or class must travel by value: defined in the notebook, or nameless.

    In a kernel, ``__main__`` is the notebook's namespace: its functions look importable
    here, yet a new kernel has none of them until they are restored.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "") or ""
    if module in (None, "__main__", "__mp_main__") or "<" in qualname:
        return True
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is not obj


def _load_by_value(data: bytes) -> Any:
    """Counterpart of a by-value reduction: dill rebuilds the function or class."""
    return guarded_loads(data)


class _FastPickler(pickle.Pickler):
    """The C pickler; only notebook-defined functions and classes go through dill.

    dill's own Pickler is written in Python and is ten times slower on many small
    objects or string columns; most of a notebook's state needs none of its powers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._special = _special_reducers()

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.ModuleType:
            return importlib.import_module, (obj.__name__,)
        special = self._special.get(kind)
        if special is not None:
            return special(obj)
        if (kind is types.FunctionType or isinstance(obj, type)) and _by_value(obj):
            if not _alone(obj):
                raise _NeedsDill(obj)
            return _load_by_value, (_dill_dumps(obj, []),)
        return NotImplemented


class _NeedsDill(Exception):
    """This group shares notebook code in ways only one dill pickle keeps intact."""


def _alone(obj: Any) -> bool:
    """Whether ``obj`` pickled by value on its own shares nothing with the rest of the group.

    A class whose base is also notebook code, or a function that closes over objects,
    would come back as a separate copy of what it refers to: such groups go to dill whole.
    """
    if isinstance(obj, type):
        return not any(_by_value(base) for base in obj.__mro__[1:])
    if obj.__closure__:
        return False
    defaults = (*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values())
    return all(isinstance(value, _ATOMIC) for value in defaults)


def _dill_dumps(obj: object, buffers: list[memoryview], on_buffer: OnBuffer | None = None) -> bytes:
    out = io.BytesIO()
    keep = _keep(buffers, on_buffer)
    _pickler_class()(out, protocol=PROTOCOL, buffer_callback=keep).dump(obj)
    return out.getvalue()


class _Yielding(io.BytesIO):
    """Pickle output that lets other threads take the GIL at each 64 KiB frame, when asked.

    The C pickler runs no Python code while it pickles lists, dicts and other builtins, so
    it keeps the GIL throughout (tens of ms for 100,000 small dicts). A thread hashing the
    buffers handed over releases the GIL while it hashes, but needs it back between two
    buffers, and would wait for the end of pickling. The pickler writes each full frame
    to its file; while ``share()`` says hashing goes on, each write yields the GIL.
    """

    def __init__(self, share: ShareGil) -> None:
        super().__init__()
        self._share = share

    def write(self, data: Any) -> int:
        n = super().write(data)
        if self._share():
            time.sleep(0)  # releases the GIL, for a thread waiting for it
        return n


def _dumps(
    obj: object,
    buffers: list[memoryview],
    on_buffer: OnBuffer | None = None,
    share_gil: ShareGil | None = None,
) -> tuple[bytes, str]:
    """Pickle ``obj``: the C pickler when it can, dill for the whole of it otherwise.

    Returns the payload and which unpickler it needs (``"pickle"`` or ``"dill"``).
    """
    out = io.BytesIO() if share_gil is None else _Yielding(share_gil)
    try:
        keep = _keep(buffers, on_buffer)
        _FastPickler(out, protocol=PROTOCOL, buffer_callback=keep).dump(obj)
        return out.getvalue(), "pickle"
    except Exception:  # locks, code objects, open files...: what dill alone can do
        del buffers[:]
    return _dill_dumps(obj, buffers, on_buffer), "dill"


def _reason(error: BaseException, value: object = None) -> str:
    if isinstance(error, HandleError):
        # The variable itself is the handle, or holds one somewhere inside.
        return error.reason if error.obj is value else f"holds {error.reason}"
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def capture_rng() -> bytes | None:
    """Pickle Python's ``random`` state, NumPy's global state and PyTorch's global CPU
    generator (dropout, ``torch.randn``), for the libraries imported now."""
    state: dict[str, Any] = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            state["numpy"] = np.random.get_state()
        except Exception:  # pragma: no cover - a numpy without the legacy global state
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        try:  # as bytes: nothing of PyTorch's own pickling in the manifest
            state["torch"] = bytes(torch.get_rng_state().numpy().tobytes())
        except Exception:  # a torch without the CPU generator API: not restored, not said
            pass
    return pickle.dumps(state, protocol=PROTOCOL)


def restore_rng(payload: bytes) -> list[str]:
    """Put the random states back; returns which ones."""
    state = pickle.loads(payload)
    restored = []
    if "random" in state:
        random.setstate(state["random"])
        restored.append("random")
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
        restored.append("numpy.random")
    if "torch" in state:
        try:
            torch: Any = importlib.import_module("torch")
        except ImportError:  # the restore names the variables it could not bring back
            return restored
        torch.set_rng_state(torch.frombuffer(bytearray(state["torch"]), dtype=torch.uint8))
        restored.append("torch")
    return restored


def serialize(
    namespace: Mapping[str, Any],
    names: Iterable[str] | None = None,
    *,
    include_credentials: bool = False,
    with_rng: bool = True,
    on_buffer: OnBuffer | None = None,
    share_gil: ShareGil | None = None,
    kept: Sequence[Sequence[str]] = (),
) -> Snapshot:
    """Pickle the chosen variables of ``namespace`` with dill, protocol 5, buffers out of band.

    Variables whose object graphs overlap are pickled together, so ``b = a`` or an
    optimizer holding a model's arrays come back as shared objects. Modules are recorded
    as imports. A variable that cannot be pickled is skipped and reported with its reason;
    the rest are still saved.

    ``on_buffer`` sees each out-of-band buffer the moment the pickler hands it over, so
    the caller can hash it on other threads while the pickling goes on. It may also see
    buffers of an attempt that failed and was redone: only ``Group.buffers`` count.
    Plain containers, the slow part, are pickled after everything else. While
    ``share_gil()`` returns True, the C pickler lets other threads take the GIL between
    two 64 KiB frames of output (those threads need it between two buffers).

    Examples
    --------
    >>> snap = serialize({"x": [1, 2], "os": __import__("os")})
    >>> snap.modules
    {'os': 'os'}
    """
    chosen = list(namespace) if names is None else [n for n in names if n in namespace]
    # Counted before anything here holds the values (see ``_held_elsewhere``).
    elsewhere = bool(kept) and _held_elsewhere(namespace, chosen)
    modules: dict[str, str] = {}
    skipped: dict[str, dict[str, str]] = {}
    withheld: dict[str, dict[str, str]] = {}
    secrets: list[str] = []
    keep: list[str] = []
    budget = SAVE_NODES  # the credential walk's, shared by the variables of this save
    for name in chosen:
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        if not include_credentials:
            nodes = max(MIN_NODES, min(MAX_NODES, budget))
            budget -= nodes
            found = find_credentials(name, value, max_nodes=nodes)
            if found:
                withheld[name] = {
                    "type": type_name(value),
                    "reason": describe(name, found),
                    "where": ", ".join(f.where for f in found),
                }
                secrets.extend(f.value for f in found if f.value)
                continue
        keep.append(name)

    values = [namespace[n] for n in keep]
    grouping = _Grouping(_module_dict_ids() | {id(namespace)})
    grouping.add(values)
    redone: list[int] = []
    if kept and (elsewhere or grouping.reaches_shared()):
        # A variable saved now may share with a group kept from the last checkpoint
        # (``x.append(records[0])`` changes `x` alone): such a group is pickled again
        # with it, or the restore would give two objects where the notebook had one.
        first = len(values)
        spans = []
        for names_ in kept:
            spans.append((len(grouping.parent), len(names_)))
            grouping.add([namespace[n] for n in names_])
        roots_ = grouping.roots()
        fresh_roots = set(roots_[:first])
        for index, (at, size) in enumerate(spans):
            if fresh_roots.intersection(roots_[at : at + size]):
                redone.append(index)
                keep.extend(kept[index])
        roots = [roots_[i] for i in range(first)] + [
            roots_[at + i] for index in redone for at, size in [spans[index]] for i in range(size)
        ]
    else:
        roots = grouping.roots()
    by_root: dict[int, list[str]] = {}
    for name, root in zip(keep, roots):
        by_root.setdefault(root, []).append(name)

    pickled: dict[int, list[Group]] = {}
    for root in sorted(by_root, key=lambda root: _slow(namespace, by_root[root])):
        pickled[root] = _pickle_group(namespace, by_root[root], skipped, on_buffer, share_gil)
    groups = [group for root in by_root for group in pickled[root]]
    types_ = {n: type_name(namespace[n]) for n in keep if n not in skipped}
    shapes = {n: s for n in types_ if (s := shape_of(namespace[n])) is not None}
    rng = capture_rng() if with_rng else None
    return Snapshot(groups, types_, modules, skipped, withheld, rng, secrets, shapes, redone)


def _held_elsewhere(namespace: Mapping[str, Any], names: list[str]) -> bool:
    """Whether the object of any of these variables has a holder besides the namespace,
    so that another variable could reach it (``x = records[0]``): ``sys.getrefcount``
    against the count of an object only a namespace holds, measured alike. A holder
    that is not a variable (IPython's ``_``) only makes the check look further."""
    return any(map(_held_by_namespace().__lt__, _root_counts(namespace, names)))


def _root_counts(namespace: Mapping[str, Any], names: list[str]) -> list[int]:
    values = [namespace[name] for name in names]
    followed = list(filter(_may_be_shared, values))
    return list(map(sys.getrefcount, followed))


def _may_be_shared(value: object) -> bool:
    """False for what is shared without harm: scalars, strings, what pickles by reference."""
    if isinstance(value, (*_ATOMIC, types.ModuleType)):
        return False
    return not isinstance(value, (type, types.FunctionType)) or _by_value(value)


@functools.cache
def _held_by_namespace() -> int:
    return _root_counts({"name": [0]}, ["name"])[0]


def _slow(namespace: Mapping[str, Any], names: list[str]) -> bool:
    """Whether a group holds a plain container, which pickles slowly and has no buffers."""
    return any(isinstance(namespace[name], _CONTAINERS) for name in names)


def _fast_first(namespace: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The group's variables as the dict to pickle, plain containers last.

    Large buffers then reach ``on_buffer`` before the slow pickling of small objects.
    """
    order = sorted(names, key=lambda n: isinstance(namespace[n], _CONTAINERS))
    return {n: namespace[n] for n in order}


def _pickle_group(
    namespace: Mapping[str, Any],
    names: list[str],
    skipped: dict[str, dict[str, str]],
    on_buffer: OnBuffer | None = None,
    share_gil: ShareGil | None = None,
) -> list[Group]:
    buffers: list[memoryview] = []
    try:
        payload, pickler = _dumps(_fast_first(namespace, names), buffers, on_buffer, share_gil)
        return [Group(names, payload, buffers, pickler)]
    except Exception as error:
        if len(names) == 1:
            value = namespace[names[0]]
            skipped[names[0]] = {"type": type_name(value), "reason": _reason(error, value)}
            return []
    # Find the culprits one by one, then keep the rest together so their sharing survives.
    good = []
    for name in names:
        try:
            _dumps(namespace[name], [])
            good.append(name)
        except Exception as error:
            value = namespace[name]
            skipped[name] = {"type": type_name(value), "reason": _reason(error, value)}
    if not good:
        return []
    buffers = []
    try:
        payload, pickler = _dumps(_fast_first(namespace, good), buffers, on_buffer, share_gil)
        return [Group(good, payload, buffers, pickler)]
    except Exception:
        # Each pickles alone but not together: save them apart rather than lose them.
        out = []
        for name in good:
            bufs: list[memoryview] = []
            try:
                payload, pickler = _dumps({name: namespace[name]}, bufs, on_buffer, share_gil)
                out.append(Group([name], payload, bufs, pickler))
            except Exception as error:
                value = namespace[name]
                skipped[name] = {"type": type_name(value), "reason": _reason(error, value)}
        return out


def deserialize(payload: bytes, buffers: list[Any], pickler: str = "dill") -> dict[str, Any]:
    """Unpickle one group. Call only on data whose signature and hashes were verified.

    A pickle that asks to reopen a file (dill does for file objects) raises
    ``HandleRefused`` instead: a restore never touches the user's files.

    The garbage collector is paused meanwhile (see :mod:`nbcheckpoint.gcpause`): 100,000
    small dicts load in 43 ms instead of 134 ms here.
    """
    with paused():
        loaded = guarded_loads(payload, buffers, use_dill=pickler != "pickle")
    if not isinstance(loaded, dict):
        raise TypeError("a checkpoint group did not hold a dict of variables")
    return loaded
