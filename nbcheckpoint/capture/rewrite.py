"""Rewrite a cell's AST so that it offers safe points, and rebuild it to resume from one of them."""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "COUNT_FUNC",
    "DUE_FLAG",
    "LOOP_FUNC",
    "MARKER_LINE",
    "RESERVED_PREFIX",
    "RESUME_LOOP_FUNC",
    "SP_FUNC",
    "CellPlan",
    "Instrumented",
    "LoopInfo",
    "LoopKind",
    "Position",
    "SafePoint",
    "instrument",
]

#: Global flag a timer thread sets when a snapshot is due; testing it is the whole fast path.
DUE_FLAG = "_nbc_due_"
#: ``__nbc_sp__(sp_id, i1, n1, i2, n2, ...)``: take a snapshot at safepoint ``sp_id``.
SP_FUNC = "__nbc_sp__"
#: ``__nbc_loop__(iterable) -> (iterator, probe)``: what a for loop runs over, and where it is
#: (``probe.pos() -> (index, length)``), see :mod:`nbcheckpoint.capture.iterate`.
LOOP_FUNC = "__nbc_loop__"
#: ``__nbc_resume_loop__(loop_id, start, iterable)``: the same, from item ``start`` on.
RESUME_LOOP_FUNC = "__nbc_resume_loop__"
#: ``__nbc_count__(start) -> (iterator, probe)``: what a ``while`` loop is run over, endless
#: empty tuples whose count the probe reads (``for [] in it:`` stores nothing per iteration).
COUNT_FUNC = "__nbc_count__"
#: Every helper variable the rewrite creates starts with this; a snapshot should leave them out.
RESERVED_PREFIX = "_nbc_"
#: With ``markers=True``, the safepoint ``k`` of a tight loop is a ``pass`` on line
#: ``MARKER_LINE + k``: one NOP per iteration, which a line trace armed only when a snapshot
#: is due recognises (see :mod:`nbcheckpoint.capture.arm`). No cell has a million lines.
MARKER_LINE = 1_000_000

LoopKind = Literal["for", "while", "async for"]

# A statement list inside a compound statement: ("body", None), ("orelse", None),
# ("handlers", 2) for handlers[2].body, ("cases", 0) for cases[0].body.
_Key: TypeAlias = "tuple[str, int | None]"
# One step from a node to a child statement: the block it sits in and its index there; the
# first step of a path is (None, k) for the k-th top-level statement.
_Step: TypeAlias = "tuple[_Key | None, int]"
# The instrumented loops around a statement, outermost first; None where no position can be
# resumed (inside a def, a class or an async for).
_Chain: TypeAlias = "tuple[int, ...] | None"
_Node = TypeVar("_Node", bound=ast.AST)

_BODY: _Key = ("body", None)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
# ``try``/``except*`` (3.11+) has the same fields as ``try`` and resumes the same way.
_TRIES: tuple[type[ast.stmt], ...] = (ast.Try, getattr(ast, "TryStar", ast.Try))


@dataclass(frozen=True)
class LoopInfo:
    """A loop written in the cell.

    Parameters
    ----------
    id : int
        Loop id, assigned in source order from 1; the helper variables of the loop are named
        after it (``_nbc_it<id>_``, the iterator it runs over, and ``_nbc_p<id>_``, its probe).
    kind : {'for', 'while', 'async for'}
        The loop statement.
    target : str
        Source of the ``for`` target (``''`` for ``while``).
    iter : str
        Source of the iterable of a ``for``, or of the condition of a ``while``.
    lineno : int
        Line of the loop header in the cell.
    parent : int or None
        Id of the loop whose body contains this loop, without crossing a ``def``/``class`` or an
        ``else:`` clause.
    stmt : int
        Index of the top-level statement that contains the loop.
    resumable : bool
        Whether a position inside the loop can be resumed: False inside a ``def``, a ``class``,
        an ``async for``, a ``finally:`` or an ``except*`` handler, and for ``async for``
        itself (see ``instrument``).
    end_lineno : int
        Last line of the loop (its body or ``else:``).
    tight : bool
        Whether an iteration runs no call written in the cell: no function call,
        comprehension, ``with``, ``import``, ``await`` or ``yield`` in the body or, for a
        ``while``, in its condition (the iterable of a ``for`` is evaluated once and does not
        count). Such a loop reaches its next safepoint within one iteration wherever it is
        interrupted, so its safepoint can be a marker line (see ``MARKER_LINE``).

    Examples
    --------
    >>> plan = instrument(ast.parse("for epoch in range(3):\\n    pass")).plan
    >>> plan.loops[1].target, plan.loops[1].iter
    ('epoch', 'range(3)')
    """

    id: int
    kind: LoopKind
    target: str
    iter: str
    lineno: int
    parent: int | None
    stmt: int
    resumable: bool
    end_lineno: int = 0
    tight: bool = False


@dataclass(frozen=True)
class SafePoint:
    """A place where the instrumented cell may take a snapshot.

    Parameters
    ----------
    id : int
        Safepoint id, assigned in source order from 1 (the first argument of ``__nbc_sp__``).
    stmt : int
        Index of the top-level statement it belongs to. For a safepoint between top-level
        statements, statements ``0 .. stmt - 1`` are done and ``stmt`` is next.
    loops : tuple of int
        Ids of the instrumented loops around it, outermost first; empty between top-level
        statements and for non-resumable safepoints.
    resumable : bool
        Whether the cell can be resumed from here.
    lineno : int
        Line of the statement or loop header it stands for.

    Examples
    --------
    >>> plan = instrument(ast.parse("a = 1\\nfor i in range(2):\\n    pass")).plan
    >>> [(sp.stmt, sp.loops) for sp in plan.safepoints.values()]
    [(1, ()), (1, (1,))]
    """

    id: int
    stmt: int
    loops: tuple[int, ...]
    resumable: bool
    lineno: int


@dataclass(frozen=True)
class Position:
    """Where a snapshot was taken: a safepoint and the iteration index of each loop around it.

    Parameters
    ----------
    sp : int
        Safepoint id.
    counters : tuple of int
        0-based iteration index of each loop in ``plan.safepoints[sp].loops``, same order.

    Examples
    --------
    >>> import dataclasses, json
    >>> pos = Position(sp=4, counters=(2, 56))
    >>> Position.from_dict(json.loads(json.dumps(dataclasses.asdict(pos)))) == pos
    True
    """

    sp: int
    counters: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Position:
        """Build a position from ``dataclasses.asdict`` output, possibly after a JSON round trip.

        Parameters
        ----------
        data : mapping
            ``{"sp": int, "counters": [int, ...]}``.

        Returns
        -------
        Position

        Raises
        ------
        ValueError
            If a key is missing or a value is not a non-negative integer.

        Examples
        --------
        >>> Position.from_dict({"sp": 3, "counters": [0, 7]})
        Position(sp=3, counters=(0, 7))
        """
        try:
            sp, counters = data["sp"], data.get("counters", ())
            values = tuple(counters)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"Not a checkpoint position: {data!r} ({e})") from e
        if not _is_index(sp) or not all(_is_index(c) for c in values):
            raise ValueError(
                f"Not a checkpoint position: {data!r} (sp and counters must be integers >= 0)"
            )
        return cls(sp=sp, counters=values)


@dataclass(frozen=True)
class CellPlan:
    """The loops and safepoints of one cell, in the coordinates shared by all its runs.

    Parameters
    ----------
    loops : dict of int to LoopInfo
        Every loop written in the cell, by id.
    safepoints : dict of int to SafePoint
        Every safepoint inserted in the cell, by id.
    n_statements : int
        Number of top-level statements of the cell.
    markers : bool
        Whether the safepoints of tight loops were emitted as marker lines.

    Examples
    --------
    >>> plan = instrument(ast.parse("for epoch in range(100):\\n    pass")).plan
    >>> plan.describe(1, (56,), (100,))
    '`for epoch` at 57/100'
    """

    loops: dict[int, LoopInfo]
    safepoints: dict[int, SafePoint]
    n_statements: int
    markers: bool = False

    def marker_loops(self, sp_id: int) -> tuple[tuple[LoopKind, str, str], ...]:
        """Where to read the position of safepoint ``sp_id`` from, for each loop around it.

        A marker line carries no arguments, so whoever handles it reads them from the
        namespace: ``(kind, probe, "")`` for each loop, outermost first; ``probe.pos()`` is
        ``(index, length)`` (a ``while`` loop's length is None).

        Examples
        --------
        >>> plan = instrument(ast.parse("for i in range(9):\\n    t = i"), markers=True).plan
        >>> plan.marker_loops(1)
        (('for', '_nbc_p1_', ''),)
        """
        sp = self.safepoints.get(sp_id)
        if sp is None:
            return ()
        return tuple((self.loops[loop_id].kind, _probe(loop_id), "") for loop_id in sp.loops)

    def describe(
        self,
        sp_id: int,
        counters: Sequence[int] = (),
        lengths: Sequence[int | None] | None = None,
    ) -> str:
        """Say in a few words where a safepoint is, for messages such as "Resuming from ...".

        Iterations are shown 1-based: counter 56 of a 100-item loop reads "at 57/100",
        meaning that the 57th iteration is about to run its body.

        Parameters
        ----------
        sp_id : int
            Safepoint id.
        counters : sequence of int
            0-based iteration index of each loop around it (``Position.counters``).
        lengths : sequence of int or None, optional
            Length of each loop's iterable when known (the ``_nbc_n`` arguments of
            ``__nbc_sp__``).

        Returns
        -------
        str

        Examples
        --------
        >>> plan = instrument(ast.parse("a = 1\\nb = 2\\nwhile a:\\n    a -= 1")).plan
        >>> plan.describe(1)
        'statement 2 of 3'
        >>> plan.describe(3, (4,))
        '`while a` at 5'
        """
        sp = self.safepoints.get(sp_id)
        if sp is None:
            return f"unknown safepoint {sp_id}"
        if not sp.resumable:
            return f"line {sp.lineno} (inside a function, class or async for; not resumable)"
        if not sp.loops:
            return f"statement {sp.stmt + 1} of {self.n_statements}"
        parts = []
        for j, loop_id in enumerate(sp.loops):
            loop = self.loops[loop_id]
            what = loop.target if loop.kind == "for" else loop.iter
            label = f"`{loop.kind} {_shorten(what)}`"
            if j < len(counters):
                total = lengths[j] if lengths is not None and j < len(lengths) else None
                label += f" at {counters[j] + 1}" + (f"/{total}" if total is not None else "")
            parts.append(label)
        return ", ".join(parts)

    def check(self, position: Position) -> None:
        """Raise if the cell cannot be resumed at ``position``.

        Parameters
        ----------
        position : Position
            A recorded position.

        Raises
        ------
        ValueError
            If the safepoint is unknown or not resumable, or the counters do not match its
            loops. The message names the safepoint.

        Examples
        --------
        >>> instrument(ast.parse("x = 1\\ny = 2")).plan.check(Position(9))
        Traceback (most recent call last):
        ...
        ValueError: Cannot resume at safepoint 9: this cell has no such safepoint ...
        """
        sp = self.safepoints.get(position.sp)
        if sp is None:
            known = f"ids 1..{max(self.safepoints)}" if self.safepoints else "none"
            raise ValueError(
                f"Cannot resume at safepoint {position.sp}: this cell has no such safepoint "
                f"(it has {known}); was the cell edited since the checkpoint?"
            )
        if not sp.resumable:
            raise ValueError(
                f"Cannot resume at safepoint {sp.id} (line {sp.lineno}): it is inside a function, "
                "class or async for loop, which cannot be re-entered at a position."
            )
        if len(position.counters) != len(sp.loops):
            raise ValueError(
                f"Cannot resume at safepoint {sp.id} (line {sp.lineno}): it lies inside "
                f"{len(sp.loops)} loop(s) but the position has {len(position.counters)} "
                "counter(s)."
            )
        if not all(_is_index(c) for c in position.counters):
            raise ValueError(
                f"Cannot resume at safepoint {sp.id} (line {sp.lineno}): counters "
                f"{position.counters!r} must be integers >= 0."
            )


@dataclass(frozen=True)
class Instrumented:
    """The rewritten cell and its plan.

    Parameters
    ----------
    module : ast.Module
        New module to compile in place of the cell; the input module is left untouched.
    plan : CellPlan
        Loops and safepoints, identical for a normal and a resumed rewrite of the same source.
    """

    module: ast.Module
    plan: CellPlan


def instrument(
    module: ast.Module, *, resume: Position | None = None, markers: bool = False
) -> Instrumented:
    """Insert safepoints into a cell, or rebuild it to continue from a recorded position.

    Every ``for``/``while`` loop reachable from the top level without crossing a ``def`` or
    ``class`` gets iteration counters and a resumable safepoint at the top of its body; loops
    inside functions, classes and ``async for`` get a non-resumable one; a resumable safepoint
    sits between consecutive top-level statements (never after the last, whose value IPython
    may display). With ``resume``, statements that had finished are left out, the loops around
    the position continue at their recorded iterations, and everything after runs as usual.

    Loops inside ``finally:`` and ``except*`` handlers also get non-resumable safepoints: a
    ``finally`` may be running on behalf of an exception, ``break``, ``continue`` or
    ``return`` that a resumed run could not carry on with, and after one ``except*`` handler
    Python may run others for the rest of the exception group, which is gone after a restart.

    Parameters
    ----------
    module : ast.Module
        The parsed cell body.
    resume : Position, optional
        Position of the snapshot the namespace was restored from.
    markers : bool
        Emit the safepoint of each tight loop (see ``LoopInfo.tight``) as a ``pass`` on line
        ``MARKER_LINE + id`` instead of a flag test: it costs one NOP per iteration, and
        only works while something arms a line trace when a snapshot is due. Ids, positions
        and everything else are the same either way.

    Returns
    -------
    Instrumented
        The new module and the cell's plan.

    Raises
    ------
    ValueError
        If ``resume`` does not name a resumable safepoint of this cell with the right number of
        counters.

    Examples
    --------
    >>> src = "total = 0\\nfor i in range(3):\\n    total += i\\ntotal"
    >>> print(ast.unparse(instrument(ast.parse(src)).module))
    total = 0
    if _nbc_due_:
        __nbc_sp__(1)
    _nbc_it1_, _nbc_p1_ = __nbc_loop__(range(3))
    for i in _nbc_it1_:
        if _nbc_due_:
            __nbc_sp__(2, *_nbc_p1_.pos())
        total += i
    if _nbc_due_:
        __nbc_sp__(3)
    total
    """
    rewriter = _Rewriter(module, markers)
    plan = CellPlan(
        loops=dict(rewriter.loops),
        safepoints=dict(rewriter.safepoints),
        n_statements=len(module.body),
        markers=markers,
    )
    if resume is None:
        body = rewriter.normal()
    else:
        plan.check(resume)
        body = rewriter.resumed(resume)
    new = ast.Module(body=body, type_ignores=copy.deepcopy(module.type_ignores))
    ast.fix_missing_locations(new)
    return Instrumented(module=new, plan=plan)


class _Rewriter:
    """Numbers the loops and safepoints of one module, then emits its normal or resumed form.

    Ids come from a single source-order walk done once, so both forms share them. Emitting
    never mutates the input: user nodes are deep-copied where they are placed, which also
    keeps a statement that appears twice in a resumed loop (first iteration and later ones)
    from being shared.
    """

    def __init__(self, module: ast.Module, markers: bool = False) -> None:
        self.module = module
        self.markers = markers
        self.loops: dict[int, LoopInfo] = {}
        self.safepoints: dict[int, SafePoint] = {}
        # Keyed by id() of the input nodes, which stay alive as long as self.module does.
        self._loop_of: dict[int, int] = {}
        self._sp_of_loop: dict[int, int] = {}
        self._top_sp: dict[int, int] = {}
        self._paths: dict[int, tuple[_Step, ...]] = {}
        for k, node in enumerate(module.body):
            # `from __future__` must stay ahead of any other statement.
            if k > 0 and not _is_future_import(node):
                self._top_sp[k] = self._add_sp(k, (), node.lineno)
            self._visit(node, (), k, None, ((None, k),))

    # -- numbering ---------------------------------------------------------------------

    def _add_sp(self, stmt: int, loops: tuple[int, ...] | None, lineno: int) -> int:
        sp_id = len(self.safepoints) + 1
        self.safepoints[sp_id] = SafePoint(
            id=sp_id, stmt=stmt, loops=loops or (), resumable=loops is not None, lineno=lineno
        )
        return sp_id

    def _visit(
        self,
        node: ast.stmt,
        chain: _Chain,
        stmt: int,
        parent: int | None,
        steps: tuple[_Step, ...],
    ) -> None:
        loop_id = None
        if isinstance(node, _LOOPS):
            loop_id = len(self.loops) + 1
            resumable = chain is not None and not isinstance(node, ast.AsyncFor)
            self.loops[loop_id] = LoopInfo(
                id=loop_id,
                kind=_kind(node),
                target="" if isinstance(node, ast.While) else _target_source(node.target),
                iter=ast.unparse(node.test if isinstance(node, ast.While) else node.iter),
                lineno=node.lineno,
                parent=parent,
                stmt=stmt,
                resumable=resumable,
                end_lineno=getattr(node, "end_lineno", None) or node.lineno,
                tight=_tight(node),
            )
            self._loop_of[id(node)] = loop_id
            loops = (*chain, loop_id) if resumable and chain is not None else None
            sp_id = self._add_sp(stmt, loops, node.lineno)
            self._sp_of_loop[loop_id] = sp_id
            if loops is not None:
                self._paths[sp_id] = steps
        for key, block in _blocks(node):
            child_chain = self._child_chain(node, key, chain)
            if loop_id is not None and key == _BODY:
                child_parent: int | None = loop_id
            elif isinstance(node, _DEFS):
                child_parent = None
            else:
                child_parent = parent
            for i, child in enumerate(block):
                self._visit(child, child_chain, stmt, child_parent, (*steps, (key, i)))

    def _child_chain(self, node: ast.stmt, key: _Key, chain: _Chain) -> _Chain:
        """Loops around the statements of block ``key`` of ``node`` (see ``_Chain``)."""
        if chain is None or isinstance(node, _DEFS):
            return None
        if key == _BODY and isinstance(node, ast.AsyncFor):
            return None
        if isinstance(node, _TRIES) and (
            key == ("finalbody", None) or (key[0] == "handlers" and not isinstance(node, ast.Try))
        ):
            # What Python would do after the block depends on state a restart loses (see
            # instrument()), so a snapshot there restores variables but cannot resume.
            return None
        if key == _BODY and isinstance(node, (ast.For, ast.While)):
            return (*chain, self._loop_of[id(node)])
        # An else: clause runs after its loop is over, so that loop's counter means nothing there.
        return chain

    # -- normal form -------------------------------------------------------------------

    def normal(self) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for k in range(len(self.module.body)):
            out.extend(self._top(k))
        return out

    def _top(self, k: int) -> list[ast.stmt]:
        node = self.module.body[k]
        out: list[ast.stmt] = []
        if k in self._top_sp:
            out.append(self._sp_stmt(self._top_sp[k], (), node))
        out.extend(self._stmt(node, ()))
        return out

    def _block(self, stmts: Sequence[ast.stmt], chain: _Chain) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for node in stmts:
            out.extend(self._stmt(node, chain))
        return out

    def _stmt(self, node: ast.stmt, chain: _Chain) -> list[ast.stmt]:
        if not _blocks(node):
            return [copy.deepcopy(node)]
        if isinstance(node, (ast.For, ast.While)) and chain is not None:
            return self._loop(node, chain)
        blocks = self._blocks_of(node, chain)
        if isinstance(node, _LOOPS):
            # Snapshots still happen here; there is just no position to resume to.
            loop_id = self._loop_of[id(node)]
            sp_id = self._sp_of_loop[loop_id]
            marker = self.markers and self.loops[loop_id].tight
            blocks[_BODY] = [self._sp_stmt(sp_id, None, node, marker), *blocks[_BODY]]
        return [_rebuild(node, blocks)]

    def _blocks_of(self, node: ast.stmt, chain: _Chain) -> dict[_Key, list[ast.stmt]]:
        return {
            key: self._block(block, self._child_chain(node, key, chain))
            for key, block in _blocks(node)
        }

    def _loop(
        self,
        node: ast.For | ast.While,
        chain: tuple[int, ...],
        start: int | None = None,
        first: list[ast.stmt] | None = None,
    ) -> list[ast.stmt]:
        """Emit a counted loop.

        ``start`` None: the normal form. Otherwise the loop resumes at iteration ``start``;
        ``first`` is what its first resumed iteration runs instead of the body (None when the
        position is in this loop's own body, which then runs whole).
        """
        loop_id = self._loop_of[id(node)]
        inner = (*chain, loop_id)
        flag = f"_nbc_f{loop_id}_"
        body = [
            self._sp_stmt(
                self._sp_of_loop[loop_id], inner, node, self.markers and self.loops[loop_id].tight
            ),
            *self._block(node.body, inner),
        ]
        orelse = self._block(node.orelse, chain)
        pre: list[ast.stmt] = []
        if first is not None:
            first_pass = ast.If(
                test=_load(flag), body=[_assign(flag, ast.Constant(False)), *first], orelse=body
            )
            body = [_point(first_pass, node)]
        loop: ast.For | ast.While
        if isinstance(node, ast.For):
            # The iterable's own iterator runs the loop; the probe tells the position only
            # when a snapshot is due, so an iteration costs nothing extra but the flag test.
            iterator, probe = _iterator(loop_id), _probe(loop_id)
            if start is None:
                source = _call(LOOP_FUNC, copy.deepcopy(node.iter))
            else:
                # The iterable is evaluated again from the restored namespace, then advanced.
                source = _call(
                    RESUME_LOOP_FUNC,
                    ast.Constant(loop_id),
                    ast.Constant(start),
                    copy.deepcopy(node.iter),
                )
                if first is not None:
                    pre.append(_assign(flag, ast.Constant(True)))
            pre.insert(
                0,
                ast.Assign(
                    targets=[
                        ast.Tuple(
                            elts=[
                                ast.Name(id=iterator, ctx=ast.Store()),
                                ast.Name(id=probe, ctx=ast.Store()),
                            ],
                            ctx=ast.Store(),
                        )
                    ],
                    value=source,
                ),
            )
            loop = ast.For(
                target=copy.deepcopy(node.target),
                iter=_load(iterator),
                body=body,
                orelse=orelse,
                type_comment=node.type_comment,
            )
        else:
            # `while test: body` runs as `for [] in it: if not test: break` + body, over an
            # endless iterator of empty tuples: the count is kept in C and nothing is stored
            # per iteration (a `+= 1` counter cost a tight while loop 30-90%).
            iterator, probe = _iterator(loop_id), _probe(loop_id)
            test = copy.deepcopy(node.test)
            pre.append(
                ast.Assign(
                    targets=[
                        ast.Tuple(
                            elts=[
                                ast.Name(id=iterator, ctx=ast.Store()),
                                ast.Name(id=probe, ctx=ast.Store()),
                            ],
                            ctx=ast.Store(),
                        )
                    ],
                    value=_call(COUNT_FUNC, ast.Constant(0 if start is None else start)),
                )
            )
            if start is not None:
                # The condition was already true for the recorded iteration, and testing it
                # again could have side effects (a walrus, a queue pop): skip it once.
                pre.append(_assign(flag, ast.Constant(True)))
                test = ast.BoolOp(op=ast.Or(), values=[_load(flag), test])
                if first is None:
                    body = [_assign(flag, ast.Constant(False)), *body]
            # The else: clause runs after the loop, where its break/continue belong to an
            # outer loop as they did; a flag set only on the way out says whether it runs.
            done = f"_nbc_e{loop_id}_"
            leave: list[ast.stmt] = [ast.Break()]
            after: list[ast.stmt] = []
            if orelse:
                pre.append(_assign(done, ast.Constant(False)))
                leave.insert(0, _assign(done, ast.Constant(True)))
                after.append(_point(ast.If(test=_load(done), body=orelse, orelse=[]), node))
            stop = ast.If(test=ast.UnaryOp(op=ast.Not(), operand=test), body=leave, orelse=[])
            body = [_point(stop, node), *body]
            loop = ast.For(
                target=ast.List(elts=[], ctx=ast.Store()),
                iter=_load(iterator),
                body=body,
                orelse=[],
            )
            for stmt in pre:
                _point(stmt, node)
            return [*pre, ast.copy_location(loop, node), *after]
        for stmt in pre:
            _point(stmt, node)
        return [*pre, ast.copy_location(loop, node)]

    def _sp_stmt(
        self, sp_id: int, loops: tuple[int, ...] | None, ref: ast.stmt, marker: bool = False
    ) -> ast.stmt:
        """The safepoint statement: a flag test, or a marker line (see ``MARKER_LINE``).

        ``loops`` None marks a safepoint that cannot be resumed (inside a def, class or async
        for): it passes None rather than its id, which means nothing to another cell's run
        that may be the one calling this function later.
        """
        if marker:
            line = MARKER_LINE + sp_id
            mark = ast.Pass()
            mark.lineno, mark.end_lineno = line, line
            mark.col_offset, mark.end_col_offset = 0, 0
            return mark
        if loops is None:
            args: list[ast.expr] = [ast.Constant(None)]
            loops = ()
        else:
            args = [ast.Constant(sp_id)]
        for loop_id in loops:
            # *_nbc_pL_.pos() gives (index, length); evaluated only when due.
            pos = ast.Call(
                func=ast.Attribute(value=_load(_probe(loop_id)), attr="pos", ctx=ast.Load()),
                args=[],
                keywords=[],
            )
            args.append(ast.Starred(value=pos, ctx=ast.Load()))
        # A global name test and nothing else when no snapshot is due.
        check = ast.If(test=_load(DUE_FLAG), body=[ast.Expr(_call(SP_FUNC, *args))], orelse=[])
        return _point(check, ref)

    # -- resumed form ------------------------------------------------------------------

    def resumed(self, position: Position) -> list[ast.stmt]:
        sp = self.safepoints[position.sp]
        body = self.module.body
        k = sp.stmt
        out = [copy.deepcopy(node) for node in body[:k] if _is_future_import(node)]
        if sp.loops:
            counters = dict(zip(sp.loops, position.counters, strict=True))
            out.extend(self._resume(body[k], self._paths[sp.id], 1, (), counters))
        else:
            # _top(k) starts with the recorded safepoint itself: hitting it again, as a resumed
            # loop does at the top of its body, makes a resumed run report the same positions
            # as the original from the snapshot on.
            out.extend(self._top(k))
        for j in range(k + 1, len(body)):
            out.extend(self._top(j))
        return out

    def _resume(
        self,
        node: ast.stmt,
        steps: tuple[_Step, ...],
        depth: int,
        chain: tuple[int, ...],
        counters: Mapping[int, int],
    ) -> list[ast.stmt]:
        """Emit ``node``, entered along ``steps[depth:]`` down to the loop of the position."""
        if depth == len(steps):
            assert isinstance(node, (ast.For, ast.While))
            return self._loop(node, chain, counters[self._loop_of[id(node)]])
        key, index = steps[depth]
        assert key is not None
        inner_chain = self._child_chain(node, key, chain)
        assert inner_chain is not None
        block = _block_at(node, key)
        inner = [
            *self._resume(block[index], steps, depth + 1, inner_chain, counters),
            *self._block(block[index + 1 :], inner_chain),
        ]
        if key == _BODY and isinstance(node, (ast.For, ast.While)):
            return self._loop(node, chain, counters[self._loop_of[id(node)]], inner)
        if isinstance(node, (ast.With, ast.AsyncWith)) or (
            key == _BODY and isinstance(node, _TRIES)
        ):
            # Re-enter the context manager / the try, so that exits, handlers and finally run.
            blocks = self._blocks_of(node, chain)
            blocks[key] = inner
            return [_rebuild(node, blocks)]
        if isinstance(node, _TRIES):
            tried = cast(ast.Try, node)
            if key[0] == "handlers" and key[1] is not None:
                name = tried.handlers[key[1]].name
                if name:
                    # What Python does at the end of `except E as name:`.
                    cleanup: list[ast.stmt] = [
                        _assign(name, ast.Constant(None)),
                        ast.Delete(targets=[ast.Name(id=name, ctx=ast.Del())]),
                    ]
                    inner = [
                        _point(ast.Try(body=inner, handlers=[], orelse=[], finalbody=cleanup), node)
                    ]
            if tried.finalbody:
                final_key: _Key = ("finalbody", None)
                final = self._block(tried.finalbody, self._child_chain(node, final_key, chain))
                inner = [_point(ast.Try(body=inner, handlers=[], orelse=[], finalbody=final), node)]
        # if/elif/else, a match case, a loop's else, a try's else or handler: the branch was
        # taken before the snapshot and its test is not evaluated again. `if True:` keeps the
        # resumed part one statement, so that a trailing expression in it is never taken for
        # the cell's display value.
        return [_point(ast.If(test=ast.Constant(True), body=inner, orelse=[]), node)]


# -- helpers -------------------------------------------------------------------------------

# What may run Python code of unbounded length once per iteration. Operators and attribute
# access can call dunder methods too, but those are short; what matters is that a loop
# counted tight reaches its next safepoint within one iteration.
_CALLS = (
    ast.Call,
    ast.Await,
    ast.Yield,
    ast.YieldFrom,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.With,
    ast.AsyncWith,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.AsyncFor,
)


def _tight(node: ast.For | ast.AsyncFor | ast.While) -> bool:
    """See ``LoopInfo.tight``."""
    if isinstance(node, ast.AsyncFor):
        return False
    parts: list[ast.AST] = [*node.body, *node.orelse]
    parts.append(node.test if isinstance(node, ast.While) else node.target)
    return not any(isinstance(sub, _CALLS) for part in parts for sub in ast.walk(part))


def _blocks(node: ast.AST) -> list[tuple[_Key, list[ast.stmt]]]:
    """The non-empty statement lists directly inside ``node``, in source order."""
    out: list[tuple[_Key, list[ast.stmt]]] = []
    for field in node._fields:
        value = getattr(node, field, None)
        if not isinstance(value, list) or not value:
            continue
        if isinstance(value[0], ast.stmt):
            out.append(((field, None), value))
        elif isinstance(value[0], (ast.ExceptHandler, ast.match_case)):
            out.extend(((field, i), clause.body) for i, clause in enumerate(value))
    return out


def _block_at(node: ast.stmt, key: _Key) -> list[ast.stmt]:
    field, index = key
    value = getattr(node, field)
    if index is None:
        return cast("list[ast.stmt]", value)
    return cast("list[ast.stmt]", value[index].body)


def _rebuild(node: ast.stmt, blocks: Mapping[_Key, list[ast.stmt]]) -> ast.stmt:
    """A copy of ``node`` whose statement lists are replaced by ``blocks``."""
    fields: dict[str, Any] = {}
    for field in node._fields:
        value = getattr(node, field, None)
        if (field, None) in blocks:
            fields[field] = blocks[(field, None)]
        elif isinstance(value, list) and value and isinstance(value[0], ast.AST):
            fields[field] = [
                _rebuild_clause(item, blocks.get((field, i)))
                if isinstance(item, (ast.ExceptHandler, ast.match_case))
                else copy.deepcopy(item)
                for i, item in enumerate(value)
            ]
        else:
            fields[field] = copy.deepcopy(value)
    return ast.copy_location(type(node)(**fields), node)


def _rebuild_clause(clause: ast.AST, body: list[ast.stmt] | None) -> ast.AST:
    fields = {
        field: body
        if field == "body" and body is not None
        else copy.deepcopy(getattr(clause, field, None))
        for field in clause._fields
    }
    return ast.copy_location(type(clause)(**fields), clause)


def _point(node: _Node, ref: ast.AST) -> _Node:
    """Give a generated node the start position of ``ref`` as an empty span.

    Its generated children inherit it through ``ast.fix_missing_locations``; user nodes
    placed under it keep their own positions, so tracebacks name the user's lines.
    """
    lineno, col = getattr(ref, "lineno", 1), getattr(ref, "col_offset", 0)
    node.lineno, node.col_offset = lineno, col  # type: ignore[attr-defined]
    node.end_lineno, node.end_col_offset = lineno, col  # type: ignore[attr-defined]
    return node


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _assign(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value)


def _call(func: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_load(func), args=list(args), keywords=[])


def _iterator(loop_id: int) -> str:
    return f"_nbc_it{loop_id}_"


def _probe(loop_id: int) -> str:
    return f"_nbc_p{loop_id}_"


def _kind(node: ast.For | ast.AsyncFor | ast.While) -> LoopKind:
    if isinstance(node, ast.While):
        return "while"
    return "async for" if isinstance(node, ast.AsyncFor) else "for"


def _target_source(target: ast.expr) -> str:
    text = ast.unparse(target)
    # unparse writes a tuple target as "(a, b)"; the user most likely wrote "a, b".
    if isinstance(target, ast.Tuple) and text.startswith("(") and text.endswith(")"):
        return text[1:-1]
    return text


def _is_future_import(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "__future__"


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shorten(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
