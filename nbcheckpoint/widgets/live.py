"""One background thread that keeps live panels current, so a running loop never waits for a panel.

A checkpoint event reaches a panel on the kernel's main thread, inside the user's loop.
The panel only queues the checkpoint and asks this thread to catch up; this thread
renders (and reads the store when it must), coalescing the requests that pile up while
it works: five panels and a fast loop cost the loop a queue append each. The same
thread ticks every :data:`TICK` seconds so "2 min ago" stays true.

Panels are held weakly here too: a panel nobody holds any more is dropped.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import Protocol

TICK = 15.0  # seconds between two updates of the relative times


class Live(Protocol):
    """What the thread calls on a panel (both run on the thread, never on the main one)."""

    def catch_up(self) -> None: ...

    def tick(self) -> None: ...


class LiveThread:
    """A daemon thread that runs each requested panel's ``catch_up`` and ticks watched panels.

    Examples
    --------
    >>> class Counter:
    ...     runs = 0
    ...     def catch_up(self): self.runs += 1
    ...     def tick(self): pass
    >>> thread, panel = LiveThread(), Counter()
    >>> thread.request(panel)
    >>> thread.wait_idle(5.0)
    True
    >>> panel.runs
    1
    >>> thread.stop()
    """

    def __init__(self, tick: float = TICK) -> None:
        self.tick_every = tick
        self._cond = threading.Condition()
        self._due: dict[int, weakref.ref[Live]] = {}
        self._watched: weakref.WeakSet[Live] = weakref.WeakSet()
        self._busy = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def request(self, panel: Live) -> None:
        """Ask for ``panel.catch_up()`` soon; cheap, and safe from any thread."""
        with self._cond:
            self._due[id(panel)] = weakref.ref(panel)
            self._start()
            self._cond.notify()

    def watch(self, panel: Live) -> None:
        """Call ``panel.tick()`` every ``tick_every`` seconds until :meth:`unwatch`."""
        with self._cond:
            self._watched.add(panel)
            self._start()

    def unwatch(self, panel: Live) -> None:
        with self._cond:
            self._watched.discard(panel)
            self._due.pop(id(panel), None)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is pending or running; False on timeout (tests, benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._due and not self._busy, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopped = False
            self._thread = threading.Thread(
                target=self._loop, name="nbcheckpoint-live", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.tick_every
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._due or self._stopped, max(next_tick - time.monotonic(), 0.0)
                )
                if self._stopped:
                    return
                due, self._due = self._due, {}
                ticking: list[Live] = []
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_every
                    ticking = [p for p in self._watched if id(p) not in due]
                self._busy = True
            try:
                for ref in due.values():
                    panel = ref()
                    if panel is not None:
                        self._call(panel.catch_up)
                    del panel  # hold no panel while waiting
                for panel in ticking:
                    self._call(panel.tick)
                del ticking
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    @staticmethod
    def _call(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except Exception as e:  # one panel's bug must not stop the others' updates
            print(
                f"nbcheckpoint: a live panel update failed: {type(e).__name__}: {e}",
                file=sys.stderr,
            )


_thread: LiveThread | None = None
_lock = threading.Lock()


def thread() -> LiveThread:
    """The process's one live thread (made on first use)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = LiveThread()
        return _thread
