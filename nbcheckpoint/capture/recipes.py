"""How each variable was made: the statements of the cells that assigned or changed it, kept so that a variable a checkpoint cannot pickle can be recomputed after a restore.

A *recipe* is a list of steps, one per cell, each with the cell's id (when the frontend
sends one), execution count, the sha256 of the cell's text, and the top-level statements
of that cell that bound the variable (``=``, ``+=``, ``for``/``with`` targets,
``def``/``class``; modules need none, they come back as imports) or changed it in place (a method call ``conn.execute(...)``, an item or
attribute assignment, ``next(gen)``). A new binding starts the recipe over. The free names
the steps read are worked out when a checkpoint is written.

Nothing here runs a recipe on its own: :func:`run_recipes` runs the steps it is given, in
the order :func:`plan_recompute` worked out, and keeps only the variables asked for (every
other name the steps bind is put back as it was).

Examples
--------
>>> book = RecipeBook()
>>> book.record("import sqlite3\\nconn = sqlite3.connect(':memory:')\\nconn.execute('create table t (x)')",
...             cell_id="c1", execution_count=1)
>>> r = book.recipe("conn")
>>> [s["code"] for s in r["steps"]]
["conn = sqlite3.connect(':memory:')\\nconn.execute('create table t (x)')"]
>>> r["reads"]
['sqlite3']
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..store.manifest import Recipe
from ..store.manifest import RecipeStep as Step

#: Steps kept per variable: a variable changed by more cells than this gets no recipe.
MAX_STEPS = 16
#: Cells larger than this are not analysed (their statements would bloat every manifest).
MAX_CELL = 200_000
#: Magics whose argument or body runs as ordinary code in the user's namespace.
_LINE_MAGICS = frozenset({"time"})
_CELL_MAGICS = frozenset({"time", "checkpoint", "capture"})
_BUILTINS = frozenset(dir(builtins))


def source_hash(source: str) -> str:
    """The sha256 of a cell's text, as recipes record it.

    Examples
    --------
    >>> source_hash("x = 1")[:12]
    '8ff436def145'
    """
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------ statements
@dataclass(frozen=True)
class Statement:
    """One top-level statement of a cell: its text, the names it binds and those it changes."""

    code: str
    binds: frozenset[str]
    changes: frozenset[str]
    # Names bound by ``import``: modules come back as imports, they need no recipe.
    imports: frozenset[str] = frozenset()


def _magic_call(node: ast.stmt) -> tuple[str, str, str] | None:
    """``("line"|"cell", magic name, code)`` for ``get_ipython().run_*_magic('time', ...)``."""
    value = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)):
        return None
    owner = value.func.value
    if not (
        isinstance(owner, ast.Call)
        and isinstance(owner.func, ast.Name)
        and owner.func.id == "get_ipython"
    ):
        return None
    args = [a.value for a in value.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if len(args) != len(value.args):
        return None
    if value.func.attr == "run_line_magic" and len(args) == 2 and args[0] in _LINE_MAGICS:
        return "line", args[0], args[1]
    if value.func.attr == "run_cell_magic" and len(args) == 3 and args[0] in _CELL_MAGICS:
        return "cell", args[0], args[2]
    return None


def _scope_names(node: ast.AST) -> tuple[set[str], set[str]]:
    """(bound, changed) names of one statement in the cell's own scope (not inside
    functions, lambdas, comprehensions or class bodies)."""
    bound: set[str] = set()
    changed: set[str] = set()

    def base(expr: ast.AST) -> str | None:
        while isinstance(expr, (ast.Attribute, ast.Subscript)):
            expr = expr.value
        return expr.id if isinstance(expr, ast.Name) else None

    def walk(n: ast.AST) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
            for d in n.decorator_list:
                walk(d)
            return
        if isinstance(n, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    bound.add((alias.asname or alias.name).split(".")[0])
            return
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bound.add(n.id)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(
            n.ctx, (ast.Store, ast.Del)
        ):
            name = base(n)
            if name:
                changed.add(name)
        elif isinstance(n, ast.Call):
            if isinstance(n.func, ast.Attribute):
                name = base(n.func.value)
                if name:
                    changed.add(name)
            elif (
                isinstance(n.func, ast.Name)
                and n.func.id == "next"
                and n.args
                and isinstance(n.args[0], ast.Name)
            ):
                changed.add(n.args[0].id)
        for child in ast.iter_child_nodes(n):
            walk(child)

    walk(node)
    return bound, changed - bound


def _segment(lines: list[str], node: ast.stmt) -> str | None:
    """The statement's text as the user wrote it (comments inside it and all), which is
    both what a restore shows and what a recompute runs; None if it cannot be cut out."""
    end, end_col = node.end_lineno, node.end_col_offset
    if end is None or end_col is None or not 1 <= node.lineno <= end <= len(lines):
        return None
    # Column offsets count UTF-8 bytes.
    if node.lineno == end:
        text = lines[end - 1].encode()[node.col_offset : end_col].decode(errors="replace")
    else:
        first = lines[node.lineno - 1].encode()[node.col_offset :].decode(errors="replace")
        last = lines[end - 1].encode()[:end_col].decode(errors="replace")
        text = first + "".join(lines[node.lineno : end - 1]) + last
    return text if _parse(text) is not None else None


@lru_cache(maxsize=512)
def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def statements(python: str, transform: Callable[[str], str] | None = None) -> list[Statement]:
    """The top-level statements of a cell's Python text (IPython syntax already turned into
    Python), with the bodies of ``%time`` lines and ``%%time``/``%%checkpoint`` cells read as
    the code they run (``transform`` turns their IPython syntax into Python first).

    Examples
    --------
    >>> [(s.code, sorted(s.binds), sorted(s.changes)) for s in statements(
    ...     "for i in range(3):\\n    total += i\\nlog.append(total)")]
    [('for i in range(3):\\n    total += i', ['i', 'total'], []), ('log.append(total)', [], ['log'])]
    """
    module = _parse(python)
    if module is None:
        return []
    lines = python.splitlines(keepends=True)
    out: list[Statement] = []
    for node in module.body:
        magic = _magic_call(node)
        if magic is not None and isinstance(node, ast.Expr):
            inner = magic[2]
            try:
                inner = transform(inner) if transform is not None else inner
            except Exception:  # IPython's transformers raise on odd input: skip the body
                continue
            out.extend(statements(inner, transform))
            continue
        if magic is not None:
            continue  # ``x = %time f()`` binds x to the magic's result, not to f()
        bound, changed = _scope_names(node)
        if not (bound or changed):
            continue
        imports = bound if isinstance(node, (ast.Import, ast.ImportFrom)) else set()
        code = _segment(lines, node)
        if code is None:
            continue
        out.append(Statement(code, frozenset(bound), frozenset(changed), frozenset(imports)))
    return out


# ------------------------------------------------------------------ reads
class _Reads(ast.NodeVisitor):
    """Names a piece of code reads before binding them, in evaluation order (roughly)."""

    def __init__(self, bound: Iterable[str] = ()) -> None:
        self.bound = set(bound)
        self.reads: set[str] = set()

    def read(self, name: str) -> None:
        if name not in self.bound:
            self.reads.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.read(node.id)
        else:
            self.bound.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.visit(t)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for s in (*node.body, *node.orelse):
            self.visit(s)

    visit_AsyncFor = visit_For

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            self.bound.add((alias.asname or alias.name).split(".")[0])

    visit_ImportFrom = visit_Import

    def _function(self, node: Any, name: str | None) -> None:
        args = node.args
        for d in [*getattr(node, "decorator_list", []), *args.defaults, *args.kw_defaults]:
            if d is not None:
                self.visit(d)
        if name:
            self.bound.add(name)
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        inner = _Reads({*self.bound, *(a.arg for a in every if a is not None)})
        body = node.body if isinstance(node.body, list) else [node.body]
        # A function's own assignments are its locals (global declarations aside).
        local: set[str] = set()
        declared: set[str] = set()
        for s in body:
            for n in ast.walk(s):
                if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
                    local.add(n.id)
                elif isinstance(n, ast.Global):
                    declared.update(n.names)
        inner.bound |= local - declared
        for s in body:
            inner.visit(s)
        self.reads |= inner.reads - self.bound

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._function(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, None)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for n in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(n)
        inner = _Reads(self.bound)
        for s in node.body:
            inner.visit(s)
        self.reads |= inner.reads
        self.bound.add(node.name)

    def _comprehension(self, node: Any, results: list[ast.AST]) -> None:
        inner = _Reads(self.bound)
        for i, gen in enumerate(node.generators):
            # The first iterable is evaluated outside the comprehension's scope.
            (self if i == 0 else inner).visit(gen.iter)
            inner.visit(gen.target)
            for cond in gen.ifs:
                inner.visit(cond)
        for r in results:
            inner.visit(r)
        self.reads |= inner.reads - self.bound

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])


def reads_of(codes: Iterable[str]) -> list[str]:
    """The names a sequence of code pieces reads before binding them (builtins left out
    unless rebound), sorted.

    Examples
    --------
    >>> reads_of(["gen = (x * scale for x in data if x)", "next(gen)"])
    ['data', 'scale']
    >>> reads_of(["total += step"])
    ['step', 'total']
    """
    visitor = _Reads()
    for code in codes:
        module = _parse(code)
        if module is not None:
            for s in module.body:
                visitor.visit(s)
    return sorted(n for n in visitor.reads if n not in _BUILTINS)


# ------------------------------------------------------------------ the book
@dataclass
class _Entry:
    steps: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


class RecipeBook(Mapping[str, Mapping[str, Any]]):
    """Per variable, the steps that made it in this kernel: fed every cell's text before
    it runs (:meth:`record`), read as ``{name: recipe}`` when a checkpoint is written.

    Only the names a checkpoint skips are looked up, so the reads are worked out then.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._cache: dict[str, list[Statement]] = {}

    def _statements(self, python: str, transform: Callable[[str], str] | None) -> list[Statement]:
        found = self._cache.get(python)
        if found is None:
            found = statements(python, transform) if len(python) <= MAX_CELL else []
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[python] = found
        return found

    def record(
        self,
        source: str,
        *,
        python: str | None = None,
        cell_id: str | None = None,
        execution_count: int | None = None,
        transform: Callable[[str], str] | None = None,
        names: Callable[[str], bool] = lambda name: True,
    ) -> None:
        """Note what the cell ``source`` (its Python text ``python``) binds and changes.

        ``names`` says which names are the user's variables.
        """
        stmts = self._statements(source if python is None else python, transform)
        if not stmts:
            return
        per_name: dict[str, list[str]] = {}
        fresh: set[str] = set()
        for s in stmts:
            for name in s.imports:
                per_name.pop(name, None)
                fresh.discard(name)
                self._entries.pop(name, None)
            for name in s.binds - s.imports:
                if names(name):
                    per_name[name] = [s.code]
                    fresh.add(name)
            for name in s.changes:
                if name in per_name:
                    per_name[name].append(s.code)
                elif name in self._entries and names(name):
                    per_name[name] = [s.code]
        if not per_name:
            return
        digest = source_hash(source)
        for name, codes in per_name.items():
            step = {
                "cell_id": cell_id,
                "execution_count": execution_count,
                "source_hash": digest,
                "code": "\n".join(codes),
            }
            entry = self._entries.get(name)
            if name in fresh or entry is None:
                self._entries[name] = _Entry([step])
            elif entry.note is None:
                entry.steps.append(step)
                if len(entry.steps) > MAX_STEPS:
                    entry.steps = []
                    entry.note = f"changed by more than {MAX_STEPS} cells: no recipe kept"

    def forget(self, names: Iterable[str]) -> None:
        """Drop the recipes of ``names`` (their values came from a restore, not a cell)."""
        for name in names:
            self._entries.pop(name, None)

    def learn(self, name: str, recipe: Recipe) -> None:
        """Take over a recipe from a checkpoint (after a restore or a recompute)."""
        self._entries[name] = _Entry([step_dict(s) for s in recipe.steps], recipe.note)

    def recipe(self, name: str) -> dict[str, Any] | None:
        """The recipe of ``name`` as the manifest records it, or None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        return {
            "steps": [dict(s) for s in entry.steps],
            "reads": reads_of(s["code"] for s in entry.steps),
            "note": entry.note,
        }

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        found = self.recipe(name)
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Any:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


# ------------------------------------------------------------------ records read back
def step_dict(step: Step) -> dict[str, Any]:
    return {
        "cell_id": step.cell_id,
        "execution_count": step.execution_count,
        "source_hash": step.source_hash,
        "code": step.code,
    }


def describe(name: str, recipe: Recipe | None, indent: str = "    ") -> list[str]:
    """Lines that show a recipe before it runs (or why there is none).

    Examples
    --------
    >>> print("\\n".join(describe("gen", Recipe((Step("ab" * 32, "gen = iter(data)", None, 3),), ("data",)))))
    gen: from cell [3], reads data
        gen = iter(data)
    """
    if recipe is None:
        return [f"{name}: no recipe (the cell that made it is not known)"]
    if not recipe.steps:
        return [f"{name}: no recipe ({recipe.note or 'none was recorded'})"]
    cells = ", ".join(dict.fromkeys(s.cell for s in recipe.steps))
    reads = f", reads {', '.join(recipe.reads)}" if recipe.reads else ""
    lines = [f"{name}: from {cells}{reads}"]
    for step in recipe.steps:
        lines.extend(indent + line for line in step.code.splitlines())
    return lines


# ------------------------------------------------------------------ the notebook file
def notebook_cells(path: str, limit: int = 64 << 20) -> dict[str, str] | None:
    """``{cell id: source}`` of the code cells of the notebook file at ``path`` (ids absent
    in older notebooks come out as ``"#<index>"``), or None when it cannot be read.
    """
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > limit:
            return None
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        return None
    out: dict[str, str] = {}
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            continue
        ident = cell.get("id")
        out[ident if isinstance(ident, str) else f"#{i}"] = source
    return out


def changed_step(recipe: Recipe, cells: Mapping[str, str] | None) -> str | None:
    """Why a recipe may not run because its cells' text changed since, or None when it may.

    With a cell id, the cell of that id must still hash the same; without one, some cell
    of the notebook must. ``cells`` None: there is no notebook file to compare with.

    Examples
    --------
    >>> step = Step(source_hash("conn = connect()"), "conn = connect()", "c1", 2)
    >>> changed_step(Recipe((step,)), {"c1": "conn = connect(other)"})
    'cell [2] changed since the checkpoint (saved notebook); run that cell again instead'
    >>> changed_step(Recipe((step,)), {"c1": "conn = connect()"}) is None
    True
    """
    if cells is None:
        return None
    hashes = None
    for step in recipe.steps:
        if step.cell_id is not None and step.cell_id in cells:
            if source_hash(cells[step.cell_id]) != step.source_hash:
                return f"{step.cell} changed since the checkpoint (saved notebook); run that cell again instead"
            continue
        if step.cell_id is not None:
            return f"{step.cell} is not in the saved notebook; save it and retry, or run that cell again"
        if hashes is None:
            hashes = {source_hash(s) for s in cells.values()}
        if step.source_hash not in hashes:
            return f"{step.cell} changed since the checkpoint (saved notebook); run that cell again instead"
    return None


# ------------------------------------------------------------------ running
@dataclass
class Plan:
    """Which recipes run in which order, and which cannot run and why."""

    order: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def plan_recompute(
    wanted: Iterable[str],
    recipes: Mapping[str, Recipe],
    available: Callable[[str], bool],
    refuse: Callable[[str, Recipe], str | None] = lambda name, recipe: None,
) -> Plan:
    """Order the recipes of ``wanted`` so that each runs after the recipes of the other
    skipped variables it reads; a cycle, a dependency neither ``available`` nor
    recomputable, or a refusal by ``refuse`` is reported, never guessed around.

    Examples
    --------
    >>> r = {"cur": Recipe((Step("0" * 64, "cur = conn.cursor()"),), ("conn",)),
    ...      "conn": Recipe((Step("0" * 64, "conn = connect(path)"),), ("connect", "path"))}
    >>> plan_recompute(["cur", "conn"], r, lambda n: n in {"connect", "path"}).order
    ['conn', 'cur']
    >>> plan_recompute(["cur"], r, lambda n: n == "connect").refused["cur"]
    'needs conn, which needs path: not in the checkpoint nor the notebook'
    """
    plan = Plan()
    state: dict[str, str] = {}  # name -> "busy" | "done" | "failed"

    def visit(name: str, path: list[str]) -> str | None:
        """None when ``name`` can be recomputed after what it needs; else why not."""
        if state.get(name) == "done":
            return None
        if state.get(name) == "busy":
            cycle = " -> ".join([*path[path.index(name) :], name])
            return f"its recipe depends on itself ({cycle})"
        if name in plan.refused:
            return plan.refused[name]
        recipe = recipes.get(name)
        if recipe is None or not recipe.steps:
            note = recipe.note if recipe is not None and recipe.note else "no recipe was recorded"
            plan.refused[name] = note
            return note
        why = refuse(name, recipe)
        if why is None:
            state[name] = "busy"
            for dep in recipe.reads:
                if dep == name:
                    why = "its recipe needs its own earlier value"
                elif dep in recipes:
                    inner = visit(dep, [*path, name])
                    if inner is not None:
                        why = (
                            inner
                            if inner.startswith("its recipe depends on itself")
                            else f"needs {dep}, which {inner}"
                        )
                elif not available(dep):
                    why = f"needs {dep}: not in the checkpoint nor the notebook"
                if why is not None:
                    break
            state.pop(name, None)
        if why is not None:
            plan.refused[name] = why
            return why
        state[name] = "done"
        plan.order.append(name)
        return None

    for name in wanted:
        visit(name, [])
    return plan


@dataclass
class Outcome:
    """What recomputing one variable did."""

    name: str
    ok: bool
    detail: str


_MISSING = object()


def _put_back(namespace: dict[str, Any], was: Mapping[str, Any], names: Iterable[str]) -> None:
    """Give ``names`` the values in ``was`` again (unbinding those that had none)."""
    for n in names:
        if was[n] is _MISSING:
            namespace.pop(n, None)
        else:
            namespace[n] = was[n]


def run_recipes(
    order: Iterable[str],
    recipes: Mapping[str, Recipe],
    namespace: dict[str, Any],
    before: Callable[[str, Recipe], None] = lambda name, recipe: None,
) -> list[Outcome]:
    """Run each recipe of ``order`` in ``namespace`` and keep only its variable (and any other
    variable of ``order`` its statements made the same way): every other name the statements
    bind (a loop variable, a restored variable assigned again) is put back as it was, so a
    recipe cannot undo the restore. ``before`` runs first (to show the recipe). A failure
    puts back everything the recipe bound, is reported, and stops only what depends on it.

    The statements run in the namespace itself, not in a copy, so that what they define
    (a generator expression, a lambda) looks up globals there, as the cell's did.
    """
    outcomes: list[Outcome] = []
    failed: set[str] = set()
    done: set[str] = set()
    order = list(order)
    for name in order:
        if name in done:
            continue
        recipe = recipes[name]
        blocked = [d for d in recipe.reads if d in failed]
        if blocked:
            failed.add(name)
            outcomes.append(Outcome(name, False, f"not run: {', '.join(blocked)} failed"))
            continue
        before(name, recipe)
        bound = {name}
        for step in recipe.steps:
            for s in statements(step.code):
                bound |= s.binds
        was = {n: namespace.get(n, _MISSING) for n in bound}
        try:
            for step in recipe.steps:
                exec(compile(step.code, f"<recipe of {name}>", "exec"), namespace)
        except BaseException as e:
            _put_back(namespace, was, bound)
            if isinstance(e, KeyboardInterrupt):
                raise
            failed.add(name)
            outcomes.append(Outcome(name, False, f"{type(e).__name__}: {e}"))
            continue
        if namespace.get(name, _MISSING) is was[name]:
            _put_back(namespace, was, bound)
            failed.add(name)
            outcomes.append(Outcome(name, False, "its statements did not assign it"))
            continue
        # Variables made by the very same statements come back together, run once.
        twins = [
            n
            for n in order
            if n not in done and n in namespace and n in bound and recipes[n].steps == recipe.steps
        ]
        _put_back(namespace, was, bound - set(twins))
        for n in twins:
            done.add(n)
            outcomes.append(Outcome(n, True, type(namespace[n]).__name__))
    return outcomes
