"""Marker safepoints on the main thread: a real poke, a real line trace, and what must not happen."""

from __future__ import annotations

import ast
import signal
import sys
import textwrap
import threading
import types
from typing import Any

import pytest

from nbcheckpoint.capture import arm
from nbcheckpoint.capture.iterate import count, loop
from nbcheckpoint.capture.rewrite import MARKER_LINE, instrument

pytestmark = pytest.mark.skipif(
    arm.available() is not None, reason=f"marker safepoints unavailable: {arm.available()}"
)


class Cell:
    """An instrumented cell with markers, compiled under its own file name and registered."""

    count = 0

    def __init__(self, src: str) -> None:
        Cell.count += 1
        self.filename = f"<arm test {Cell.count}>"
        self.instrumented = instrument(ast.parse(textwrap.dedent(src)), markers=True)
        self.plan = self.instrumented.plan
        self.code = compile(self.instrumented.module, self.filename, "exec")
        self.ns: dict[str, Any] = {
            "_nbc_due_": False,
            "__nbc_sp__": lambda *a: None,
            "__nbc_loop__": loop,
            "__nbc_count__": count,
        }


class Poker:
    """A timer thread that sets the flag and pokes, like CellRun's, until told to stop."""

    def __init__(self, arming: arm.Arming, ns: dict[str, Any], after: float) -> None:
        self.arming, self.ns, self.after = arming, ns, after
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.stop.wait(self.after):
            return
        while not self.stop.is_set():
            self.ns["_nbc_due_"] = True
            self.arming.poke()
            self.stop.wait(0.02)

    def __enter__(self) -> Poker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def arming_for():
    made: list[arm.Arming] = []

    def make(cell: Cell, on_marker: Any) -> arm.Arming:
        a = arm.Arming(lambda: bool(cell.ns["_nbc_due_"]), on_marker)
        assert a.install() is None
        made.append(a)
        return a

    yield make
    for a in made:
        a.uninstall()
    assert sys.gettrace() is None


def test_a_poke_snapshots_a_tight_loop_at_its_next_iteration(arming_for):
    cell = Cell(
        """
        total = 0
        for i in range(30_000_000):
            total += i
            if stop:
                break
        """
    )
    seen: list[tuple[int, tuple[Any, ...], int, int]] = []

    def on_marker(frame: types.FrameType, sp: int) -> None:
        assert sys.gettrace() is None and frame.f_trace is None, "still armed at the marker"
        ns = cell.ns
        seen.append((sp, arm.marker_pairs(cell.plan, sp, ns), ns["i"], ns["total"]))
        ns["_nbc_due_"] = False
        ns["stop"] = len(seen) >= 3

    arming = arming_for(cell, on_marker)
    cell.ns["stop"] = False
    with Poker(arming, cell.ns, 0.05):
        exec(cell.code, cell.ns)
    assert len(seen) == 3, "the poke never reached the marker line"
    loop_sp = cell.plan.safepoints[2]
    assert loop_sp.loops == (1,)
    for sp, pairs, i, total in seen:
        assert sp == 2
        assert pairs == (i, 30_000_000)
        # The marker is the top of the body: the iteration's statements have not run yet.
        assert total == i * (i - 1) // 2
    assert not arming.armed and sys.gettrace() is None


def test_no_trace_while_the_cell_is_inside_a_call(arming_for):
    # The tight loop's iterable calls work(): a poke landing in work() finds the cell frame
    # on the loop's own line, but at a call, and must not arm (a trace would slow every
    # Python call in work() down until the loop's first marker).
    cell = Cell(
        """
        traced = []
        def work():
            acc = 0
            for k in range(300_000):
                acc += k
                if k % 10_000 == 0:
                    traced.append(sys.gettrace())
            return 3
        for e in range(4):
            x = 0
            for j in range(work()):
                x += j
        """
    )
    assert [lp.tight for lp in cell.plan.loops.values()] == [False, False, True]
    cell.ns["sys"] = sys
    arming = arming_for(cell, lambda frame, sp: None)
    handled = []
    original = arming._handle

    def counting(signum: int, frame: types.FrameType | None) -> None:
        handled.append(frame.f_code.co_name if frame is not None else None)
        original(signum, frame)

    signal.signal(arming.signum, counting)
    traced = []
    try:
        # Where a poke lands is up to the scheduler: on a loaded machine a whole run can
        # pass with every poke handled outside work(). Run again until one lands there.
        for _ in range(20):
            with Poker(arming, cell.ns, 0.0):
                exec(cell.code, cell.ns)
            traced += cell.ns["traced"]
            if "work" in handled:
                break
    finally:
        signal.signal(arming.signum, original)
    assert "work" in handled, "no poke landed inside work() in 20 runs: the test proved nothing"
    assert all(t is None for t in traced), "a trace was on inside work()"
    assert sys.gettrace() is None


def test_a_loop_that_ends_before_its_marker_disarms_when_it_leaves(arming_for):
    cell = Cell(
        """
        for i in range(3):
            x = i
        after = sys.gettrace()
        """
    )
    cell.ns["sys"] = sys
    arming = arming_for(cell, lambda frame, sp: None)
    cell.ns["_nbc_due_"] = True

    # Arm by hand at the last iteration's jump back, as a poke landing there would.
    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != cell.filename:
            return None
        if event == "line" and frame.f_lineno == 3 and cell.ns.get("i") == 2:
            sys.settrace(None)
            arming._arm(frame, arm.marker_headers(frame.f_code))
            return arming._trace
        return tracer

    sys.settrace(tracer)
    exec(cell.code, cell.ns)
    assert cell.ns["after"] is None, "the trace outlived its loop"
    assert not arming.armed


def test_keyboard_interrupt_in_a_snapshot_reaches_the_cell_at_a_real_line(arming_for):
    cell = Cell(
        """
        n = 0
        while True:
            n += 1
        """
    )

    def on_marker(frame: types.FrameType, sp: int) -> None:
        raise KeyboardInterrupt

    arming = arming_for(cell, on_marker)
    with Poker(arming, cell.ns, 0.05), pytest.raises(KeyboardInterrupt) as info:
        exec(cell.code, cell.ns)
    tb = info.value.__traceback__
    lines = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == cell.filename:
            lines.append(tb.tb_lineno)
        tb = tb.tb_next
    assert lines and all(line < MARKER_LINE for line in lines)


def test_handler_is_given_back_and_unavailable_cases_say_why(arming_for):
    cell = Cell("for i in range(2):\n    x = i\n")
    arming = arming_for(cell, lambda frame, sp: None)
    signum = arming.signum
    assert signum is not None and signal.getsignal(signum) == arming._handle
    arming.uninstall()
    assert signal.getsignal(signum) == signal.SIG_DFL

    reasons: list[str | None] = []
    t = threading.Thread(target=lambda: reasons.append(arm.available()))
    t.start()
    t.join()
    assert reasons == ["the cell runs outside the main thread"]

    def tracer(frame: types.FrameType, event: str, arg: Any) -> None:
        return None

    sys.settrace(tracer)
    try:
        assert arm.available() == "a debugger or tracer is active"
    finally:
        sys.settrace(None)


def test_tight_loops_get_marker_lines_that_survive_compilation():
    src = textwrap.dedent(
        """
        total = 0
        for a in range(5):
            for b in range(4):
                total += a * b
            print(a)
        k = 0
        while k < 7:
            k += 1
        while len(str(k)) < 3:
            k *= 10
        for s in (x * 2 for x in range(3)):
            total += s
        for t in range(3):
            total += sum(u for u in range(t))
        with_calls = [t for t in range(3)]
        """
    )
    instrumented = instrument(ast.parse(src), markers=True)
    plan = instrumented.plan
    tight = {lp.id: lp.tight for lp in plan.loops.values()}
    # print() / len() / sum() and a generator expression are calls; the iterable of a for is not.
    assert tight == {1: False, 2: True, 3: True, 4: False, 5: True, 6: False}
    code = compile(instrumented.module, "<cell>", "exec")
    lines = {line for *_, line in code.co_lines() if line and line >= MARKER_LINE}
    marked = {plan.safepoints[sp].id for sp in plan.safepoints if plan.safepoints[sp].loops}
    expected = {MARKER_LINE + sp for sp in marked if tight[plan.safepoints[sp].loops[-1]]}
    assert lines == expected and len(expected) == 3
    # The lines between a loop's jump back and its marker: the headers of the tight loops.
    headers = {plan.loops[i].lineno for i, is_tight in tight.items() if is_tight}
    assert arm.marker_headers(code) == headers
    # Without markers, the same plan and flag tests everywhere.
    plain = instrument(ast.parse(src))
    assert plain.plan.loops == plan.loops and plain.plan.safepoints == plan.safepoints
    assert not any(
        line and line >= MARKER_LINE
        for *_, line in compile(plain.module, "<cell>", "exec").co_lines()
    )


# Each tight loop shape, run until three marker checkpoints were taken (or 300 pokes went by
# without them). `stop` is a plain name test: the loops stay tight, so they get markers.
SHAPES = {
    "for over range": "for i in range(N):\n    t = i\n    if stop:\n        break\n",
    "while": "j = 0\nwhile j < N:\n    j += 1\n    if stop:\n        break\n",
    "while True": "j = 0\nwhile True:\n    j += 1\n    if stop:\n        break\n",
    # 3.11 folds `j < 3000` and its jump back into one specialised instruction.
    "for containing while": (
        "for i in range(N):\n    j = 0\n    while j < 3000:\n        j += 1\n    if stop:\n"
        "        break\n"
    ),
    "while containing for": (
        "k = 0\nwhile k < N:\n    k += 1\n    for j in range(3000):\n        t = j\n"
        "    if stop:\n        break\n"
    ),
    # No call written in the body, but each iteration spends nearly all its time in a Python
    # __getitem__ (as `df.iloc[i, 0]` does in pandas): pokes land down there.
    "subscript running Python code": (
        "for i in range(N):\n    t = slow[i]\n    if stop:\n        break\n"
    ),
    "for over a generator": (
        "for x in (i for i in range(N)):\n    t = x\n    if stop:\n        break\n"
    ),
}


class SlowItems:
    def __getitem__(self, i: int) -> int:
        t = 0
        for k in range(3000):
            t += k
        return t + i


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_tight_loop_shape_takes_its_marker_checkpoints(arming_for, shape):
    cell = Cell(SHAPES[shape])
    innermost = max(cell.plan.loops)
    # (An outer loop whose body builds `range(3000)` has a call: a flag test, not a marker.)
    assert cell.plan.loops[innermost].tight
    hits: list[int] = []

    def on_marker(frame: types.FrameType, sp: int) -> None:
        hits.append(sp)
        cell.ns["_nbc_due_"] = False
        cell.ns["stop"] = len(hits) >= 3

    arming = arming_for(cell, on_marker)
    cell.ns.update(N=10**12, stop=False, slow=SlowItems())
    pokes = 0

    class Limited(Poker):
        def _run(self) -> None:
            nonlocal pokes
            while not self.stop.wait(0.01) and pokes < 300:
                pokes += 1
                self.ns["_nbc_due_"] = True
                self.arming.poke()
            self.ns["stop"] = True

    with Limited(arming, cell.ns, 0.0):
        exec(cell.code, cell.ns)
    assert len(hits) == 3, f"{shape}: {len(hits)} marker checkpoints in {pokes} pokes"
    # Taken inside the loops: at the marker of a loop's own safe point.
    loop_sps = {sp.id for sp in cell.plan.safepoints.values() if sp.loops}
    assert set(hits) <= loop_sps
    if shape.startswith(("for containing", "while containing")):
        assert cell.plan.safepoints[hits[0]].loops[-1] in (innermost, innermost - 1)
    assert not arming.armed and sys.gettrace() is None


def test_loop_stops_names_each_jump_back_and_the_compare_folded_into_it():
    import dis

    code = compile("j = 0\nwhile j < 3:\n    j += 1\nfor i in range(2):\n    pass\n", "<c>", "exec")
    ends, advances = arm.loop_stops(code)
    jumps_back = {
        ins.offset
        for ins in dis.get_instructions(code)
        if ins.opcode in arm._JUMPS and isinstance(ins.argval, int) and ins.argval <= ins.offset
    }
    assert jumps_back and jumps_back <= ends
    names = {ins.offset: ins.opname for ins in dis.get_instructions(code)}
    assert {names[o] for o in advances} == {"FOR_ITER"}
    if sys.version_info[:2] == (3, 11):
        # COMPARE_OP_INT_JUMP checks the eval breaker with f_lasti at the COMPARE_OP.
        assert "COMPARE_OP" in {names[o] for o in ends}


def test_an_unverified_python_gets_flag_tests_and_says_why(monkeypatch):
    monkeypatch.setattr(arm, "VERIFIED", ())
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert arm.available() == f"marker lines are not verified on Python {version}"
    assert arm.describe().startswith("flag test in every loop (marker lines are not verified")
    assert arm.Arming(lambda: True, lambda f, s: None).install() == arm.available()
    monkeypatch.undo()
    assert arm.available() is None and arm.describe().startswith("marker lines")


@pytest.mark.parametrize(
    "src",
    [
        "for i in range(10):\n    j = 0\n    while j < 30:\n        j += 1\n",
        "k = 0\nwhile k < 10:\n    k += 1\n    if k == 5:\n        continue\n    t = k\n",
    ],
    ids=["for containing while", "while with a branch"],
)
def test_a_poke_at_any_jump_inside_a_tight_loop_arms(src: str) -> None:
    """Python 3.10 checks for pokes at every jump taken, forward ones too (the ``if not test:
    break`` of a rewritten while loop): each must arm, not leave the checkpoint to later."""
    import dis

    code = Cell(src).code
    ranges, _lines = arm.tight_loops(code)
    inside = [
        ins.offset
        for ins in dis.get_instructions(code)
        if ins.opcode in arm._JUMPS and any(a <= ins.offset <= b for a, b in ranges)
    ]
    forward = [
        ins.offset
        for ins in dis.get_instructions(code)
        if ins.offset in inside and isinstance(ins.argval, int) and ins.argval > ins.offset
    ]
    assert inside and forward
    arming = arm.Arming(lambda: True, lambda frame, sp: None)
    try:
        for offset in inside:
            frame = types.SimpleNamespace(f_code=code, f_lasti=offset, f_back=None)
            arming._handle(0, frame)  # type: ignore[arg-type]
            assert arming.armed, (
                f"a poke at {offset} ({dis.opname[code.co_code[offset]]}) armed nothing"
            )
            arming.disarm()
    finally:
        arming.disarm()
    assert arming.misses == 0 and arming.arms == len(inside)
    assert sys.gettrace() is None
