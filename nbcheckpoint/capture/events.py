"""A tiny observer hook: whoever subscribes hears about each checkpoint as the capture engine takes it.

The engine calls :func:`emit` on the kernel's main thread at a safe point, so a
subscriber (the checkpoint panel) may update widgets right away: the main thread is
busy running the cell, and this is the only moment it can do so. A subscriber
must therefore be quick: the running loop waits for it.

Bound methods are held weakly, so an object that is otherwise gone (a closed panel)
stops being called and can be garbage-collected; plain functions are held as given.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Callable

from ..store import Checkpoint

Listener = Callable[[Checkpoint], None]

_listeners: list[Callable[[], Listener | None]] = []


def _hold(fn: Listener) -> Callable[[], Listener | None]:
    """A weak reference to a bound method; a strong one to anything else (a lambda held
    weakly would vanish at once)."""
    if isinstance(fn, types.MethodType):
        try:
            return weakref.WeakMethod(fn)
        except TypeError:  # its object takes no weak reference
            pass
    return lambda: fn


def _alive() -> list[Listener]:
    found = [fn for fn in (ref() for ref in _listeners) if fn is not None]
    if len(found) != len(_listeners):  # drop the references whose object is gone
        _listeners[:] = [ref for ref in _listeners if ref() is not None]
    return found


def subscribe(fn: Listener) -> Listener:
    """Call ``fn(checkpoint)`` after each checkpoint the engine takes; returns ``fn``.

    Subscribing the same callable twice has no further effect. A bound method is held
    weakly: it is dropped once its object is garbage-collected.

    Examples
    --------
    >>> seen = []
    >>> _ = subscribe(seen.append)
    >>> unsubscribe(seen.append)
    """
    if fn not in _alive():
        _listeners.append(_hold(fn))
    return fn


def unsubscribe(fn: Listener) -> None:
    """Stop calling ``fn``; unknown callables are ignored."""
    _listeners[:] = [ref for ref in _listeners if ref() not in (None, fn)]


def listeners() -> list[Listener]:
    """The current subscribers, oldest first (a copy)."""
    return _alive()


def emit(checkpoint: Checkpoint) -> None:
    """Tell every subscriber about ``checkpoint``.

    A failing subscriber must never stop the cell that is being checkpointed: its
    error is written to stderr in one line and the other subscribers still run.
    """
    for fn in _alive():
        try:
            fn(checkpoint)
        except Exception as e:  # a listener's bug is not the running cell's problem
            name = getattr(fn, "__qualname__", repr(fn))
            print(
                f"nbcheckpoint: a checkpoint listener ({name}) failed on #{checkpoint.id}: "
                f"{type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
