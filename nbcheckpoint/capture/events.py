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

# What happened: the engine (or ``%checkpoint save``) took a checkpoint, or variables
# were restored from one (the panel, ``%checkpoint restore``, JupyterLab's Restore).
CHECKPOINT = "checkpoint"
RESTORED = "restored"

_topics: dict[str, list[Callable[[], Listener | None]]] = {CHECKPOINT: [], RESTORED: []}
# Notebooks (store keys) this process has restored variables for: a panel opened after the
# restore must not offer it again.
_restored: set[str] = set()


def restored_here(notebook_key: str) -> bool:
    """True once variables of ``notebook_key`` were restored in this process (this kernel)."""
    return notebook_key in _restored


def _hold(fn: Listener) -> Callable[[], Listener | None]:
    """A weak reference to a bound method; a strong one to anything else (a lambda held
    weakly would vanish at once)."""
    if isinstance(fn, types.MethodType):
        try:
            return weakref.WeakMethod(fn)
        except TypeError:  # its object takes no weak reference
            pass
    return lambda: fn


def _alive(topic: str = CHECKPOINT) -> list[Listener]:
    refs = _topics[topic]
    found = [fn for fn in (ref() for ref in refs) if fn is not None]
    if len(found) != len(refs):  # drop the references whose object is gone
        refs[:] = [ref for ref in refs if ref() is not None]
    return found


def subscribe(fn: Listener, topic: str = CHECKPOINT) -> Listener:
    """Call ``fn(checkpoint)`` after each checkpoint the engine takes; returns ``fn``.

    With ``topic=RESTORED``, call it after each restore instead, with the checkpoint restored.
    Subscribing the same callable twice has no further effect. A bound method is held
    weakly: it is dropped once its object is garbage-collected.

    Examples
    --------
    >>> seen = []
    >>> _ = subscribe(seen.append)
    >>> unsubscribe(seen.append)
    """
    if fn not in _alive(topic):
        _topics[topic].append(_hold(fn))
    return fn


def unsubscribe(fn: Listener, topic: str = CHECKPOINT) -> None:
    """Stop calling ``fn``; unknown callables are ignored."""
    _topics[topic][:] = [ref for ref in _topics[topic] if ref() not in (None, fn)]


def listeners(topic: str = CHECKPOINT) -> list[Listener]:
    """The current subscribers, oldest first (a copy)."""
    return _alive(topic)


def emit(checkpoint: Checkpoint, topic: str = CHECKPOINT) -> None:
    """Tell every subscriber about ``checkpoint``.

    A failing subscriber must never stop the cell that is being checkpointed: its
    error is written to stderr in one line and the other subscribers still run.
    """
    if topic == RESTORED:
        _restored.add(checkpoint.notebook)
    for fn in _alive(topic):
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
