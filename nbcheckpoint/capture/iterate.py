"""Runtime helpers called by instrumented loops: a cheap length, and iteration from a resumed index."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MappingView, Sequence, Set, Sized
from typing import Any

__all__ = ["ResumeIterator", "length_of", "resume_iter"]

# Containers whose items already exist: stepping over them computes nothing.
_MATERIALIZED = (Sequence, Set, Mapping, MappingView)


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


class ResumeIterator(Iterator[tuple[int, Any]]):
    """``(index, item)`` pairs of an iterable from index ``start`` on, like ``enumerate``.

    The first ``start`` items are skipped when the object is built, so that the caller can
    report what skipping cost before the loop runs.

    Parameters
    ----------
    loop_id : int
        Id of the loop being resumed (kept for messages).
    start : int
        Index of the first item to yield.
    iterable : iterable
        The loop's iterable, evaluated again after the namespace was restored.

    Attributes
    ----------
    skipped : int
        Items skipped; less than ``start`` when the iterable ended early, in which case
        nothing is yielded and the loop's ``else:`` runs as for any exhausted loop.
    consumed_by_iteration : bool
        True when the skipped items had to be produced by the iterable itself (a generator,
        ``zip``, a data loader...): that may be slow, and repeats any side effect of producing
        them. False for ``range`` (sliced) and for containers whose items already exist.

    Examples
    --------
    >>> it = ResumeIterator(1, 2, "abcd")
    >>> list(it), it.skipped, it.consumed_by_iteration
    ([(2, 'c'), (3, 'd')], 2, False)
    """

    def __init__(self, loop_id: int, start: int, iterable: Iterable[Any]) -> None:
        if start < 0:
            raise ValueError(f"Cannot resume loop {loop_id} at negative index {start}")
        self.loop_id = loop_id
        self.start = start
        rest: Iterator[Any]
        if isinstance(iterable, range):
            rest = iter(iterable[start:])
            self.skipped = min(start, len(iterable))
            self.consumed_by_iteration = False
        else:
            rest = iter(iterable)
            self.consumed_by_iteration = start > 0 and not isinstance(iterable, _MATERIALIZED)
            self.skipped = _advance(rest, start)
        self._pairs = enumerate(rest, start)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        # Hand the for loop the enumerate object itself so that each iteration stays in C.
        return self._pairs

    def __next__(self) -> tuple[int, Any]:
        return next(self._pairs)


def resume_iter(loop_id: int, start: int, iterable: Iterable[Any]) -> ResumeIterator:
    """Iterate ``(index, item)`` from index ``start``, skipping the first ``start`` items.

    This is what a resumed loop calls as ``__nbc_resume_iter__``.

    Parameters
    ----------
    loop_id : int
        Id of the loop being resumed.
    start : int
        Index of the first item to yield.
    iterable : iterable
        The loop's iterable.

    Returns
    -------
    ResumeIterator
        An iterator that also tells how many items were skipped and whether that meant
        producing them one by one.

    Examples
    --------
    >>> list(resume_iter(1, 98, range(100)))
    [(98, 98), (99, 99)]
    >>> it = resume_iter(2, 1, (x * x for x in range(3)))
    >>> list(it), it.consumed_by_iteration
    ([(1, 1), (2, 4)], True)
    """
    return ResumeIterator(loop_id, start, iterable)


def _advance(iterator: Iterator[Any], n: int) -> int:
    """Consume up to ``n`` items at C speed and return how many there were."""
    if n == 0:
        return 0
    # Counting through enumerate into a one-slot deque keeps neither a Python loop nor the items.
    last = deque(enumerate(itertools.islice(iterator, n), 1), maxlen=1)
    return int(last[0][0]) if last else 0
