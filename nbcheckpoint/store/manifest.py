"""The checkpoint manifest: one typed, frozen record of the current format, older formats upgraded step by step, anything malformed refused with one error.

A manifest body is JSON. Its ``format`` is a major version: a reader refuses a newer one
(:class:`~nbcheckpoint.errors.NewerFormat`, "upgrade nbcheckpoint"), and upgrades an older
one one step at a time (``_UPGRADES``, after nbformat's ``converter.py``) before checking
it. ``format_minor`` counts additions that older readers may ignore: fields they do not
know are kept in the raw body and left alone. After the upgrade, :func:`parse` checks
every field the code reads and builds a :class:`Manifest`; whatever the input (wrong
types, missing fields, deep nesting, huge numbers, control characters), the only error
it raises is :class:`~nbcheckpoint.errors.MalformedManifest`, naming the checkpoint id.

Examples
--------
>>> m = Manifest(id=3, notebook=NotebookInfo("k", "k.ipynb"), created=100.0, status="manual")
>>> parse(m.to_dict(), key="k", ident=3) == m
True
>>> get_version({"format": 1})
(1, 0)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from ..errors import MalformedManifest, NewerFormat

FORMAT = 2
# Minor 1: a variable may record its ``shape`` and ``dtype`` (arrays, DataFrames, Series), and
# ``recipes`` says how each skipped variable was made. Older readers ignore both.
FORMAT_MINOR = 1
STATUSES = ("running", "interrupted", "complete", "manual", "auto")
PICKLERS = ("pickle", "dill")
# Bounds that no real checkpoint comes near, so that a forged number cannot make a reader
# allocate, loop or format without end: 128 TiB per blob, a count below 2**53, the year 9999.
MAX_BYTES = 1 << 47
MAX_COUNT = (1 << 53) - 1
MAX_TIME = 253402300799.0
MAX_FORMAT = 1_000_000
MAX_DIMS = 64  # NumPy allows 64 dimensions
MAX_DTYPE = 300  # characters of a dtype summary
_HEX = frozenset("0123456789abcdef")


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes: the mappings of a frozen record (copyable and picklable,
    unlike ``MappingProxyType``)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a manifest record is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self  # its values are frozen records, tuples and text


_EMPTY: Mapping[str, Any] = FrozenDict()

T = TypeVar("T")


# ---------------------------------------------------------------- records
@dataclass(frozen=True)
class NotebookInfo:
    """The notebook a checkpoint belongs to: its store key and the path it had."""

    key: str
    path: str


@dataclass(frozen=True)
class CellInfo:
    """The cell that was running: what ``[5] for epoch in range(100):`` is made of."""

    execution_count: int | None = None
    first_line: str = ""
    source_hash: str | None = None
    cell_id: str | None = None
    # The user variables the notebook had when the cell ran (a restore names those it lacks).
    notebook_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Position:
    """Where in the cell the checkpoint was taken (safe point and loop counters)."""

    description: str | None = None
    sp: int | None = None
    counters: tuple[int, ...] = ()
    lengths: tuple[int | None, ...] = ()
    resumable: bool = False
    # Per loop id, the (pickled, base64) state of the random generator a resumed loop's
    # iterable draws its order from, taken when the loop began (see capture/iterate.py).
    rng_states: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class KernelInfo:
    """The kernel process that took the checkpoint."""

    pid: int | None = None
    host: str | None = None
    started: float | None = None


@dataclass(frozen=True)
class Group:
    """Variables pickled together: one pickle blob and the blobs of its buffers.

    ``chunks`` holds, for each buffer, how many consecutive blobs of ``buffers`` it was cut into.
    """

    names: tuple[str, ...]
    pickle: str
    buffers: tuple[str, ...] = ()
    size: int = 0
    pickler: str = "dill"
    chunks: tuple[int, ...] = ()

    def buffer_pieces(self) -> list[tuple[str, ...]]:
        """The blobs of each buffer, in order.

        Examples
        --------
        >>> Group(("x",), "p", ("a", "b", "c"), chunks=(2, 1)).buffer_pieces()
        [('a', 'b'), ('c',)]
        """
        counts = self.chunks or (1,) * len(self.buffers)
        out, start = [], 0
        for n in counts:
            out.append(self.buffers[start : start + n])
            start += n
        return out


@dataclass(frozen=True)
class Variable:
    """One saved variable: its type name, pickled size, and the group that holds it.

    ``shape`` and ``dtype`` are recorded for NumPy arrays and pandas objects (from format
    2.1 on; None otherwise). A DataFrame's ``dtype`` counts its columns by dtype:
    ``float64 x3, object x1``.
    """

    type: str
    size: int
    group: int
    shared_with: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class LeftOut:
    """A variable not saved: skipped (could not be pickled) or withheld (on purpose)."""

    type: str
    reason: str
    # Where inside the variable a withheld value was found, e.g. ``config['db']['password']``.
    where: str | None = None


@dataclass(frozen=True)
class RecipeStep:
    """Statements of one cell in a recipe: the cell (id, execution count, sha256 of its
    text when it ran) and the top-level statements that made or changed the variable."""

    source_hash: str
    code: str
    cell_id: str | None = None
    execution_count: int | None = None

    @property
    def cell(self) -> str:
        """``cell [4]``, ``cell 1f2e0a9b`` or ``a cell``: how messages name the cell."""
        if self.execution_count is not None:
            return f"cell [{self.execution_count}]"
        if self.cell_id:
            return f"cell {self.cell_id[:8]}"
        return "a cell"


@dataclass(frozen=True)
class Recipe:
    """How a skipped variable was made: its steps, the names they read, or why there are none."""

    steps: tuple[RecipeStep, ...] = ()
    reads: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True)
class Stats:
    """What the save cost."""

    bytes_new: int = 0
    bytes_written: int = 0
    bytes_total: int = 0
    duration: float | None = None


@dataclass(frozen=True)
class Manifest:
    """A checkpoint's manifest in the current format (``FORMAT``), every field checked."""

    id: int
    notebook: NotebookInfo
    created: float
    status: str
    cell: CellInfo | None = None
    position: Position | None = None
    kernel: KernelInfo = field(default_factory=KernelInfo)
    groups: tuple[Group, ...] = ()
    variables: Mapping[str, Variable] = field(default_factory=lambda: _EMPTY)
    modules: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    skipped: Mapping[str, LeftOut] = field(default_factory=lambda: _EMPTY)
    withheld: Mapping[str, LeftOut] = field(default_factory=lambda: _EMPTY)
    rng: str | None = None
    blobs: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # address -> size
    versions: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    stats: Stats = field(default_factory=Stats)
    parent: int | None = None
    format_minor: int = FORMAT_MINOR
    # Per skipped variable, how it was made (format_minor 1; absent before).
    recipes: Mapping[str, Recipe] = field(default_factory=lambda: _EMPTY)

    @property
    def total_bytes(self) -> int:
        return sum(self.blobs.values())

    @property
    def new_bytes(self) -> int:
        return self.stats.bytes_new

    def left_out(self) -> list[tuple[str, str, LeftOut]]:
        """(kind, name, entry) of every skipped, then every withheld variable, by name."""
        return [
            (kind, name, entries[name])
            for kind, entries in (("skipped", self.skipped), ("withheld", self.withheld))
            for name in sorted(entries)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of this manifest, as the store writes it."""
        return {
            "format": FORMAT,
            "format_minor": self.format_minor,
            "id": self.id,
            "parent": self.parent,
            "notebook": {"key": self.notebook.key, "path": self.notebook.path},
            "created": self.created,
            "status": self.status,
            "cell": None if self.cell is None else _fields(self.cell),
            "position": None if self.position is None else _position_dict(self.position),
            "kernel": _fields(self.kernel),
            "groups": [
                {
                    "names": list(g.names),
                    "pickle": g.pickle,
                    "buffers": list(g.buffers),
                    "size": g.size,
                    "pickler": g.pickler,
                    "chunks": list(g.chunks),
                }
                for g in self.groups
            ],
            "variables": {n: _variable_dict(v) for n, v in self.variables.items()},
            "modules": dict(self.modules),
            "skipped": {n: _fields(e) for n, e in self.skipped.items()},
            "withheld": {n: _fields(e) for n, e in self.withheld.items()},
            "rng": self.rng,
            "blobs": {h: {"size": size} for h, size in self.blobs.items()},
            "versions": dict(self.versions),
            "stats": _fields(self.stats),
            "recipes": {n: _recipe_dict(r) for n, r in self.recipes.items()},
        }


def _fields(record: Any) -> dict[str, Any]:
    return dict(vars(record))


def _variable_dict(v: Variable) -> dict[str, Any]:
    out = {**_fields(v), "shared_with": list(v.shared_with)}
    # Written only when known, so a body stays as a format 2.0 writer would have made it.
    if v.shape is None:
        del out["shape"]
    else:
        out["shape"] = list(v.shape)
    if v.dtype is None:
        del out["dtype"]
    return out


def _recipe_dict(recipe: Recipe) -> dict[str, Any]:
    return {
        "steps": [_fields(s) for s in recipe.steps],
        "reads": list(recipe.reads),
        "note": recipe.note,
    }


def _position_dict(position: Position) -> dict[str, Any]:
    return {
        **_fields(position),
        "counters": list(position.counters),
        "lengths": list(position.lengths),
        "rng_states": dict(position.rng_states),
    }


# ---------------------------------------------------------------- versions
def get_version(body: Any, ident: object = "?") -> tuple[int, int]:
    """The (format, format_minor) of a manifest body.

    Examples
    --------
    >>> get_version({"format": 2, "format_minor": 1})
    (2, 1)
    """
    if not isinstance(body, dict):
        raise MalformedManifest(ident, f"it is {_kind(body)}, not an object")
    major, minor = body.get("format"), body.get("format_minor", 0)
    if not (isinstance(major, int) and _is_int(major) and 1 <= major <= MAX_FORMAT):
        raise MalformedManifest(ident, "it has no format number")
    if not (isinstance(minor, int) and _is_int(minor) and 0 <= minor <= MAX_FORMAT):
        raise MalformedManifest(ident, "its format_minor is not a whole number")
    return major, minor


def _v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    """Format 1 grew fields as it went (a group's ``pickler``, ``chunks``; a cell's ``cell_id``;
    ``withheld``; ``parent``), each optional. Format 2 writes every one of them, and numbers
    the additions readers may ignore with ``format_minor``.

    Runs before the body is checked: it only fills in what is absent, whatever the rest holds.
    """
    out = dict(body)
    out["format"], out["format_minor"] = 2, 0
    for name, default in (
        ("parent", None),
        ("cell", None),
        ("position", None),
        ("kernel", {}),
        ("skipped", {}),
        ("withheld", {}),
        ("rng", None),
        ("versions", {}),
        ("stats", {}),
    ):
        out.setdefault(name, default)
    if isinstance(out.get("groups"), list):
        out["groups"] = [_group_v1_to_v2(g) for g in out["groups"]]
    return out


def _group_v1_to_v2(group: Any) -> Any:
    if not isinstance(group, dict):
        return group
    group = dict(group)
    group.setdefault("pickler", "dill")
    if group.get("chunks") is None and isinstance(group.get("buffers"), list):
        group["chunks"] = [1] * len(group["buffers"])
    return group


# One step per format: _UPGRADES[n] turns a format-n body into a format n+1 one.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def upgrade(body: Any, ident: object = "?") -> dict[str, Any]:
    """A body of any format this version knows, brought to ``FORMAT`` one step at a time.

    Raises ``NewerFormat`` for a format newer than ``FORMAT``.

    Examples
    --------
    >>> upgrade({"format": 1, "groups": [{"buffers": ["a", "b"]}]})["groups"]
    [{'buffers': ['a', 'b'], 'pickler': 'dill', 'chunks': [1, 1]}]
    """
    version, _ = get_version(body, ident)
    if version > FORMAT:
        raise NewerFormat(ident, version, FORMAT)
    while version < FORMAT:
        body = _UPGRADES[version](body)
        version += 1
    return dict(body)


def complete(body: Mapping[str, Any]) -> dict[str, Any]:
    """A body about to be written, in the current format with every optional field written out.

    The writer builds its body with groups that omit ``chunks`` when nothing was cut.
    """
    out = dict(body)
    out["format"], out["format_minor"] = FORMAT, FORMAT_MINOR
    if isinstance(out.get("groups"), list):
        out["groups"] = [_group_v1_to_v2(g) for g in out["groups"]]
    return out


# ---------------------------------------------------------------- for gc
_ADDRESS = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def referenced_addresses(data: bytes) -> set[str]:
    """Every blob address a manifest file may refer to, whether it can be read or not.

    For gc and retention, which must keep the blobs of a manifest they cannot read (a newer
    format, damage): any 64-hex-digit run in the file counts, wherever the format puts it.
    Keeping too much is safe; freeing a blob a checkpoint needs is not.

    Examples
    --------
    >>> sorted(referenced_addresses(b'{"format": 9, "new": ["' + b"ab" * 32 + b'"]}'))
    ['abababababababababababababababababababababababababababababababab']
    """
    return {m.decode("ascii") for m in _ADDRESS.findall(data)}


# ---------------------------------------------------------------- reading
def decode(raw: bytes, *, key: str, ident: int) -> tuple[Manifest, dict[str, Any]]:
    """The manifest in the signed JSON bytes ``raw``, and its body upgraded to the current format.

    Raises ``MalformedManifest`` or ``NewerFormat``, and nothing else.
    """
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise MalformedManifest(ident, "it is nested too deeply") from None
    except (ValueError, MemoryError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise MalformedManifest(ident, f"it is not JSON: {_short(str(e))}") from None
    body = upgrade(body, ident)
    return parse(body, key=key, ident=ident), body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse(body: Any, *, key: str, ident: int) -> Manifest:
    """Check a current-format body field by field and build its :class:`Manifest`.

    ``key`` and ``ident`` are where the manifest was found: a valid manifest copied over
    another id or notebook is refused. Raises ``MalformedManifest`` naming ``ident`` for
    anything the store would not have written, and ``NewerFormat`` for a newer format.
    """
    version, minor = get_version(body, ident)
    if version != FORMAT:
        if version > FORMAT:
            raise NewerFormat(ident, version, FORMAT)
        raise MalformedManifest(ident, f"format {version} was not upgraded")
    r = _Reader(ident)
    try:
        return r.manifest(body, key, minor)
    except RecursionError:  # pragma: no cover - the reader walks a fixed depth
        raise MalformedManifest(ident, "it is nested too deeply") from None


class _Reader:
    """Reads fields of known types, or raises ``MalformedManifest`` saying which field is wrong."""

    def __init__(self, ident: int) -> None:
        self.ident = ident

    def fail(self, where: str, what: str) -> MalformedManifest:
        return MalformedManifest(self.ident, f"{where} {what}")

    # ---- scalars
    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, not {_kind(value)}")
        return value

    def items(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, not {_kind(value)}")
        return value

    def need(self, parent: dict[str, Any], name: str, where: str) -> Any:
        if name not in parent:
            raise self.fail(f"{where}.{name}" if where else name, "is missing")
        return parent[name]

    def whole(self, value: Any, where: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
        if not _is_int(value):
            raise self.fail(where, f"must be a whole number, not {_kind(value)}")
        if not lo <= value <= hi:
            raise self.fail(where, f"is out of range ({_short(str(value))})")
        return int(value)

    def opt_whole(self, value: Any, where: str, lo: int = 0, hi: int = MAX_COUNT) -> int | None:
        return None if value is None else self.whole(value, where, lo, hi)

    def number(self, value: Any, where: str, lo: float = 0.0, hi: float = MAX_TIME) -> float:
        if not (_is_int(value) or isinstance(value, float)):
            raise self.fail(where, f"must be a number, not {_kind(value)}")
        number = float(value) if abs(value) < 1e300 else math.inf
        if not (math.isfinite(number) and lo <= number <= hi):
            raise self.fail(where, f"is out of range ({_short(repr(value))})")
        return number

    def opt_number(
        self, value: Any, where: str, lo: float = 0.0, hi: float = MAX_TIME
    ) -> float | None:
        return None if value is None else self.number(value, where, lo, hi)

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be text, not {_kind(value)}")
        return value

    def opt_text(self, value: Any, where: str) -> str | None:
        return None if value is None else self.text(value, where)

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, not {_kind(value)}")
        return value

    def hash(self, value: Any, where: str) -> str:
        if not (isinstance(value, str) and len(value) == 64 and set(value) <= _HEX):
            raise self.fail(where, "is not a blob address")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        return tuple(self.text(v, f"{where}[{i}]") for i, v in enumerate(self.items(value, where)))

    def table(self, value: Any, where: str, entry: Callable[[Any, str], T]) -> Mapping[str, T]:
        return FrozenDict(
            {
                name: entry(v, f"{where}[{_short(repr(name))}]")
                for name, v in self.obj(value, where).items()
            }
        )

    # ---- records
    def manifest(self, body: dict[str, Any], key: str, minor: int) -> Manifest:
        need = self.need
        ident = self.whole(need(body, "id", ""), "id", 1)
        notebook = self.notebook(need(body, "notebook", ""))
        # Signed fields bind a manifest to its place: a valid manifest copied over another
        # id or notebook is refused.
        if ident != self.ident or notebook.key != key:
            raise MalformedManifest(self.ident, "it belongs to another checkpoint id or notebook")
        status = self.text(need(body, "status", ""), "status")
        if status not in STATUSES:
            raise self.fail("status", f"is unknown ({_short(repr(status))})")
        blobs = self.table(need(body, "blobs", ""), "blobs", self.blob)
        for h in blobs:
            self.hash(h, f"blobs[{_short(repr(h))}]")
        groups = tuple(
            self.group(g, f"groups[{i}]", blobs)
            for i, g in enumerate(self.items(need(body, "groups", ""), "groups"))
        )
        variables = self.table(
            need(body, "variables", ""), "variables", lambda v, w: self.variable(v, w, len(groups))
        )
        rng = self.opt_text(need(body, "rng", ""), "rng")
        if rng is not None and rng not in blobs:
            raise self.fail("rng", "names a blob the manifest does not list")
        cell = need(body, "cell", "")
        position = need(body, "position", "")
        recipes = body.get("recipes", {}) if minor >= 1 else {}
        skipped = self.table(need(body, "skipped", ""), "skipped", self.left_out)
        for name in self.obj(recipes, "recipes"):
            if name not in skipped:
                raise self.fail(f"recipes[{_short(repr(name))}]", "is not a skipped variable")
        return Manifest(
            id=ident,
            notebook=notebook,
            created=self.number(need(body, "created", ""), "created"),
            status=status,
            cell=None if cell is None else self.cell(cell),
            position=None if position is None else self.position(position),
            kernel=self.kernel(need(body, "kernel", "")),
            groups=groups,
            variables=variables,
            modules=self.table(need(body, "modules", ""), "modules", self.text),
            skipped=skipped,
            withheld=self.table(need(body, "withheld", ""), "withheld", self.left_out),
            rng=rng,
            blobs=blobs,
            versions=self.table(need(body, "versions", ""), "versions", self.text),
            stats=self.stats(need(body, "stats", "")),
            parent=self.opt_whole(need(body, "parent", ""), "parent", 1),
            format_minor=minor,
            recipes=self.table(recipes, "recipes", self.recipe),
        )

    def notebook(self, value: Any) -> NotebookInfo:
        d = self.obj(value, "notebook")
        return NotebookInfo(
            self.text(self.need(d, "key", "notebook"), "notebook.key"),
            self.text(self.need(d, "path", "notebook"), "notebook.path"),
        )

    def blob(self, value: Any, where: str) -> int:
        return self.whole(
            self.need(self.obj(value, where), "size", where), f"{where}.size", 0, MAX_BYTES
        )

    def group(self, value: Any, where: str, blobs: Mapping[str, int]) -> Group:
        d = self.obj(value, where)
        need = self.need
        names = self.strings(need(d, "names", where), f"{where}.names")
        pickle = self.hash(need(d, "pickle", where), f"{where}.pickle")
        buffers = tuple(
            self.hash(h, f"{where}.buffers[{i}]")
            for i, h in enumerate(self.items(need(d, "buffers", where), f"{where}.buffers"))
        )
        pickler = self.text(need(d, "pickler", where), f"{where}.pickler")
        if pickler not in PICKLERS:
            raise self.fail(f"{where}.pickler", f"is unknown ({_short(repr(pickler))})")
        chunks = tuple(
            self.whole(n, f"{where}.chunks[{i}]", 1)
            for i, n in enumerate(self.items(need(d, "chunks", where), f"{where}.chunks"))
        )
        if sum(chunks) != len(buffers):
            raise self.fail(f"{where}.chunks", "do not add up to its buffers")
        for h in (pickle, *buffers):
            if h not in blobs:
                raise self.fail(where, "names a blob the manifest does not list")
        size = self.whole(need(d, "size", where), f"{where}.size", 0, MAX_BYTES)
        return Group(names, pickle, buffers, size, pickler, chunks)

    def variable(self, value: Any, where: str, groups: int) -> Variable:
        d = self.obj(value, where)
        need = self.need
        group = self.whole(need(d, "group", where), f"{where}.group")
        if group >= groups:
            raise self.fail(f"{where}.group", "names a group the manifest does not have")
        return Variable(
            type=self.text(need(d, "type", where), f"{where}.type"),
            size=self.whole(need(d, "size", where), f"{where}.size", 0, MAX_BYTES),
            group=group,
            shared_with=self.strings(d.get("shared_with", []), f"{where}.shared_with"),
            shape=self.shape(d.get("shape"), f"{where}.shape"),
            dtype=self.dtype(d.get("dtype"), f"{where}.dtype"),
        )

    def shape(self, value: Any, where: str) -> tuple[int, ...] | None:
        if value is None:
            return None
        dims = self.items(value, where)
        if len(dims) > MAX_DIMS:
            raise self.fail(where, f"has more than {MAX_DIMS} dimensions")
        return tuple(self.whole(n, f"{where}[{i}]") for i, n in enumerate(dims))

    def dtype(self, value: Any, where: str) -> str | None:
        text = self.opt_text(value, where)
        if text is not None and len(text) > MAX_DTYPE:
            raise self.fail(where, f"is longer than {MAX_DTYPE} characters")
        return text

    def left_out(self, value: Any, where: str) -> LeftOut:
        d = self.obj(value, where)
        return LeftOut(
            self.text(self.need(d, "type", where), f"{where}.type"),
            self.text(self.need(d, "reason", where), f"{where}.reason"),
            self.opt_text(d.get("where"), f"{where}.where"),
        )

    def recipe(self, value: Any, where: str) -> Recipe:
        d = self.obj(value, where)
        steps = tuple(
            self.recipe_step(s, f"{where}.steps[{i}]")
            for i, s in enumerate(self.items(self.need(d, "steps", where), f"{where}.steps"))
        )
        reads = self.strings(self.need(d, "reads", where), f"{where}.reads")
        for i, name in enumerate(reads):
            if not name.isidentifier():
                raise self.fail(f"{where}.reads[{i}]", "is not a variable name")
        return Recipe(steps, reads, self.opt_text(d.get("note"), f"{where}.note"))

    def recipe_step(self, value: Any, where: str) -> RecipeStep:
        d = self.obj(value, where)
        digest = self.text(self.need(d, "source_hash", where), f"{where}.source_hash")
        if not (len(digest) == 64 and set(digest) <= _HEX):
            raise self.fail(f"{where}.source_hash", "is not a sha256")
        return RecipeStep(
            source_hash=digest,
            code=self.text(self.need(d, "code", where), f"{where}.code"),
            cell_id=self.opt_text(d.get("cell_id"), f"{where}.cell_id"),
            execution_count=self.opt_whole(d.get("execution_count"), f"{where}.execution_count"),
        )

    def cell(self, value: Any) -> CellInfo:
        d = self.obj(value, "cell")
        return CellInfo(
            execution_count=self.opt_whole(d.get("execution_count"), "cell.execution_count"),
            first_line=self.opt_text(d.get("first_line"), "cell.first_line") or "",
            source_hash=self.opt_text(d.get("source_hash"), "cell.source_hash"),
            cell_id=self.opt_text(d.get("cell_id"), "cell.cell_id"),
            notebook_names=(
                None
                if d.get("notebook_names") is None
                else self.strings(d["notebook_names"], "cell.notebook_names")
            ),
        )

    def position(self, value: Any) -> Position:
        d = self.obj(value, "position")
        counters = d.get("counters", [])
        lengths = d.get("lengths", [])
        return Position(
            description=self.opt_text(d.get("description"), "position.description"),
            sp=self.opt_whole(d.get("sp"), "position.sp"),
            counters=tuple(
                self.whole(c, f"position.counters[{i}]")
                for i, c in enumerate(self.items(counters, "position.counters"))
            ),
            lengths=tuple(
                self.opt_whole(n, f"position.lengths[{i}]")
                for i, n in enumerate(self.items(lengths, "position.lengths"))
            ),
            resumable=self.flag(d.get("resumable", False), "position.resumable"),
            rng_states=self.table(d.get("rng_states") or {}, "position.rng_states", self.text),
        )

    def kernel(self, value: Any) -> KernelInfo:
        d = self.obj(value, "kernel")
        return KernelInfo(
            pid=self.opt_whole(d.get("pid"), "kernel.pid"),
            host=self.opt_text(d.get("host"), "kernel.host"),
            started=self.opt_number(d.get("started"), "kernel.started"),
        )

    def stats(self, value: Any) -> Stats:
        d = self.obj(value, "stats")
        return Stats(
            bytes_new=self.whole(d.get("bytes_new", 0), "stats.bytes_new", 0, MAX_BYTES),
            bytes_written=self.whole(
                d.get("bytes_written", 0), "stats.bytes_written", 0, MAX_BYTES
            ),
            bytes_total=self.whole(d.get("bytes_total", 0), "stats.bytes_total", 0, MAX_BYTES),
            duration=self.opt_number(d.get("duration"), "stats.duration"),
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
