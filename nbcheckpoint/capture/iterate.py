"""Runtime helpers of instrumented for loops: the iterator to run, its position on demand, and resuming.

Nothing here pickles an iterator or calls an ``itertools`` object's ``__reduce__`` or
``__setstate__`` (deprecated in 3.12, gone in 3.14): positions are read from the
``__length_hint__`` of C iterators, and a resumed loop skips items by iterating.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

__all__ = ["Held", "Probe", "count", "length_of", "loop", "resume_loop", "rng_holder"]


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


def rng_holder(iterable: object) -> Any | None:
    """The random generator an iterable draws its order from, when it exposes one.

    That is a ``generator`` attribute with ``get_state()`` and ``set_state()``, on the
    iterable, its ``sampler`` or its ``batch_sampler.sampler``: what a torch ``DataLoader``
    built with ``shuffle=True, generator=g`` has. Recording ``get_state()`` before the
    iterator is made, and restoring it before it is made again, replays the same order.
    Duck-typed: torch is never imported.

    Examples
    --------
    >>> rng_holder(range(3)) is None
    True
    """
    owners = [iterable]
    try:
        owners.append(getattr(iterable, "sampler", None))
        owners.append(getattr(getattr(iterable, "batch_sampler", None), "sampler", None))
        for owner in owners:
            gen = getattr(owner, "generator", None) if owner is not None else None
            if callable(getattr(gen, "get_state", None)) and callable(
                getattr(gen, "set_state", None)
            ):
                return gen
    except Exception:
        # An attribute that raises (a lazy proxy, a closed resource): no generator to replay.
        return None
    return None


def _nothing() -> None:
    """What a probe or a held iterator unpickles as: a loop's position means nothing elsewhere."""
    return None


class Held:
    """The iterator of a rewritten loop as the namespace holds it (``_nbc_it<id>_``).

    ``for`` asks for the iterator once, when the loop starts, and then runs the raw one:
    no cost per item. A whole-session tool that pickles the namespace while the loop runs
    (``dill.dump_module()``) gets None by reference, not a generator it cannot pickle.

    Examples
    --------
    >>> import pickle
    >>> held = Held(x for x in "ab")
    >>> [x for x in held], pickle.loads(pickle.dumps(held))
    (['a', 'b'], None)
    """

    __slots__ = ("_it",)

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it

    def __iter__(self) -> Iterator[Any]:
        return self._it

    def __next__(self) -> Any:
        return next(self._it)

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _nothing, ()


class Probe:
    """Where a running for loop is, computed only when asked (at a snapshot).

    Attributes
    ----------
    skipped : int
        Items skipped to resume (0 for a loop that was not resumed).
    consumed_by_iteration : bool
        True when skipping meant producing the items again (a generator, ``zip``...).
    rng : object or None
        The generator the iterable draws its order from (see :func:`rng_holder`).
    rng_state : object or None
        ``rng.get_state()`` taken just before the loop's iterator was made.
    """

    __slots__ = ("consumed_by_iteration", "kind", "length", "probe", "rng", "rng_state", "skipped")

    def __init__(self, kind: str, probe: Any, length: int | None) -> None:
        self.kind = kind
        self.probe = probe
        self.length = length
        self.skipped = 0
        self.consumed_by_iteration = False
        self.rng: Any = None
        self.rng_state: Any = None

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        # The namespace holds the probe while its cell runs: a whole-session tool
        # (``dill.dump_module()`` in the loop's body) pickles it as None, by reference.
        return _nothing, ()

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
        rng, state = _record_rng(iterable)
        counter = iter(range(_BIG))
        probe = Probe(kind, counter, length_of(iterable))
        probe.rng, probe.rng_state = rng, state
        return map(_second, zip(counter, iterable)), probe
    it = iter(iterable)
    return it, Probe(kind, it, len(iterable) if kind == "fixed" else None)  # type: ignore[arg-type]


def count(start: int = 0) -> tuple[Iterator[tuple[()]], Probe]:
    """What a ``while`` loop runs over: endless empty tuples, and a probe for its iteration.

    ``for [] in iterator:`` unpacks each into nothing, so an iteration stores no counter;
    the probe reads the count from the iterator's length hint (``itertools.repeat``
    is only iterated, never pickled or copied). ``start`` resumes the count.

    Examples
    --------
    >>> it, probe = count(5)
    >>> next(it), probe.pos()
    ((), (5, None))
    """
    it = itertools.repeat((), _BIG - start)
    return it, Probe("counted", it, None)


def _record_rng(iterable: object) -> tuple[Any, Any]:
    rng = rng_holder(iterable)
    if rng is None:
        return None, None
    try:
        return rng, rng.get_state()
    except Exception:
        return rng, None


def resume_loop(
    loop_id: int, start: int, iterable: Iterable[Any], rng_state: Any = None
) -> tuple[Iterator[Any], Probe]:
    """Like :func:`loop`, with the first ``start`` items skipped and indices kept.

    Sequences and ranges jump straight to ``start``; other iterables produce and drop
    the skipped items (noted on the probe, so the caller can say so). With ``rng_state``
    (what ``probe.rng_state`` held when the interrupted loop began), the iterable's own
    generator (see :func:`rng_holder`) is set back to it first, so that a shuffling
    iterable replays the order the interrupted run had.

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
        if rng_state is not None:
            rng = rng_holder(iterable)
            if rng is not None:
                rng.set_state(rng_state)
        rng, state = _record_rng(iterable)
        raw = iter(iterable)
        skipped = _advance(raw, start)
        # A range iterator started at `skipped` (not an itertools object: nothing here
        # relies on the itertools pickling support that Python 3.14 removes).
        counter = iter(range(skipped, _BIG))
        probe = Probe(kind, counter, length_of(iterable))
        probe.skipped = skipped
        probe.consumed_by_iteration = skipped > 0
        probe.rng, probe.rng_state = rng, state
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
