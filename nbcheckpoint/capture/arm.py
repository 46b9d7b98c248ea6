"""Marker safepoints: when a snapshot is due, a poke arms a line trace that fires at the next marker.

A tight loop (no calls in its body, see ``LoopInfo.tight``) gets its safepoint as a ``pass``
on line ``MARKER_LINE + id``: one NOP per iteration instead of a flag test, which on a
pure-Python loop costs 2-20% (see the breakdown in ``benchmarks/bench_capture.py``). When a snapshot is due, the timer thread calls
``_thread.interrupt_main(signum)``: no OS signal is sent, so no system call is interrupted;
Python runs our handler on the main thread at its next eval-breaker check, which in a tight
loop is the loop's own backward jump (``loop_stops`` finds them for each Python version:
3.10's ``JUMP_ABSOLUTE``/``POP_JUMP_IF_TRUE``, 3.11's specialised compare-and-jump, 3.12+'s
``JUMP_BACKWARD``; 3.10 also checks at every forward jump taken, such as the ``if not test:
break`` of a rewritten ``while`` loop, so any offset inside a tight loop counts). If the
innermost frame with marker lines is there, the handler sets a line trace on that one frame;
the next marker line takes the snapshot and removes the trace. Between the poke and the
marker the loop only passes its own lines: any other line means the loop is over, and the
trace goes, so tracing lasts at most one iteration. Anywhere else (inside a call, between statements) the handler does nothing: the
flag the timer also set is found by the flag-test safepoints, and the timer pokes again a
moment later.

Everything the handler needs is in the code object, so the marker lines of a function defined
in an earlier ``%%checkpoint`` cell, or restored from a checkpoint, work too.

Examples
--------
>>> import ast
>>> from .rewrite import instrument
>>> plan = instrument(ast.parse("for i in range(3):\\n    t = i"), markers=True).plan
>>> ns = {}
>>> from .iterate import loop
>>> ns["_nbc_it1_"], ns["_nbc_p1_"] = loop(range(3))
>>> _ = next(ns["_nbc_it1_"])
>>> marker_pairs(plan, 1, ns)
(0, 3)
"""

from __future__ import annotations

import _thread
import dis
import functools
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any

from .rewrite import MARKER_LINE, CellPlan

__all__ = [
    "VERIFIED",
    "Arming",
    "available",
    "describe",
    "loop_stops",
    "marker_headers",
    "marker_pairs",
    "tight_loops",
]

# Instructions that can jump: a backward one ends an iteration, wherever Python checks its
# eval breaker (every version does so at a jump back, 3.10 after jumping, later ones before).
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
# How far up from the interrupted frame to look for a cell's tight loop: through the frames
# of the dunder methods its body calls (a pandas ``df.iloc[i]`` runs a dozen levels deep).
_MAX_DEPTH = 64


def marker_pairs(plan: CellPlan, sp_id: int, ns: Mapping[str, Any]) -> tuple[int | None, ...]:
    """The ``(index, length)`` pairs a flag-test safepoint would have passed at ``sp_id``."""
    out: list[int | None] = []
    for _kind, name, _ in plan.marker_loops(sp_id):
        out.extend(ns[name].pos())
    return tuple(out)


def _free_signal() -> int | None:
    """A real-time signal nobody handles, so that our handler disturbs no one."""
    low, high = getattr(signal, "SIGRTMIN", None), getattr(signal, "SIGRTMAX", None)
    if low is None or high is None:
        return None
    for signum in range(int(high) - 1, int(low) + 3, -1):
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                return signum
        except (ValueError, OSError):
            continue
    return None


#: The Pythons whose bytecode the arming was checked on, loop shape by loop shape (see
#: ``tests/test_arm.py`` and ``tests/integration/test_loop_matrix.py``): where a poke lands
#: in a tight loop (``loop_stops``) is an interpreter detail that changes between versions.
#: On any other version every loop gets a flag test instead, and ``%checkpoint config`` says so.
VERIFIED = ((3, 10), (3, 11), (3, 12), (3, 13))


def _blocker() -> str | None:
    """Why no trace can be armed here, signals aside; None when nothing stands in the way."""
    if sys.version_info[:2] not in VERIFIED:
        return (
            f"marker lines are not verified on Python {sys.version_info[0]}.{sys.version_info[1]}"
        )
    if sys.platform == "win32":
        return "no real-time signals on Windows"
    if threading.current_thread() is not threading.main_thread():
        return "the cell runs outside the main thread"
    if sys.gettrace() is not None:
        return "a debugger or tracer is active"
    return None


def available() -> str | None:
    """None when marker safepoints can work here, else the reason they cannot."""
    blocker = _blocker()
    if blocker is None and _free_signal() is None:
        return "no free real-time signal"
    return blocker


def describe() -> str:
    """What safe points loops get in this kernel, in words (for ``%checkpoint config``).

    Examples
    --------
    >>> describe().startswith(("marker lines", "flag test"))
    True
    """
    why = available()
    if why is not None:
        return f"flag test in every loop ({why})"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return (
        f"marker lines in loops without calls (checked on Python {version}), flag test elsewhere; "
        "a checkpoint overdue 3x --every is reported"
    )


@functools.lru_cache(maxsize=1024)
def marker_headers(code: CodeType) -> frozenset[int]:
    """The lines an iteration passes between a loop's backward jump and its marker line.

    That is the line of the instruction just before each marker (the ``for`` target's store,
    or a ``while`` loop's counter), which is the loop header's line. Empty when ``code`` has
    no marker line.
    """
    heads: set[int] = set()
    previous: int | None = None
    for _start, _end, line in code.co_lines():
        if line is None:
            continue
        if line >= MARKER_LINE:
            if previous is not None:
                heads.add(previous)
        else:
            previous = line
    return frozenset(heads)


@functools.lru_cache(maxsize=1024)
def loop_stops(code: CodeType) -> tuple[frozenset[int], frozenset[int]]:
    """Where a poke can find a frame of ``code`` between two iterations of a loop.

    Returns ``(ends, advances)``, offsets as ``frame.f_lasti`` gives them. ``ends``: each
    jump backward, which ends an iteration (``JUMP_BACKWARD`` and
    ``POP_JUMP_BACKWARD_IF_*`` from 3.11, ``JUMP_ABSOLUTE`` and ``POP_JUMP_IF_*`` to an
    earlier offset on 3.10), with the ``EXTENDED_ARG`` before it, and the ``COMPARE_OP``
    just before a conditional one: 3.11 specialises the pair into one instruction
    (``COMPARE_OP_INT_JUMP``...) that checks its eval breaker while the frame still points
    at the ``COMPARE_OP``. ``advances``: each ``FOR_ITER``, where a Python iterator (a
    generator) runs one step.

    Examples
    --------
    >>> code = compile("while j < 3:\\n    j += 1", "<cell>", "exec")
    >>> ends, advances = loop_stops(code)
    >>> sorted({dis.opname[code.co_code[i]] for i in ends}) >= ["COMPARE_OP"]
    True
    """
    ends: set[int] = set()
    advances: set[int] = set()
    prefixes: list[int] = []
    previous: tuple[str, list[int]] = ("", [])
    for ins in dis.get_instructions(code):
        if ins.opname == "CACHE":
            continue
        if ins.opname == "EXTENDED_ARG":
            # 3.10 points f_lasti at the prefix while it runs the instruction it extends.
            prefixes.append(ins.offset)
            continue
        here, prefixes = [*prefixes, ins.offset], []
        target = ins.argval
        if ins.opcode in _JUMPS and isinstance(target, int) and target <= ins.offset:
            ends.update(here)
            if previous[0] == "COMPARE_OP":
                ends.update(previous[1])
        elif ins.opname == "FOR_ITER":
            advances.update(here)
        previous = (ins.opname, here)
    return frozenset(ends), frozenset(advances)


@functools.lru_cache(maxsize=1024)
def tight_loops(code: CodeType) -> tuple[tuple[tuple[int, int], ...], frozenset[int]]:
    """The offset ranges of the loops that have a marker line of their own, and their lines.

    Returns ``(ranges, lines)``: ``(first, last)`` offsets of each such loop (from its jump
    back's target to the jump) and every line its instructions are on, marker lines aside.
    A poke that finds the frame inside one of these ranges, but down in a call (a dunder
    method: a tight loop's body writes no call), arms the frame: the loop's own lines lead
    to its marker line within the iteration.

    Examples
    --------
    >>> import ast
    >>> from .rewrite import instrument
    >>> src = "for i in range(3):\\n    t = i\\nu = 1"
    >>> code = compile(instrument(ast.parse(src), markers=True).module, "<c>", "exec")
    >>> sorted(tight_loops(code)[1])
    [1, 2]
    """
    line_at: dict[int, int] = {}
    for start, end, line in code.co_lines():
        if line is not None:
            for offset in range(start, end, 2):
                line_at[offset] = line
    loops = [
        (ins.argval, ins.offset)
        for ins in dis.get_instructions(code)
        if ins.opcode in _JUMPS and isinstance(ins.argval, int) and ins.argval <= ins.offset
    ]
    ranges: list[tuple[int, int]] = []
    lines: set[int] = set()
    for first, last in loops:
        inner = [r for r in loops if r != (first, last) and first <= r[0] and r[1] <= last]
        own = [
            o
            for o in range(first, last + 2, 2)
            if line_at.get(o, 0) >= MARKER_LINE and not any(a <= o <= b for a, b in inner)
        ]
        if own:
            ranges.append((first, last))
            lines.update(
                line_at[o] for o in range(first, last + 2, 2) if 0 < line_at.get(o, 0) < MARKER_LINE
            )
    return tuple(ranges), frozenset(lines)


def _calls_untraced(frame: FrameType, event: str, arg: Any) -> None:
    """Global trace function while armed: leaves every other frame untraced."""
    return None


class Arming:
    """The handler of one run: arms a one-frame line trace, fires ``on_marker``, disarms.

    Parameters
    ----------
    is_due : callable
        Whether a snapshot is still wanted; the handler does nothing otherwise.
    on_marker : callable
        ``on_marker(frame, sp_id)``, called on the main thread at a marker line, with the
        trace already removed.
    """

    def __init__(
        self, is_due: Callable[[], bool], on_marker: Callable[[FrameType, int], None]
    ) -> None:
        self.is_due = is_due
        self.on_marker = on_marker
        self.signum: int | None = None
        self._previous: Any = None
        self._armed: FrameType | None = None
        self._heads: frozenset[int] = frozenset()
        #: Counts for tests and the benchmark: pokes handled while a snapshot was due that
        #: armed a trace, that found nothing to arm (the flag tests' turn), marker lines reached.
        self.arms = 0
        self.misses = 0
        self.markers_reached = 0
        #: Where the last few misses found the main thread: ``(function, offset, depth)``.
        self.missed_at: list[tuple[str, int, int]] = []

    # ------------------------------------------------------------ lifetime
    def install(self) -> str | None:
        """Install the handler (main thread only). Returns None, or why it could not."""
        reason = _blocker()
        if reason is not None:
            return reason
        signum = _free_signal()
        if signum is None:
            return "no free real-time signal"
        try:
            self._previous = signal.signal(signum, self._handle)
        except (ValueError, OSError) as e:
            return str(e)
        self.signum = signum
        return None

    def uninstall(self) -> None:
        """Disarm and give the signal back (main thread)."""
        self.disarm()
        if self.signum is not None:
            try:
                if signal.getsignal(self.signum) == self._handle:
                    signal.signal(self.signum, self._previous or signal.SIG_DFL)
            except (ValueError, OSError):
                pass
            self.signum = None

    def poke(self) -> None:
        """From any thread: have the main thread look for a tight loop to arm."""
        signum = self.signum
        if signum is not None:
            try:
                # Any signal number works at run time; typeshed only lists the named ones.
                _thread.interrupt_main(signum)  # type: ignore[arg-type]
            except (ValueError, OSError, RuntimeError):
                pass

    @property
    def armed(self) -> bool:
        return self._armed is not None

    # ---------------------------------------------------------- main thread
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._armed is not None or sys.gettrace() is not None or not self.is_due():
            return
        depth = 0
        while frame is not None and depth < _MAX_DEPTH:
            heads = marker_headers(frame.f_code)
            if heads:
                ends, advances = loop_stops(frame.f_code)
                at = frame.f_lasti
                ranges, lines = tight_loops(frame.f_code)
                # Innermost: at a loop's jump back, or (3.10, which checks at every jump
                # taken) at any jump inside a tight loop, such as its `if not test: break`.
                # Further up: advancing a Python iterator, or in a dunder method that a
                # tight loop's body calls. Armed inside a tight loop, the trace follows that
                # loop's lines to its marker, within one iteration.
                if (
                    at in advances
                    or (depth == 0 and at in ends)
                    or any(a <= at <= b for a, b in ranges)
                ):
                    self.arms += 1
                    self._arm(frame, heads | lines)
                    return
                # Anywhere else the cell is inside a call it wrote: flag tests are its turn.
                break
            frame = frame.f_back
            depth += 1
        self.misses += 1
        if frame is not None:
            self.missed_at = [*self.missed_at[-4:], (frame.f_code.co_name, frame.f_lasti, depth)]

    def _arm(self, frame: FrameType, heads: frozenset[int]) -> None:
        self._armed, self._heads = frame, heads
        frame.f_trace_lines = True
        frame.f_trace = self._trace
        sys.settrace(_calls_untraced)

    def disarm(self) -> None:
        """Remove the trace, if armed (main thread)."""
        frame, self._armed = self._armed, None
        if frame is not None:
            frame.f_trace = None
        if sys.gettrace() is _calls_untraced:
            sys.settrace(None)

    def _raise_at_next_line(self, frame: FrameType, error: BaseException) -> Any:
        def raiser(frame: FrameType, event: str, arg: Any) -> Any:
            if event in ("line", "return"):
                frame.f_trace = None
                if sys.gettrace() is _calls_untraced:
                    sys.settrace(None)
                raise error
            return raiser

        frame.f_trace = raiser
        sys.settrace(_calls_untraced)
        return raiser

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame is not self._armed:
            return None
        if event == "return":
            self.disarm()
            return None
        if event != "line":
            return self._trace
        line = frame.f_lineno
        if line >= MARKER_LINE:
            self.disarm()
            self.markers_reached += 1
            try:
                self.on_marker(frame, line - MARKER_LINE)
            except KeyboardInterrupt as interrupt:
                # Raised here, the traceback would name the marker's made-up line: raise it
                # from the next line event instead, which names the user's next line.
                return self._raise_at_next_line(frame, interrupt)
            return None
        if line not in self._heads:
            # Not on the way to a marker (a tight loop's header or its own lines): a loop with
            # calls, or the loop is over. The flag tests take it from here.
            self.disarm()
            return None
        return self._trace
