"""Runtime helpers of instrumented for loops: the iterator to run, its position on demand, and resuming."""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from typing import Any

__all__ = ["Probe", "length_of", "loop", "resume_loop"]


def length_of(obj: object) -> int | None:
    """Return ``len(obj)`` when the object has a working ``__len__``, else None.

    Never iterates, so a generator or file passed to it is left untouched.

    Parameters
    ----------
    obj : object
        The iterable of a ``for`` loop.

    Returns
    -------
    int or None

    Examples
    --------
    >>> length_of(range(100)), length_of(x for x in "ab")
    (100, None)
    """
    if not isinstance(obj, Sized):
        return None
    try:
        return len(obj)
    except Exception:
        # A __len__ that raises (a 0-d numpy array, a lazy query) only costs us the total.
        return None


def _advance(iterator: Iterator[Any], n: int) -> int:
    """Consume up to ``n`` items at C speed and return how many there were."""
    if n == 0:
        return 0
    # Counting through enumerate into a one-slot deque keeps neither a Python loop nor the items.
    last = deque(enumerate(itertools.islice(iterator, n), 1), maxlen=1)
    return int(last[0][0]) if last else 0


# -- the loop protocol used by instrumented code ----------------------------------------

# Iterables whose length cannot change while a for loop runs over them, and whose iterator
# tells how many items are left: the iteration index is derived only when a snapshot is due.
_FIXED: tuple[type, ...] = (
    range,
    tuple,
    str,
    bytes,
    dict,
    set,
    frozenset,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)
_BIG = 1 << 62
# zip pulls one number per item and itemgetter drops it again: a count kept in C, with no
# Python frame per item.
_second = operator.itemgetter(1)


class Probe:
    """Where a running for loop is, computed only when asked (at a snapshot).

    Attributes
    ----------
    skipped : int
        Items skipped to resume (0 for a loop that was not resumed).
    consumed_by_iteration : bool
        True when skipping meant producing the items again (a generator, ``zip``...).
    """

    __slots__ = ("consumed_by_iteration", "kind", "length", "probe", "skipped")

    def __init__(self, kind: str, probe: Any, length: int | None) -> None:
        self.kind = kind
        self.probe = probe
        self.length = length
        self.skipped = 0
        self.consumed_by_iteration = False

    def pos(self) -> tuple[int, int | None]:
        """``(index of the current item, length or None)``."""
        if self.kind == "list":
            # A list may grow while looped over: its iterator's state is a plain index.
            reduced = self.probe.__reduce__()
            seq = reduced[1][0]
            return (int(reduced[2]) - 1 if len(reduced) > 2 else len(seq) - 1), len(seq)
        remaining = int(self.probe.__length_hint__())
        if self.kind == "fixed":
            assert self.length is not None
            return self.length - remaining - 1, self.length
        return _BIG - remaining - 1, self.length


def _kind(obj: object) -> str:
    kind = type(obj)
    if kind is list:
        return "list"
    if kind in _FIXED:
        return "fixed"
    if kind.__name__ == "ndarray" and kind.__module__ == "numpy" and getattr(obj, "ndim", 0) > 0:
        return "fixed"
    return "counted"


def loop(iterable: Iterable[Any]) -> tuple[Iterator[Any], Probe]:
    """The iterator a for loop runs over, and a probe for its position.

    Lists, ranges, tuples, dicts, sets and arrays are iterated as they are, at no cost
    per item; other iterables pass through a counter built from C iterators.

    Examples
    --------
    >>> it, probe = loop(["a", "b", "c"])
    >>> next(it), next(it), probe.pos()
    ('a', 'b', (1, 3))
    """
    kind = _kind(iterable)
    if kind == "counted":
        counter = iter(range(_BIG))
        return map(_second, zip(counter, iterable)), Probe(kind, counter, length_of(iterable))
    it = iter(iterable)
    return it, Probe(kind, it, len(iterable) if kind == "fixed" else None)  # type: ignore[arg-type]


def resume_loop(loop_id: int, start: int, iterable: Iterable[Any]) -> tuple[Iterator[Any], Probe]:
    """Like :func:`loop`, with the first ``start`` items skipped and indices kept.

    Sequences and ranges jump straight to ``start``; other iterables produce and drop
    the skipped items (noted on the probe, so the caller can say so).

    Examples
    --------
    >>> it, probe = resume_loop(1, 98, range(100))
    >>> next(it), probe.pos(), probe.skipped
    (98, (98, 100), 98)
    """
    if start < 0:
        raise ValueError(f"Cannot resume loop {loop_id} at negative index {start}")
    kind = _kind(iterable)
    if kind == "counted":
        raw = iter(iterable)
        skipped = _advance(raw, start)
        counter = iter(range(_BIG))
        counter.__setstate__(skipped)  # type: ignore[attr-defined]
        probe = Probe(kind, counter, length_of(iterable))
        probe.skipped = skipped
        probe.consumed_by_iteration = skipped > 0
        return map(_second, zip(counter, raw)), probe
    it = iter(iterable)
    n = len(iterable)  # type: ignore[arg-type]
    setstate = getattr(it, "__setstate__", None)
    if setstate is not None:
        setstate(start)  # O(1): sequence iterators keep a plain index
        skipped = min(start, n)
    else:
        skipped = _advance(it, start)  # dicts and sets: the items exist already
    probe = Probe(kind, it, n if kind == "fixed" else None)
    probe.skipped = skipped
    return it, probe
