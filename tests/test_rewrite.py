"""In-process tests of the cell rewrite and its runtime helpers, with a fake runtime."""

from __future__ import annotations

import ast
import asyncio
import copy
import dataclasses
import doctest
import inspect
import json
import random
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import pytest

from nbcheckpoint.capture import iterate, rewrite
from nbcheckpoint.capture.arm import marker_pairs
from nbcheckpoint.capture.iterate import count, length_of, loop, resume_loop
from nbcheckpoint.capture.rewrite import Position, instrument

# -- fake runtime ------------------------------------------------------------------------


class Kill(BaseException):
    """Simulated kernel death; a BaseException so that `except Exception` in a cell misses it."""


@dataclasses.dataclass
class Ctx:
    """A context manager with no side effects, so that re-entering it on resume is harmless."""

    tag: str = "ctx"

    def __enter__(self) -> Ctx:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False


def countdown(n: int) -> Iterator[int]:
    while n > 0:
        yield n
        n -= 1


def helpers() -> dict[str, Any]:
    return {"Ctx": Ctx, "countdown": countdown}


def is_user_name(name: str) -> bool:
    return not name.startswith(("__", rewrite.RESERVED_PREFIX))


def user_ns(ns: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ns.items() if is_user_name(k)}


def comparable(ns: dict[str, Any]) -> dict[str, Any]:
    """The user names, with objects that compare by identity replaced by what defines them."""
    return {k: _comparable(v) for k, v in user_ns(ns).items()}


def _comparable(value: Any) -> Any:
    if isinstance(value, random.Random):
        return ("Random", value.getstate())
    if isinstance(value, (types.FunctionType, type)):
        return (type(value).__name__, value.__qualname__)
    return value


class Snapshot:
    """The user names at a safepoint, deep-copied; ``restore`` makes a fresh namespace from them.

    Modules are shared (a real restore re-imports them) and functions defined in the cell are
    rebound to the new namespace, as unpickling them into a new kernel's ``__main__`` would.
    """

    def __init__(self, ns: dict[str, Any]) -> None:
        self._old = ns
        state = user_ns(ns)
        self.state = copy.deepcopy(state, _atomic(state))

    def restore(self) -> dict[str, Any]:
        new = helpers()
        memo = _atomic(self.state)
        for value in self.state.values():
            if isinstance(value, types.FunctionType) and value.__globals__ is self._old:
                fn = types.FunctionType(
                    value.__code__, new, value.__name__, value.__defaults__, value.__closure__
                )
                fn.__kwdefaults__ = value.__kwdefaults__
                fn.__qualname__ = value.__qualname__
                memo[id(value)] = fn
        new.update(copy.deepcopy(self.state, memo))
        return new


def _atomic(state: dict[str, Any]) -> dict[int, Any]:
    return {id(v): v for v in state.values() if isinstance(v, types.ModuleType)}


class Recorder:
    """``__nbc_sp__`` that records every call and can die at the k-th one after a snapshot."""

    def __init__(self, ns: dict[str, Any], kill_at: int | None = None) -> None:
        self.ns = ns
        self.kill_at = kill_at
        self.calls: list[tuple[int, tuple[Any, ...]]] = []
        self.saved: tuple[Snapshot, Position] | None = None

    def __call__(self, sp: int, *pairs: Any) -> None:
        self.calls.append((sp, pairs))
        if len(self.calls) == self.kill_at:
            self.saved = (Snapshot(self.ns), Position(sp, tuple(pairs[0::2])))
            raise Kill


def marker_tracer(plan: rewrite.CellPlan, ns: dict[str, Any], rec: Recorder) -> Any:
    """A trace that is always armed: every marker line calls ``rec`` as its flag test would."""

    def local(frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno >= rewrite.MARKER_LINE:
            sp = frame.f_lineno - rewrite.MARKER_LINE
            if plan.safepoints[sp].resumable:
                rec(sp, *marker_pairs(plan, sp, ns))
            else:
                rec(None)
        return local

    def calls(frame: types.FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == "<cell>" else None

    return calls


def run(
    tree: ast.Module,
    ns: dict[str, Any],
    *,
    resume: Position | None = None,
    kill_at: int | None = None,
    markers: bool = False,
) -> Recorder:
    rec = Recorder(ns, kill_at)
    ns.update(
        _nbc_due_=True,
        __nbc_sp__=rec,
        __nbc_loop__=loop,
        __nbc_resume_loop__=resume_loop,
        __nbc_count__=count,
    )
    instrumented = instrument(tree, resume=resume, markers=markers)
    code = compile(instrumented.module, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    # Always armed, even for a flag-test run: a function the namespace got from a run with
    # markers still has them.
    sys.settrace(marker_tracer(instrumented.plan, ns, rec))
    try:
        result = eval(code, ns)
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(result)
    except Kill:
        assert kill_at is not None
    finally:
        sys.settrace(None)
    return rec


def plain(src: str) -> dict[str, Any]:
    """The namespace after running the cell without instrumentation."""
    ns = helpers()
    code = compile(ast.parse(src), "<plain>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(result)
    return user_ns(ns)


def parse(src: str) -> ast.Module:
    return ast.parse(textwrap.dedent(src))


def resumable_hits(tree: ast.Module, rec: Recorder) -> list[int]:
    plan = instrument(tree).plan
    return [
        k
        for k, (sp, _) in enumerate(rec.calls, 1)
        if sp is not None and plan.safepoints[sp].resumable
    ]


def check_resume_everywhere(src: str, *, sample: int = 25, seed: str = "") -> int:
    """Kill the cell at each safepoint hit (or a sample), resume, and compare with a full run.

    Returns the number of positions checked.
    """
    src = textwrap.dedent(src)
    tree = ast.parse(src)
    plan = instrument(tree).plan
    ref = helpers()
    full = run(tree, ref)
    reference = comparable(ref)
    assert reference == comparable(plain(src)), "instrumentation changed what the cell computes"
    # Marker lines in tight loops stand for the same safepoints, hit in the same order.
    ref_markers = helpers()
    assert run(tree, ref_markers, markers=True).calls == full.calls
    assert comparable(ref_markers) == reference
    hits = resumable_hits(tree, full)
    assert hits, "the cell never reached a safepoint"
    rng = random.Random(seed or src)
    chosen = hits if len(hits) <= 40 else sorted(rng.sample(hits, sample))
    assert len(chosen) == len(hits) or len(chosen) >= 20
    for n, k in enumerate(chosen):
        markers = n % 2 == 1  # half the kills and resumes with marker lines
        killed = run(tree, helpers(), kill_at=k, markers=markers)
        assert killed.saved is not None
        saved, pos = killed.saved
        where = plan.describe(pos.sp, pos.counters)
        assert pos.sp == full.calls[k - 1][0]

        ns = saved.restore()
        resumed = run(tree, ns, resume=pos, markers=markers)
        assert comparable(ns) == reference, f"resumed at {where} (hit {k})"
        # Same positions as the original from the snapshot on: nothing that had finished ran
        # again, and checkpoints taken while resuming are in the original coordinates.
        assert resumed.calls == full.calls[k - 1 :], f"resumed at {where} (hit {k})"
        if k > 1:
            assert len(resumed.calls) < len(full.calls)
        if saved.state.get("steps", 0) > 0:
            assert reference["steps"] - saved.state["steps"] < reference["steps"]

        # Die again during the resumed run, and resume from there.
        later = resumable_hits(tree, resumed)[1:]
        if later:
            k2 = rng.choice(later)
            killed2 = run(tree, saved.restore(), resume=pos, kill_at=k2)
            assert killed2.saved is not None
            saved2, pos2 = killed2.saved
            ns2 = saved2.restore()
            again = run(tree, ns2, resume=pos2)
            assert comparable(ns2) == reference, f"resumed twice at {where}, then hit {k2}"
            assert again.calls == full.calls[k - 1 + k2 - 1 :]
    return len(chosen)


# -- the key property: resuming from any safepoint gives the uninterrupted result ---------------

CELLS = {
    "tight_loops": """
        total = 0
        steps = 0
        for a in range(5):
            for b in range(4):
                total += a * b
                steps += 1
            total -= a
        k = 0
        while k < 7:
            k += 1
            steps += 1
        for x in countdown(4):
            steps += x
        done = total
    """,
    "single_for": """
        acc = []
        steps = 0
        for i in range(6):
            steps += 1
            acc.append(i * 2)
        done = len(acc)
    """,
    "nested_with_statements_before_inner": """
        rows = []
        steps = 0
        for a in range(4):
            base = a * 10
            rows.append(("start", a))
            for b in range(3):
                steps += 1
                rows.append(base + b)
            rows.append(("end", a))
        summary = (len(rows), steps)
    """,
    "three_levels_and_two_inner_loops": """
        out = []
        for a in range(2):
            out.append(a)
            for b in ["x", "y"]:
                for c in range(2):
                    out.append((a, b, c))
                out.append(("after c", b))
            for d in range(2):
                out.append(("d", a, d))
            out.append(("end", a))
    """,
    "while_else": """
        n = 0
        seen = []
        while n < 9:
            n += 2
            seen.append(n)
        else:
            seen.append("else")
        total = sum(x for x in seen if isinstance(x, int))
    """,
    "while_walrus": """
        data = [5, 4, 3, 0, 7]
        pos = 0
        got = []
        while (val := data[pos]) != 0:
            got.append(val)
            pos += 1
        got.append(("stopped at", pos))
    """,
    "generators": """
        out = []
        for v in (x * x for x in range(6)):
            out.append(v)
        for v in countdown(4):
            out.append(-v)
    """,
    "dict_items_enumerate_zip": """
        d = {"a": 1, "b": 2, "c": 3, "d": 4}
        inv = {}
        for k, v in d.items():
            inv[v] = k
        names = ["x", "y", "z", "w"]
        vals = [3, 1, 4, 1]
        pairs = []
        for idx, (nm, vv) in enumerate(zip(names, vals)):
            pairs.append((idx, nm, vv))
        for nm, vv in zip(names, vals):
            pairs.append(nm * vv)
        for ch in "hey":
            pairs.append(ch)
    """,
    "random_draws": """
        import random
        rng = random.Random(1234)
        draws = []
        steps = 0
        for step in range(12):
            steps += 1
            draws.append(rng.random())
            if rng.random() < 0.4:
                extra = rng.randint(0, 3)
                for _ in range(extra):
                    draws.append(rng.randint(0, 100))
        final = sum(draws)
        after = rng.random()
    """,
    "break_continue_else": """
        hits = []
        for i in range(10):
            if i % 3 == 0:
                continue
            if i == 8:
                break
            hits.append(i)
        else:
            hits.append("no-break")
        for j in range(4):
            hits.append(j)
        else:
            hits.append("else-ran")
        k = 0
        while True:
            k += 1
            if k % 2:
                continue
            if k > 6:
                break
            hits.append(("k", k))
    """,
    "loop_in_loop_else": """
        out = []
        for i in range(3):
            out.append(i)
        else:
            for j in range(3):
                out.append(("else", j))
        out.append("end")
    """,
    "with": """
        trace = []
        with Ctx("outer") as c:
            trace.append(c.tag)
            for i in range(5):
                with Ctx() as inner:
                    for j in range(2):
                        trace.append((i, j, inner.tag))
        trace.append("after")
    """,
    "if_elif": """
        out = []
        flag = True
        if flag:
            for i in range(4):
                out.append(i)
        else:
            out.append("no")
        for i in range(5):
            out.append(("pre", i))
            if i % 2 == 0:
                for j in range(2):
                    out.append((i, j))
            elif i == 3:
                for j in range(3):
                    out.append(("three", j))
            out.append(("post", i))
    """,
    "try_except_else_finally": """
        res = []
        try:
            for i in range(3):
                res.append(-i)
            raise KeyError("x")
        except KeyError as e:
            for j in range(2):
                res.append(("h", j, str(e)))
        finally:
            for q in range(2):
                res.append(("f", q))
        try:
            for i in range(2):
                res.append(("t", i))
        except ValueError:
            res.append("never")
        else:
            for i in range(2):
                res.append(("else", i))
        finally:
            res.append("finally")
        for i in range(4):
            try:
                if i == 2:
                    raise ValueError(i)
                for j in range(2):
                    res.append((i, j))
            except ValueError:
                res.append(("caught", i))
    """,
    "match": """
        out = []
        for cmd in [("repeat", 3), ("say", "hi"), ("repeat", 1)]:
            match cmd:
                case ("repeat", n):
                    for i in range(n):
                        out.append(i)
                case ("say", word):
                    out.append(word)
                case _:
                    out.append("other")
    """,
    "while_and_for_mixed": """
        grid = []
        r = 0
        while r < 3:
            c = 0
            row = []
            for x in range(r, r + 3):
                row.append(x)
            while c < 2:
                row.append(c)
                c += 1
            grid.append(row)
            r += 1
        flat = [v for row in grid for v in row]
    """,
    "target_shapes": """
        pairs = [(1, 2), (3, 4), (5, 6)]
        out = []
        for a, b in pairs:
            out.append(a + b)
        for (a, *rest) in [(1, 2, 3), (4, 5, 6)]:
            out.append((a, rest))
        class Box:
            pass
        box = Box()
        for box.attr in range(3):
            out.append(box.attr)
        d = {}
        for d["k"] in "abc":
            out.append(dict(d))
        del box, Box
    """,
    "cell_level_await": """
        import asyncio
        out = []
        x = await asyncio.sleep(0, result=3)
        for i in range(x):
            out.append(await asyncio.sleep(0, result=i * 2))
        out.append("end")
    """,
}


@pytest.mark.parametrize("name", list(CELLS))
def test_resume_from_any_safepoint_gives_the_uninterrupted_result(name: str) -> None:
    check_resume_everywhere(CELLS[name], seed=name)


def test_long_cell_is_sampled_and_still_correct() -> None:
    src = """
        import random
        rng = random.Random(5)
        acc = []
        steps = 0
        for epoch in range(30):
            lr = 1 / (epoch + 1)
            for batch in range(10):
                steps += 1
                acc.append(round(lr * rng.random(), 6))
    """
    assert check_resume_everywhere(src) == 25


def test_loop_iterable_is_evaluated_again_when_resumed() -> None:
    """Known limit: the iterable of each loop on the resume path is evaluated again.

    It is evaluated from the restored namespace, so an iterable expression with side effects
    (an RNG draw, a read from a stream) runs them once more.
    """
    tree = parse(
        """
        made = []
        def make(n):
            made.append(n)
            return range(n)
        for i in make(4):
            pass
        """
    )
    full = run(tree, helpers())
    k = next(k for k, (_, pairs) in enumerate(full.calls, 1) if pairs == (2, 4))
    killed = run(tree, helpers(), kill_at=k)
    assert killed.saved is not None
    saved, pos = killed.saved
    ns = saved.restore()
    run(tree, ns, resume=pos)
    assert ns["made"] == [4, 4]


# -- shape of the instrumented code -------------------------------------------------------


def test_top_level_safepoints_between_statements_never_after_the_last() -> None:
    tree = parse("a = 1\nb = 2\na + b\n")
    body = instrument(tree).module.body
    assert [type(n).__name__ for n in body] == ["Assign", "If", "Assign", "If", "Expr"]
    assert ast.unparse(body[1]) == "if _nbc_due_:\n    __nbc_sp__(1)"
    assert isinstance(body[-1], ast.Expr)
    assert ast.unparse(body[-1]) == "a + b"


@pytest.mark.parametrize(
    "position",
    [Position(1), Position(2, (1,)), Position(3)],
)
def test_last_expression_stays_last_when_resumed(position: Position) -> None:
    tree = parse(
        """
        total = 0
        for i in range(3):
            if i:
                total += i
        total * 2
        """
    )
    body = instrument(tree, resume=position).module.body
    assert isinstance(body[-1], ast.Expr)
    assert ast.unparse(body[-1]) == "total * 2"


def unparse_text(text: str) -> str:
    """Generated code as 3.11+ writes it: 3.10's ``ast.unparse`` puts tuple targets in parentheses."""
    if sys.version_info < (3, 11):
        text = re.sub(r"^(\s*)\(([^()\n]*)\) = ", r"\1\2 = ", text, flags=re.M)
        text = re.sub(r"^(\s*for )\(([^()\n]*)\) in ", r"\1\2 in ", text, flags=re.M)
    return text


def unparse(node: ast.AST) -> str:
    return unparse_text(ast.unparse(node))


class _Checker(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return super().check_output(want, unparse_text(got), optionflags)


def test_for_and_while_expansion() -> None:
    tree = parse(
        """
        for a, b in pairs:
            while a:
                a -= 1
        """
    )
    assert unparse(instrument(tree).module) == textwrap.dedent(
        """\
        _nbc_it1_, _nbc_p1_ = __nbc_loop__(pairs)
        for a, b in _nbc_it1_:
            if _nbc_due_:
                __nbc_sp__(1, *_nbc_p1_.pos())
            _nbc_it2_, _nbc_p2_ = __nbc_count__(0)
            for [] in _nbc_it2_:
                if not a:
                    break
                if _nbc_due_:
                    __nbc_sp__(2, *_nbc_p1_.pos(), *_nbc_p2_.pos())
                a -= 1"""
    )


def test_resumed_form_skips_statements_before_the_inner_loop_once() -> None:
    tree = parse(
        """
        for e in range(10):
            prep = e
            while prep:
                prep -= 1
        """
    )
    text = unparse(instrument(tree, resume=Position(2, (4, 1))).module)
    assert text == textwrap.dedent(
        """\
        _nbc_it1_, _nbc_p1_ = __nbc_resume_loop__(1, 4, range(10))
        _nbc_f1_ = True
        for e in _nbc_it1_:
            if _nbc_f1_:
                _nbc_f1_ = False
                _nbc_it2_, _nbc_p2_ = __nbc_count__(1)
                _nbc_f2_ = True
                for [] in _nbc_it2_:
                    if not (_nbc_f2_ or prep):
                        break
                    _nbc_f2_ = False
                    if _nbc_due_:
                        __nbc_sp__(2, *_nbc_p1_.pos(), *_nbc_p2_.pos())
                    prep -= 1
            else:
                if _nbc_due_:
                    __nbc_sp__(1, *_nbc_p1_.pos())
                prep = e
                _nbc_it2_, _nbc_p2_ = __nbc_count__(0)
                for [] in _nbc_it2_:
                    if not prep:
                        break
                    if _nbc_due_:
                        __nbc_sp__(2, *_nbc_p1_.pos(), *_nbc_p2_.pos())
                    prep -= 1"""
    )


def test_while_else_runs_only_when_the_condition_ends_the_loop() -> None:
    src = """
        out = []
        for outer in range(3):
            k = 0
            while k < 3:
                k += 1
                if outer == 1 and k == 2:
                    break
            else:
                out.append(("else", outer))
                if outer == 2:
                    break
                continue
            out.append(("broke", outer))
        """
    expected: dict[str, Any] = {}
    exec(textwrap.dedent(src), expected)
    ns: dict[str, Any] = {}
    run(parse(src), ns)
    assert ns["out"] == expected["out"] == [("else", 0), ("broke", 1), ("else", 2)]


def test_while_counters_are_zero_based_like_enumerate() -> None:
    tree = parse("i = 0\nwhile i < 3:\n    i += 1\nfor x in 'ab':\n    pass\n")
    rec = run(tree, {})
    loop_calls = [pairs for sp, pairs in rec.calls if pairs]
    assert loop_calls == [(0, None), (1, None), (2, None), (0, 2), (1, 2)]


def test_plan_describes_loops_and_safepoints() -> None:
    tree = parse(
        """
        import os
        for epoch in range(3):
            for (x, y) in zip(a, b):
                pass
        while not done():
            pass
        def f():
            for i in range(2):
                pass
        """
    )
    plan = instrument(tree).plan
    assert plan.n_statements == 4
    assert plan.loops == {
        # The inner loop's zip() runs once per epoch: a call in the outer body.
        1: rewrite.LoopInfo(1, "for", "epoch", "range(3)", 3, None, 1, True, 5, False),
        2: rewrite.LoopInfo(2, "for", "x, y", "zip(a, b)", 4, 1, 1, True, 5, True),
        3: rewrite.LoopInfo(3, "while", "", "not done()", 6, None, 2, True, 7, False),
        4: rewrite.LoopInfo(4, "for", "i", "range(2)", 9, None, 3, False, 10, True),
    }
    assert [(sp.id, sp.stmt, sp.loops, sp.resumable) for sp in plan.safepoints.values()] == [
        (1, 1, (), True),
        (2, 1, (1,), True),
        (3, 1, (1, 2), True),
        (4, 2, (), True),
        (5, 2, (3,), True),
        (6, 3, (), True),
        (7, 3, (), False),
    ]
    assert plan.describe(1) == "statement 2 of 4"
    assert plan.describe(2, (56,), (100,)) == "`for epoch` at 57/100"
    assert plan.describe(3, (0, 4), (3, None)) == "`for epoch` at 1/3, `for x, y` at 5"
    assert plan.describe(5, (11,)) == "`while not done()` at 12"
    assert "not resumable" in plan.describe(7)
    assert "unknown" in plan.describe(99)


def test_ids_are_deterministic_and_shared_with_resumed_form() -> None:
    src = CELLS["three_levels_and_two_inner_loops"]
    first, second = instrument(parse(src)), instrument(parse(src))
    assert ast.unparse(first.module) == ast.unparse(second.module)
    assert first.plan == second.plan
    resumed = instrument(parse(src), resume=Position(4, (1, 1, 0)))
    assert resumed.plan == first.plan


def test_input_module_is_not_mutated() -> None:
    tree = parse(CELLS["try_except_else_finally"] + CELLS["match"])
    before = ast.dump(tree, include_attributes=True)
    instrument(tree)
    plan = instrument(tree).plan
    for sp in plan.safepoints.values():
        if sp.resumable:
            instrument(tree, resume=Position(sp.id, (0,) * len(sp.loops)))
    assert ast.dump(tree, include_attributes=True) == before


def test_user_statements_keep_their_line_numbers() -> None:
    tree = parse(CELLS["if_elif"] + CELLS["try_except_else_finally"] + CELLS["with"])

    def simple_statements(module: ast.Module) -> list[tuple[str, int]]:
        return sorted(
            (ast.unparse(n), n.lineno)
            for n in ast.walk(module)
            if isinstance(n, ast.stmt)
            and not rewrite._blocks(n)
            and rewrite.RESERVED_PREFIX not in ast.unparse(n)
            and rewrite.SP_FUNC not in ast.unparse(n)
        )

    new = instrument(tree).module
    assert simple_statements(new) == simple_statements(tree)
    original_loops = {n.lineno for n in ast.walk(tree) if isinstance(n, rewrite._LOOPS)}
    new_loops = {n.lineno for n in ast.walk(new) if isinstance(n, rewrite._LOOPS)}
    assert new_loops == original_loops


@pytest.mark.parametrize("resume", [None, Position(3, (1, 0))])
def test_tracebacks_point_at_the_users_line(resume: Position | None) -> None:
    tree = parse(
        """
        x = 0
        for i in range(3):
            for j in range(2):
                x += 1
                y = 1 / (i - 2)
        """
    )
    code = compile(instrument(tree, resume=resume).module, "<cell>", "exec")
    ns: dict[str, Any] = {
        "x": 0,
        "_nbc_due_": False,
        "__nbc_loop__": loop,
        "__nbc_resume_loop__": resume_loop,
        "__nbc_count__": count,
    }
    with pytest.raises(ZeroDivisionError) as info:
        exec(code, ns)
    assert info.traceback[-1].lineno + 1 == 6


def test_comprehensions_generators_and_lambdas_are_untouched() -> None:
    src = """
        data = [1, 2, 3]
        squares = [x * x for x in data if x]
        evens = {x for x in range(10) if x % 2 == 0}
        table = {k: [v for v in range(k)] for k in data}
        lazy = sum(x for x in data)
        f = lambda n: [m for m in range(n)]
        for i in data:
            inner = [(i, j, (w := j * 2)) for j in range(i)]
            g = (lambda: [z for z in range(i)])()
        last = w
    """
    tree = parse(src)
    kinds = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)
    original = sorted(ast.dump(n) for n in ast.walk(tree) if isinstance(n, kinds))
    new = instrument(tree).module
    found = [n for n in ast.walk(new) if isinstance(n, kinds)]
    assert sorted(ast.dump(n) for n in found) == original
    for node in found:
        assert not [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and "_nbc" in n.id], (
            ast.unparse(node)
        )
    ns = helpers()
    run(tree, ns)
    assert comparable(ns) == comparable(plain(textwrap.dedent(src)))


def test_functions_and_classes_get_non_resumable_safepoints() -> None:
    src = """
        total = 0

        def deco(fn):
            return fn

        @deco
        def work(n):
            global total
            acc = 0
            for i in range(n):
                acc += i

                def inner():
                    nonlocal acc
                    while acc > 2:
                        acc -= 1

                inner()
            total += acc
            return acc

        class K:
            __hidden = []
            for __j in range(3):
                __hidden.append(__j)
            vals = list(__hidden)
            del _K__j

        result = [work(n) for n in range(4)]
        for r in range(2):
            again = work(r + 2)
    """
    tree = parse(src)
    plan = instrument(tree).plan
    inside = [loop for loop in plan.loops.values() if not loop.resumable]
    assert [(loop.kind, loop.target or loop.iter) for loop in inside] == [
        ("for", "i"),
        ("while", "acc > 2"),
        ("for", "__j"),
    ]
    assert [loop.parent for loop in inside] == [None, None, None]
    new = instrument(tree).module
    for fn in ast.walk(new):
        if isinstance(fn, (ast.FunctionDef, ast.ClassDef)):
            names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
            assert not {n for n in names if n.startswith("_nbc_") and n != rewrite.DUE_FLAG}
    ns = helpers()
    rec = run(tree, ns)
    assert user_ns(ns)["K"].vals == [0, 1, 2]
    assert comparable(ns) == comparable(plain(textwrap.dedent(src)))
    # Safepoints inside functions and classes pass None, not their id: a function defined
    # here may be called by another cell's run, where the id would name a different place.
    unresumable = [sp for sp in plan.safepoints.values() if not sp.resumable]
    assert sum(sp is None for sp, _ in rec.calls) >= len(unresumable) == 3
    for sp, pairs in rec.calls:
        assert bool(pairs) == bool(sp is not None and plan.safepoints[sp].loops)
    check_resume_everywhere(src)


def test_async_for_and_top_level_await() -> None:
    src = """
        import asyncio

        async def agen(n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

        out = []
        async for v in agen(3):
            out.append(v)
            for j in range(2):
                out.append((v, j))
        x = await asyncio.sleep(0, result=4)
        for k in range(x):
            out.append(await asyncio.sleep(0, result=k))
        out
    """
    tree = parse(src)
    plan = instrument(tree).plan
    kinds = {loop.target: (loop.kind, loop.resumable) for loop in plan.loops.values()}
    assert kinds == {
        "i": ("for", False),
        "v": ("async for", False),
        "j": ("for", False),
        "k": ("for", True),
    }
    assert isinstance(instrument(tree).module.body[-1], ast.Expr)
    ns = helpers()
    run(tree, ns)
    assert comparable(ns) == comparable(plain(textwrap.dedent(src)))
    # Positions inside the async for cannot be resumed; those in the last loop can.
    check_resume_everywhere(src)


def test_future_imports_stay_first() -> None:
    src = '"""doc"""\nfrom __future__ import annotations\nfrom __future__ import division\nx: int = 1\ny = x\n'
    tree = parse(src)
    new = instrument(tree).module
    compile(new, "<cell>", "exec")
    assert [type(n).__name__ for n in new.body[:3]] == ["Expr", "ImportFrom", "ImportFrom"]
    resumed = instrument(tree, resume=Position(max(instrument(tree).plan.safepoints)))
    compile(resumed.module, "<cell>", "exec")
    assert isinstance(resumed.module.body[0], ast.ImportFrom)


def test_empty_cell() -> None:
    result = instrument(ast.parse("# nothing\n"))
    assert result.module.body == []
    assert result.plan.safepoints == {}


# -- positions ----------------------------------------------------------------------------


def test_position_round_trips_through_json() -> None:
    pos = Position(sp=7, counters=(3, 56))
    data = json.loads(json.dumps(dataclasses.asdict(pos)))
    assert Position.from_dict(data) == pos
    assert Position.from_dict({"sp": 2}) == Position(2)


@pytest.mark.parametrize(
    "data",
    [{}, {"sp": "3"}, {"sp": 1, "counters": [1, -1]}, {"sp": True}, {"sp": 1, "counters": 5}],
)
def test_position_from_bad_dict(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Not a checkpoint position"):
        Position.from_dict(data)


@pytest.mark.parametrize(
    ("position", "message"),
    [
        (Position(42), "safepoint 42: this cell has no such safepoint"),
        (Position(3), "safepoint 3 .*inside a function"),
        (Position(2), "safepoint 2 .*1 loop.* 0 counter"),
        (Position(2, (1, 2)), "safepoint 2 .*1 loop.* 2 counter"),
        (Position(2, (-1,)), "safepoint 2 .*integers >= 0"),
    ],
)
def test_bad_positions_raise_value_error_naming_the_safepoint(
    position: Position, message: str
) -> None:
    tree = parse(
        """
        x = 1
        for i in range(3):
            def f():
                while True:
                    break
        """
    )
    with pytest.raises(ValueError, match=message):
        instrument(tree, resume=position)


# -- runtime helpers ----------------------------------------------------------------------


def test_length_of() -> None:
    gen = (x for x in range(3))

    class Broken:
        def __len__(self) -> int:
            raise RuntimeError("no length")

        def __iter__(self) -> Iterator[int]:
            return iter(())

    assert length_of([1, 2]) == 2
    assert length_of({"a": 1}.items()) == 1
    assert length_of(range(10**30)) is None  # OverflowError
    assert length_of(gen) is None
    assert list(gen) == [0, 1, 2]  # not consumed
    assert length_of(Broken()) is None
    assert length_of(zip([1], [2])) is None


def walk(iterator: Any, probe: Any) -> list[tuple[Any, tuple[int, int | None]]]:
    return [(item, probe.pos()) for item in iterator]


@pytest.mark.parametrize(
    ("make", "length"),
    [
        (lambda: range(10, 14), 4),
        (lambda: [10, 11, 12, 13], 4),
        (lambda: (10, 11, 12, 13), 4),
        (lambda: {10: "a", 11: "b", 12: "c", 13: "d"}, 4),
        (lambda: {10: "a", 11: "b", 12: "c", 13: "d"}.keys(), 4),
        (lambda: iter([10, 11, 12, 13]), None),
        (lambda: (x for x in range(10, 14)), None),
        (lambda: map(int, "0123"), None),
    ],
)
def test_loop_positions_and_resume(make: Any, length: int | None) -> None:
    items = list(make())
    assert walk(*loop(make())) == [(x, (i, length)) for i, x in enumerate(items)]
    iterator, probe = resume_loop(3, 2, make())
    assert probe.skipped == 2
    assert probe.consumed_by_iteration == (length is None)
    assert walk(iterator, probe) == [(x, (i, length)) for i, x in enumerate(items)][2:]


def test_loop_over_a_list_that_grows_keeps_counting() -> None:
    items = [1, 2]
    iterator, probe = loop(items)
    seen = []
    for x in iterator:
        if x == 1:
            items.append(3)
        seen.append(probe.pos())
    assert seen == [(0, 3), (1, 3), (2, 3)]


def test_resume_loop_jumps_sequences_in_constant_time() -> None:
    iterator, probe = resume_loop(1, 10**17, range(10**18))
    assert (probe.skipped, probe.consumed_by_iteration) == (10**17, False)
    assert next(iterator) == 10**17 and probe.pos() == (10**17, 10**18)
    iterator, probe = resume_loop(1, 5, range(3))
    assert list(iterator) == [] and probe.skipped == 3


def test_resume_loop_on_a_short_iterable_yields_nothing() -> None:
    iterator, probe = resume_loop(1, 10, (x for x in range(4)))
    assert probe.skipped == 4
    assert list(iterator) == []
    with pytest.raises(ValueError, match="loop 1"):
        resume_loop(1, -1, [])


class FakeGenerator:
    """A torch.Generator stand-in: get_state() / set_state() around a seeded random.Random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def get_state(self) -> Any:
        return self.rng.getstate()

    def set_state(self, state: Any) -> None:
        self.rng.setstate(state)


class FakeLoader:
    """A DataLoader(shuffle=True, generator=g) stand-in: each iter() draws a new order."""

    def __init__(self, n: int, generator: FakeGenerator) -> None:
        self.n = n
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.n))
        self.generator.rng.shuffle(order)
        return iter(order)


class FakeSampled:
    """The generator one level down, as torch keeps it on ``loader.sampler``."""

    def __init__(self, loader: FakeLoader) -> None:
        self.sampler = loader

    def __iter__(self) -> Iterator[int]:
        return iter(self.sampler)


@pytest.mark.parametrize("wrap", [lambda loader: loader, FakeSampled])
def test_resume_loop_replays_the_order_of_a_shuffling_iterable(wrap: Any) -> None:
    loader = wrap(FakeLoader(20, FakeGenerator(5)))
    assert iterate.rng_holder(loader) is not None
    iterator, probe = loop(loader)
    first = [next(iterator) for _ in range(6)]
    rest = list(iterator)
    state = probe.rng_state
    assert state is not None
    for _ in loop(loader)[0]:  # a later epoch advances the generator further
        pass
    # Without the recorded state the order is another one (so the next check can fail).
    assert list(resume_loop(1, 6, loader)[0]) != rest
    iterator, probe = resume_loop(1, 6, loader, rng_state=state)
    assert list(iterator) == rest and probe.skipped == 6
    assert probe.rng_state == state  # a later checkpoint records the same start
    assert sorted(first + rest) == list(range(20))


def test_rng_holder_is_duck_typed_and_never_raises() -> None:
    class Raising:
        @property
        def generator(self) -> Any:
            raise RuntimeError("closed")

    class HalfAGenerator:
        generator = types.SimpleNamespace(get_state=lambda: 1)

    for thing in (range(3), [1], Raising(), HalfAGenerator(), None):
        assert iterate.rng_holder(thing) is None


def test_random_sources_name_the_generators_an_iterable_is_built_from() -> None:
    import numpy as np

    from nbcheckpoint.capture.engine import random_sources

    ns = {"np": np, "rng": np.random.default_rng(0), "n": 5, "rs": np.random.RandomState(0)}
    assert random_sources("rng.permutation(n)", ns) == ["rng"]
    assert random_sources("np.random.permutation(n)", ns) == ["np.random.permutation"]
    assert random_sources("rs.choice(n, 3)", ns) == ["rs"]
    assert random_sources("range(n)", ns) == []
    assert random_sources("np.arange(n)", ns) == []
    assert random_sources("not python (", ns) == []


def test_loop_helpers_never_pickle_itertools_objects() -> None:
    """Python 3.13 deprecates pickling itertools objects and 3.14 removes it: none is used."""
    import pickle
    import warnings

    from nbcheckpoint.capture import engine

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for make in (lambda: range(10), lambda: [1, 2, 3] * 3, lambda: (x for x in range(9))):
            iterator, probe = resume_loop(1, 2, make())
            next(iterator)
            probe.pos()
        ns: dict[str, Any] = {}
        engine.install_runtime(ns)
        # The runtime names are module functions: pickled by reference, nothing dragged along.
        for name in engine.RUNTIME_NAMES:
            assert pickle.loads(pickle.dumps(ns[name])) == ns[name]


def test_docstring_examples() -> None:
    for module in (rewrite, iterate):
        runner = doctest.DocTestRunner(checker=_Checker(), optionflags=doctest.ELLIPSIS)
        for test in doctest.DocTestFinder().find(module):
            runner.run(test)
        assert runner.failures == 0, module.__name__


@pytest.mark.skipif(not hasattr(ast, "TryStar"), reason="except* needs Python 3.11")
def test_except_star_and_async_with() -> None:
    src = """
        import asyncio
        import contextlib
        out = []
        try:
            for i in range(3):
                out.append(i)
            raise ExceptionGroup("g", [KeyError(1), ValueError(2)])
        except* KeyError as eg:
            out.append(("key", len(eg.exceptions)))
        except* ValueError:
            for j in range(2):
                out.append(("value", j))
        async with contextlib.AsyncExitStack():
            for k in range(3):
                out.append(await asyncio.sleep(0, result=k))
    """
    check_resume_everywhere(src)


@pytest.mark.skipif(not hasattr(ast, "TryStar"), reason="except* needs Python 3.11")
def test_loops_in_finally_and_except_star_cannot_be_resumed() -> None:
    src = """
        out = []
        for i in range(3):
            try:
                if i == 1:
                    break
            finally:
                for q in range(2):
                    out.append((i, q))
            out.append(i)
        try:
            raise ExceptionGroup("g", [KeyError(1)])
        except* KeyError:
            for j in range(2):
                out.append(j)
    """
    plan = instrument(parse(src)).plan
    assert [(loop.target, loop.resumable) for loop in plan.loops.values()] == [
        ("i", True),
        ("q", False),
        ("j", False),
    ]
    # A kill in the finally during the `break` resumes from the loop's safepoint before it.
    check_resume_everywhere(src)
