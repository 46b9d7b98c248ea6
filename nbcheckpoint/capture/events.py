"""A tiny observer hook: whoever subscribes hears about each checkpoint as the capture engine takes it.

The engine calls :func:`emit` on the kernel's main thread at a safe point, so a
subscriber (the checkpoint panel) may update widgets right away: the main thread is
busy running the cell, and this is the only moment it can do so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..store import Checkpoint

Listener = Callable[[Checkpoint], None]

_listeners: list[Listener] = []


def subscribe(fn: Listener) -> Listener:
    """Call ``fn(checkpoint)`` after each checkpoint the engine takes; returns ``fn``.

    Subscribing the same callable twice has no further effect.

    Examples
    --------
    >>> seen = []
    >>> _ = subscribe(seen.append)
    >>> unsubscribe(seen.append)
    """
    if fn not in _listeners:
        _listeners.append(fn)
    return fn


def unsubscribe(fn: Listener) -> None:
    """Stop calling ``fn``; unknown callables are ignored."""
    if fn in _listeners:
        _listeners.remove(fn)


def listeners() -> list[Listener]:
    """The current subscribers, oldest first (a copy)."""
    return list(_listeners)


def emit(checkpoint: Checkpoint) -> None:
    """Tell every subscriber about ``checkpoint``.

    A failing subscriber must never stop the cell that is being checkpointed: its
    error is written to stderr in one line and the other subscribers still run.
    """
    for fn in list(_listeners):
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
