"""Live panels cost the running loop nothing: events queue, a background thread shows, listeners are weak."""

from __future__ import annotations

import gc
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from ipywidgets.widgets.widget import _instances
from test_panel import HERE, recording_comms  # noqa: F401  (recording_comms: a fixture)

from nbcheckpoint.capture import events
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.widgets import CheckpointPanel, live

READS = ("list", "read_checkpoint", "disk_usage", "notebooks", "latest_id", "load")


class CountingStore:
    """A store that counts every read the panel makes of it."""

    def __init__(self, store: CheckpointStore) -> None:
        self._store = store
        self.reads: Counter[str] = Counter()
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in READS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.reads[name] += 1
            self.threads.add(threading.current_thread().name)
            return attr(*args, **kwargs)

        return counted


@pytest.fixture
def panels() -> Iterator[list[CheckpointPanel]]:
    made: list[CheckpointPanel] = []
    yield made
    for panel in made:
        panel.close()


def settle() -> None:
    assert live.thread().wait_idle(30.0)


def save(store: CheckpointStore, nb: NotebookRef, ns: dict[str, Any], **kw: Any) -> Any:
    kw.setdefault("kernel", HERE)
    return store.save(ns, nb, **kw)


def test_an_event_appends_its_checkpoint_without_reading_the_store(
    store: CheckpointStore, nb: NotebookRef, panels: list[CheckpointPanel]
) -> None:
    save(store, nb, {"a": 1})
    counting = CountingStore(store)
    panel = CheckpointPanel(counting, nb, namespace={}, live=True)  # type: ignore[arg-type]
    panels.append(panel)
    settle()
    counting.reads.clear()

    for i in range(2, 6):
        events.emit(save(store, nb, {"a": i}))
    settle()

    assert panel.ids == [5, 4, 3, 2, 1]
    assert panel.history.value == 5
    assert "5 checkpoints" in panel.header.value
    assert counting.reads == Counter()  # no list, no size walk: the event carried it all


def test_the_event_returns_before_the_panel_is_drawn(
    store: CheckpointStore, nb: NotebookRef, panels: list[CheckpointPanel]
) -> None:
    panel = CheckpointPanel(store, nb, namespace={}, live=True)
    panels.append(panel)
    drawn_on: list[str] = []
    render = panel._render

    def spy(*args: Any, **kwargs: Any) -> None:
        drawn_on.append(threading.current_thread().name)
        render(*args, **kwargs)

    panel._render = spy  # type: ignore[method-assign]
    with panel._lock:  # the panel is busy (a click being handled, say)
        events.emit(save(store, nb, {"a": 1}))  # ... and the loop does not wait for it
        assert panel.ids == []
    settle()
    assert panel.ids == [1]
    assert drawn_on and threading.main_thread().name not in drawn_on


def test_a_panel_that_is_garbage_collected_stops_listening(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    panel = CheckpointPanel(store, nb, namespace={}, live=True)
    assert panel._on_checkpoint in events.listeners()
    ref = weakref.ref(panel)
    # What the frontend holding the last view and ipywidgets' registry letting go leaves.
    owned = list(panel._owned())
    for widget in owned:
        _instances.pop(widget.model_id, None)
    _instances.pop(panel.model_id, None)
    del panel, owned
    gc.collect()
    assert ref() is None
    assert not [
        fn
        for fn in events.listeners()
        if isinstance(getattr(fn, "__self__", None), CheckpointPanel)
    ]
    events.emit(save(store, nb, {"a": 1}))  # nobody to call, nothing fails
    settle()


def test_a_closed_panel_stops_listening(store: CheckpointStore, nb: NotebookRef) -> None:
    panel = CheckpointPanel(store, nb, namespace={}, live=True)
    panel.close()
    assert panel._on_checkpoint not in events.listeners()


def test_cleared_output_unsubscribes_and_showing_again_catches_up(
    store: CheckpointStore, nb: NotebookRef, panels: list[CheckpointPanel]
) -> None:
    panel = CheckpointPanel(store, nb, namespace={}, live=True)
    panels.append(panel)
    assert panel._view_count == 0  # the frontend is asked to count views
    panel.set_state({"_view_count": 1})  # shown
    assert panel._on_checkpoint in events.listeners()
    panel.set_state({"_view_count": 0})  # output cleared
    assert panel._on_checkpoint not in events.listeners()

    save(store, nb, {"a": 1})  # missed while hidden
    panel.set_state({"_view_count": 1})  # the notebook shows it again
    assert panel._on_checkpoint in events.listeners()
    settle()
    assert panel.ids == [1]


def test_relative_times_tick_on_the_live_thread(
    store: CheckpointStore, nb: NotebookRef, panels: list[CheckpointPanel]
) -> None:
    ck = save(store, nb, {"a": 1})
    now = [ck.created + 5]
    panel = CheckpointPanel(store, nb, namespace={}, live=True, clock=lambda: now[0])
    panels.append(panel)
    assert "5 s ago" in panel.history.options[0][0]
    now[0] += 180
    ticker = live.LiveThread(tick=0.05)
    ticker.watch(panel)
    try:
        for _ in range(200):
            if "3 min ago" in panel.history.options[0][0]:
                break
            threading.Event().wait(0.05)
    finally:
        ticker.stop()
    assert "3 min ago" in panel.history.options[0][0]


def test_a_failing_panel_update_does_not_stop_the_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Broken:
        def catch_up(self) -> None:
            raise ValueError("oops")

        def tick(self) -> None:
            pass

    class Fine(Broken):
        runs = 0

        def catch_up(self) -> None:
            self.runs += 1

    thread, broken, fine = live.LiveThread(), Broken(), Fine()
    try:
        thread.request(broken)
        thread.request(fine)
        assert thread.wait_idle(30.0)
    finally:
        thread.stop()
    assert fine.runs == 1
    assert "live panel update failed" in capsys.readouterr().err


def test_plain_functions_stay_subscribed_and_bound_methods_are_weak() -> None:
    seen: list[int] = []

    def listener(ck: Any) -> None:
        seen.append(ck)

    class Holder:
        def on(self, ck: Any) -> None:
            seen.append(ck)

    holder = Holder()
    events.subscribe(listener)
    events.subscribe(holder.on)
    try:
        assert holder.on in events.listeners() and listener in events.listeners()
        del holder
        gc.collect()
        assert events.listeners().count(listener) == 1
        assert not [fn for fn in events.listeners() if getattr(fn, "__name__", "") == "on"]
    finally:
        events.unsubscribe(listener)


def test_a_restore_made_elsewhere_takes_the_restart_banner_away(
    store: CheckpointStore, nb: NotebookRef, panels: list[CheckpointPanel]
) -> None:
    earlier = {"pid": 1, "host": "elsewhere", "started": 0.0}
    ck = save(store, nb, {"a": 1}, kernel=earlier)
    panel = CheckpointPanel(store, nb, namespace={}, live=True)
    panels.append(panel)
    assert panel.banner.layout.display != "none"
    events.emit(ck, events.RESTORED)  # as %checkpoint restore or JupyterLab's Restore does
    settle()
    assert panel.banner.layout.display == "none"
