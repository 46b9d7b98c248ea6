"""The checkpoint panel's widget state, driven as a frontend would, with comms that record messages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import comm
import ipywidgets
import pytest

import nbcheckpoint
from nbcheckpoint.capture import events
from nbcheckpoint.capture.engine import kernel_identity
from nbcheckpoint.store import Checkpoint, CheckpointStore, NotebookRef
from nbcheckpoint.widgets import CheckpointPanel, Point, history_svg, live
from nbcheckpoint.widgets.rows import change_since

HERE = kernel_identity()  # checkpoints saved with it belong to "this kernel"
THEN = {"pid": 1, "host": "elsewhere", "started": 0.0}  # an earlier kernel


class RecordingComm:
    """Stands in for a kernel comm: remembers what each widget sends to the frontend."""

    sent: list[tuple[str, dict[str, Any]]] = []
    kernel = "a kernel"  # ipywidgets only sends when this is truthy

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = kwargs.get("comm_id") or uuid.uuid4().hex

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        pass

    def send(self, data: dict[str, Any] | None = None, **kwargs: Any) -> None:
        RecordingComm.sent.append((self.comm_id, data or {}))

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def recording_comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    monkeypatch.setattr(comm, "create_comm", lambda **kw: RecordingComm(**kw))
    RecordingComm.sent = []
    yield RecordingComm.sent
    RecordingComm.sent = []


@pytest.fixture(autouse=True)
def _no_leftover_listeners() -> Iterator[None]:
    before = events.listeners()
    yield
    for fn in events.listeners():
        if fn not in before:
            events.unsubscribe(fn)


def settle() -> None:
    """Wait until the live thread has shown what the events handed it."""
    assert live.thread().wait_idle(30.0)


def save(store: CheckpointStore, nb: NotebookRef, ns: dict[str, Any], **kw: Any) -> Checkpoint:
    kw.setdefault("kernel", HERE)
    return store.save(ns, nb, **kw)


_panels: list[CheckpointPanel] = []


def make_panel(store: CheckpointStore, nb: NotebookRef, **kw: Any) -> CheckpointPanel:
    kw.setdefault("namespace", {})
    kw.setdefault("live", False)
    panel = CheckpointPanel(store, nb, **kw)
    _panels.append(panel)
    return panel


@pytest.fixture(autouse=True)
def _close_panels() -> Iterator[None]:
    """Closed widgets leave ipywidgets' registry, so nothing is left to tear down at exit."""
    yield
    while _panels:
        _panels.pop().close()


def shown(widget: ipywidgets.Widget) -> bool:
    return widget.layout.display != "none"


def training_history(
    store: CheckpointStore, nb: NotebookRef, kernel: dict[str, Any] = HERE
) -> None:
    cell = {"source_hash": "0" * 64, "execution_count": 5, "first_line": "for epoch in range(100):"}
    weights = [0.0] * 50
    for epoch in (10, 57):
        weights[epoch % 50] = float(epoch)
        save(
            store,
            nb,
            {"weights": list(weights), "config": {"lr": 0.1}, "epoch": epoch},
            status="running",
            cell=cell,
            position={"description": f"for epoch at {epoch}/100", "resumable": True},
            kernel=kernel,
        )


# ------------------------------------------------------------------ history
def test_rows_show_each_checkpoint_newest_first(store: CheckpointStore, nb: NotebookRef) -> None:
    training_history(store, nb)
    save(store, nb, {"x": 1}, status="manual")
    store.set_status(nb, 2, "interrupted")
    panel = make_panel(store, nb)

    assert panel.ids == [3, 2, 1]
    labels = [label for label, _ in panel.history.options]
    second = labels[1]
    for expected in (
        "#2",
        "just now",
        '"for epoch in rang…" [5]',
        "for epoch at 57/100",
        "interrupted",
    ):
        assert expected in second
    assert "running" in labels[2] and "manual" in labels[0]
    assert " 3 " in second  # three variables
    ck = store.read_checkpoint(nb, 2)
    assert f"{ck.body['stats']['duration'] * 1000:.0f} ms" in second
    # The exact time is on hover.
    tooltip = panel.history.tooltips[1]
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(ck.created)) in tooltip
    assert "for epoch in range(100):" in tooltip
    assert panel.history.value == 3  # the newest is selected


def test_status_shows_checkpoints_of_an_earlier_kernel(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    training_history(store, nb, kernel=THEN)
    panel = make_panel(store, nb)
    assert all("earlier kernel" in label for label, _ in panel.history.options)
    assert "from an earlier kernel (pid 1)" in panel.history.tooltips[0]


def test_header_names_store_notebook_count_size_and_signatures(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    training_history(store, nb)
    panel = make_panel(store, nb)
    header = panel.header.value
    assert store.url in header and nb.path in header
    assert "2 checkpoints" in header and "on disk" in header
    assert "signatures verify" in header


def test_header_reports_checkpoints_that_do_not_verify(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    save(store, nb, {"x": 1})
    save(store, nb, {"x": 2})
    path = f"{local_store_url}/notebooks/{nb.key}/manifests/00000001.ckpt"
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data.replace(b'"manual"', b'"auto"  '))  # same length, not the signed bytes
    panel = make_panel(CheckpointStore(local_store_url), nb)
    assert "1 of 2 do not verify" in panel.header.value
    assert any("UNVERIFIED" in label for label, _ in panel.history.options)


def test_empty_store_says_how_to_start(store: CheckpointStore, nb: NotebookRef) -> None:
    panel = make_panel(store, nb)
    assert panel.ids == []
    assert "No checkpoints yet" in panel.empty.value and shown(panel.empty)
    assert not shown(panel.history)
    assert panel.restore_all_button.disabled and panel.delete_button.disabled


# ---------------------------------------------------------------- selection
def test_selecting_a_row_lists_its_variables_and_what_changed(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    import socket

    save(store, nb, {"a": [1, 2], "b": "same", "json": __import__("json")})
    with socket.socket() as sock:
        save(
            store,
            nb,
            {"a": [1, 2, 3], "b": "same", "c": 1.5, "sock": sock, "api_key": "sk-123"},
        )
    panel = make_panel(store, nb)
    panel.select(2)
    variables = dict((name, label) for label, name in panel.variables.options)
    assert set(variables) == {"a", "b", "c"}
    assert "list" in variables["a"] and "changed" in variables["a"]
    assert "unchanged" in variables["b"]
    assert variables["c"].rstrip().endswith("new")
    details = panel.details.value
    assert "skipped: <code>sock</code> (socket.socket)" in details
    assert "withheld: <code>api_key</code>" in details

    panel.select(1)
    variables = dict((name, label) for label, name in panel.variables.options)
    assert "first checkpoint" in variables["a"]
    assert "module json" in variables["json"]


def test_change_is_measured_by_group_hashes(store: CheckpointStore, nb: NotebookRef) -> None:
    first = save(store, nb, {"big": list(range(1000)), "small": 1})
    second = save(store, nb, {"big": list(range(1000)), "small": 2})
    assert change_since(second, first, "big") == "unchanged"
    assert change_since(second, first, "small") == "changed"
    assert change_since(second, None, "big") == "first checkpoint"


# ------------------------------------------------------------------ actions
def test_restore_all_and_restore_selected(store: CheckpointStore, nb: NotebookRef) -> None:
    save(store, nb, {"a": 1, "b": 2, "c": 3})
    ns: dict[str, Any] = {}
    panel = make_panel(store, nb, namespace=ns)

    assert panel.restore_selected_button.disabled  # nothing selected yet
    panel.variables.value = ("a", "c")
    assert not panel.restore_selected_button.disabled
    panel.restore_selected_button.click()
    assert ns == {"a": 1, "c": 3}
    assert "Restored checkpoint #1" in panel.message.value

    del ns["a"], ns["c"]
    panel.restore_all_button.click()
    assert ns == {"a": 1, "b": 2, "c": 3}


def test_restore_uses_the_hosts_apply_and_describe(store: CheckpointStore, nb: NotebookRef) -> None:
    save(store, nb, {"a": 1})
    applied = []
    panel = make_panel(
        store, nb, apply=applied.append, describe=lambda r: f"Back: #{r.checkpoint.id}\n  note"
    )
    panel.restore_all_button.click()
    assert [r.values for r in applied] == [{"a": 1}]
    assert "Back: #1" in panel.message.value and "<li>note</li>" in panel.message.value


def test_restore_over_existing_variables_asks_first(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    save(store, nb, {"a": 1, "b": 2})
    ns = {"a": "mine"}
    panel = make_panel(store, nb, namespace=ns)

    panel.restore_all_button.click()
    assert shown(panel.confirm_box)
    assert "replaces 1 variable you have now: <code>a</code>" in panel.confirm_text.value
    assert ns == {"a": "mine"}

    panel.confirm_no.click()
    assert not shown(panel.confirm_box)
    assert ns == {"a": "mine"} and "Cancelled" in panel.message.value

    panel.restore_all_button.click()
    panel.confirm_yes.click()
    assert ns == {"a": 1, "b": 2}
    assert not shown(panel.confirm_box)


def test_delete_asks_first_then_removes_the_checkpoint(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    save(store, nb, {"a": 1})
    save(store, nb, {"a": 2})
    panel = make_panel(store, nb)
    panel.select(1)

    assert not shown(panel.confirm_box)
    panel.delete_button.click()
    assert shown(panel.confirm_box) and "Delete checkpoint #1" in panel.confirm_text.value
    assert panel.confirm_yes.description == "Delete #1"
    assert [c.id for c in store.list(nb)] == [1, 2]  # not yet

    panel.confirm_no.click()
    assert [c.id for c in store.list(nb)] == [1, 2]

    panel.delete_button.click()
    panel.confirm_yes.click()
    assert [c.id for c in store.list(nb)] == [2]
    assert panel.ids == [2] and panel.history.value == 2
    assert "Deleted checkpoint #1" in panel.message.value


def test_selecting_another_row_cancels_a_pending_confirmation(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    save(store, nb, {"a": 1})
    save(store, nb, {"a": 2})
    panel = make_panel(store, nb)
    panel.delete_button.click()
    panel.select(1)
    assert not shown(panel.confirm_box)
    panel.confirm_yes.click()  # a stale click does nothing
    assert len(store.list(nb)) == 2


def test_pin_and_unpin_and_retention_spares_pinned(store: CheckpointStore, nb: NotebookRef) -> None:
    for i in range(3):
        save(store, nb, {"a": i})
    panel = make_panel(store, nb)
    panel.select(1)
    assert panel.pin_button.description == "Pin"
    panel.pin_button.click()
    assert store.read_checkpoint(nb, 1).pinned
    assert panel.pin_button.description == "Unpin"
    assert "#1 pin" in panel.history.options[-1][0]
    assert "Pinned #1" in panel.message.value

    store.retain(nb, keep=1)
    panel.refresh_button.click()
    assert panel.ids == [3, 1]

    panel.select(1)
    panel.pin_button.click()
    assert not store.read_checkpoint(nb, 1).pinned
    assert panel.pin_button.description == "Pin"


def test_refresh_shows_checkpoints_saved_elsewhere(store: CheckpointStore, nb: NotebookRef) -> None:
    panel = make_panel(store, nb)
    save(store, nb, {"a": 1})
    assert panel.ids == []
    panel.refresh_button.click()
    assert panel.ids == [1]
    assert "Refreshed: 1 checkpoint." in panel.message.value


def test_plain_text_views_of_the_panel(store: CheckpointStore, nb: NotebookRef) -> None:
    save(store, nb, {"a": 1})
    panel = make_panel(store, nb, namespace={"a": 0})
    assert panel.question is None
    panel.restore_all_button.click()
    assert panel.question == "Restore #1? It replaces 1 variable you have now: a."
    panel.confirm_yes.click()
    assert panel.question is None
    assert panel.last_message.startswith("Restored checkpoint #1")
    assert repr(panel).startswith("<CheckpointPanel: 1 checkpoint of ")


# ------------------------------------------------------------------- errors
def test_errors_are_one_sentence_never_a_traceback(
    store: CheckpointStore, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(store, nb, {"a": 1})
    panel = make_panel(store, nb)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("the disk is gone")

    monkeypatch.setattr(store, "delete", broken)
    panel.delete_button.click()
    panel.confirm_yes.click()
    assert "Could not delete the checkpoint: OSError: the disk is gone" in panel.message.value
    assert "nbc-error" in panel.message.value
    assert "Traceback" not in panel.message.value and panel.out.outputs == ()


def test_an_untrusted_checkpoint_is_refused_in_a_sentence(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    save(CheckpointStore(local_store_url), nb, {"a": 1})
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(tmp_path / "other-user" / "signing.key"))
    ns: dict[str, Any] = {}
    panel = make_panel(CheckpointStore(local_store_url), nb, namespace=ns)
    assert "do not verify" in panel.header.value
    panel.restore_all_button.click()
    assert "is not trusted" in panel.message.value and "nbc-error" in panel.message.value
    assert ns == {}


def test_a_checkpoint_deleted_behind_the_panels_back(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    save(store, nb, {"a": 1})
    panel = make_panel(store, nb)
    store.delete(nb, 1)
    panel.restore_all_button.click()
    assert "No checkpoint #1" in panel.message.value
    panel.pin_button.click()
    assert "No checkpoint #1" in panel.message.value


# ------------------------------------------------------------------- banner
def test_banner_offers_the_earlier_kernels_checkpoint(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    training_history(store, nb, kernel=THEN)
    ns: dict[str, Any] = {}
    panel = make_panel(store, nb, namespace=ns, clock=lambda: time.time() + 180)
    assert shown(panel.banner)
    assert panel.banner_text.value == (
        "<b>The kernel restarted.</b> Restore #2 (&quot;for epoch in range(100):&quot; [5], "
        "3 min ago, for epoch at 57/100)?"
    )
    assert panel.banner_restore.description == "Restore #2"
    assert panel.banner_restore.tooltip

    panel.banner_restore.click()
    assert ns["epoch"] == 57 and ns["config"] == {"lr": 0.1}
    assert not shown(panel.banner)
    assert "Restored checkpoint #2" in panel.message.value


def test_a_panel_opened_after_a_restore_offers_it_no_more(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    training_history(store, nb, kernel=THEN)
    first = make_panel(store, nb, namespace={})
    assert shown(make_panel(store, nb).banner)  # not answered yet: every panel offers it
    first.banner_restore.click()
    assert not shown(make_panel(store, nb).banner)  # answered in this kernel


def test_no_banner_when_the_newest_checkpoint_is_this_kernels(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    training_history(store, nb, kernel=THEN)
    save(store, nb, {"x": 1}, kernel=HERE)
    assert not shown(make_panel(store, nb).banner)


def test_banner_can_be_dismissed(store: CheckpointStore, nb: NotebookRef) -> None:
    save(store, nb, {"x": 1}, kernel=THEN)
    panel = make_panel(store, nb)
    panel.banner_dismiss.click()
    assert not shown(panel.banner)
    panel.refresh_button.click()
    assert not shown(panel.banner)


# --------------------------------------------------------------------- live
def test_new_checkpoints_appear_as_they_land(
    store: CheckpointStore, nb: NotebookRef, recording_comms: list[tuple[str, dict[str, Any]]]
) -> None:
    save(store, nb, {"a": 1})
    panel = make_panel(store, nb, live=True)
    assert panel.ids == [1]
    recording_comms.clear()

    ck = save(store, nb, {"a": 2}, status="running", position={"description": "for i at 2/9"})
    events.emit(ck)
    settle()

    assert panel.ids == [2, 1]
    assert panel.history.value == 2  # following the newest
    assert "for i at 2/9" in panel.history.options[0][0]
    assert "2 checkpoints" in panel.header.value
    # The change went out to the frontend as comm messages right away.
    updates = [
        data
        for comm_id, data in recording_comms
        if comm_id == panel.history.model_id and data.get("method") == "update"
    ]
    assert any("_options_labels" in u["state"] and "for i at 2/9" in str(u) for u in updates)


def test_live_update_keeps_an_older_selection(store: CheckpointStore, nb: NotebookRef) -> None:
    save(store, nb, {"a": 1})
    save(store, nb, {"a": 2})
    panel = make_panel(store, nb, live=True)
    panel.select(1)
    events.emit(save(store, nb, {"a": 3}))
    settle()
    assert panel.ids == [3, 2, 1] and panel.history.value == 1


def test_live_update_ignores_other_notebooks_and_stops_on_close(
    store: CheckpointStore, nb: NotebookRef, tmp_path: Any
) -> None:
    panel = make_panel(store, nb, live=True)
    other = NotebookRef.from_path(str(tmp_path / "other.ipynb"))
    events.emit(save(store, other, {"a": 1}))
    settle()
    assert panel.ids == []

    panel.close()
    assert panel._on_checkpoint not in events.listeners()
    events.emit(save(store, nb, {"a": 1}))
    settle()
    assert panel.ids == []


def test_close_releases_every_widget(store: CheckpointStore, nb: NotebookRef) -> None:
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    panel = CheckpointPanel(store, nb, live=True)
    assert len(set(_instances) - before) > 20
    panel.close()
    assert set(_instances) - before == set()
    assert panel._on_checkpoint not in events.listeners()


def test_a_failing_listener_does_not_stop_the_others(
    store: CheckpointStore, nb: NotebookRef, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[int] = []

    def broken(ck: Checkpoint) -> None:
        raise ValueError("oops")

    events.subscribe(broken)
    events.subscribe(lambda ck: seen.append(ck.id))
    events.emit(save(store, nb, {"a": 1}))
    assert seen == [1]
    assert "listener" in capsys.readouterr().err


# -------------------------------------------------------------------- chart
def test_chart_draws_size_and_duration(store: CheckpointStore, nb: NotebookRef) -> None:
    training_history(store, nb)
    panel = make_panel(store, nb)
    svg = panel.chart.value
    assert svg.startswith("<svg") and "state size" in svg and "snapshot time" in svg
    assert svg.count("<circle") == 4 and "<script" not in svg
    assert history_svg([Point(1, 10, 0.5)]).count("<polyline") == 0  # one dot, no line


# ------------------------------------------------------------------- wiring
@pytest.fixture
def shell(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "wired.ipynb"))
    ip = InteractiveShell.instance()
    try:
        yield ip
    finally:
        ip.run_line_magic("unload_ext", "nbcheckpoint")
        InteractiveShell.clear_instance()


def test_magic_and_function_open_the_panel(
    shell: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import IPython.display

    shown_objects: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown_objects.append(obj))

    panel = nbcheckpoint.panel()  # loads the extension
    assert isinstance(panel, CheckpointPanel)
    assert panel.notebook.path == str(tmp_path / "wired.ipynb")

    shell.user_ns["x"] = 41
    shell.run_line_magic("checkpoint", "save x")
    shell.run_line_magic("checkpoint", "panel")
    (opened,) = shown_objects
    assert isinstance(opened, CheckpointPanel) and opened.ids == [1]

    shell.user_ns.pop("x")
    opened.restore_all_button.click()
    assert shell.user_ns["x"] == 41  # through the magics' apply
    panel.close()
    opened.close()


# ------------------------------------------------------------------ compare
def test_compare_the_selected_checkpoint_with_another_and_with_now(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    import numpy as np

    ns: dict[str, Any] = {"w": np.zeros((2, 3)), "step": 1, "old": "x"}
    save(store, nb, ns)
    ns.update(w=np.zeros((4, 3)), step=2, new=[1])
    del ns["old"]
    save(store, nb, ns)
    panel = make_panel(store, nb, namespace=ns)
    view = panel.diff
    assert [value for _, value in view.against.options] == ["now", 2, 1]

    panel.select(2)
    view.against.value = 1
    view.compare_button.click()
    assert view.diff is not None
    assert view.diff.summary() == "#1 -> #2: 2 changed, 1 added, 1 removed, 0 same"
    html = view.result.value
    assert 'data-name="w" data-change="changed"' in html
    assert "shape (2, 3) -&gt; (4, 3)" in html
    assert 'data-name="old" data-change="removed"' in html

    ns["w"][0, 0] = 5.0  # same shape, other content
    view.against.value = "now"
    view.compare_button.click()
    assert view.diff.summary() == "#2 -> now: 1 changed, 0 added, 0 removed, 2 same"
    assert 'data-name="w" data-change="changed"' in view.result.value
    assert panel.ids == [2, 1]  # "now" wrote nothing

    save(store, nb, ns)
    panel.reload()
    assert [value for _, value in view.against.options] == ["now", 3, 2, 1]

    # Names the shell keeps for itself are not the user's: not "added" now.
    ns["open"] = open  # ipykernel puts its own `open` in the user namespace, hidden
    hiding = make_panel(store, nb, namespace=ns, hidden=lambda: {"open"})
    hiding.select(3)
    hiding.diff.against.value = "now"
    hiding.diff.compare_button.click()
    assert hiding.diff.diff is not None
    assert "open" not in {r.name for r in hiding.diff.diff.rows}


def test_compare_says_why_it_cannot(store: CheckpointStore, nb: NotebookRef) -> None:
    save(store, nb, {"x": 1})
    save(store, nb, {"x": 2})
    panel = make_panel(store, nb)
    panel.select(2)
    store.delete(nb, 1)
    panel.diff.against.value = 1
    panel.diff.compare_button.click()
    assert "Could not compare: No checkpoint #1" in panel.diff.result.value
    assert panel.diff.diff is None


# ------------------------------------------------------- words and measures
def test_the_changed_column_sums_what_the_variables_say_changed(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    from nbcheckpoint.format import human_bytes
    from nbcheckpoint.widgets.rows import HISTORY_COLUMNS, changed_bytes

    big = list(range(2000))
    save(store, nb, {"big": big, "small": 1})  # 1
    save(store, nb, {"big": big, "small": 1})  # 2: nothing changed
    save(store, nb, {"big": big, "small": 2})  # 3: small changed
    fourth = save(store, nb, {"big": big, "small": 1})  # 4: small back to #2's value
    panel = make_panel(store, nb)
    assert [c.title for c in HISTORY_COLUMNS].count("changed") == 1
    assert "new" not in [c.title for c in HISTORY_COLUMNS]

    def changed_names(ident: int) -> set[str]:
        panel.select(ident)
        return {
            name for label, name in panel.variables.options if label.rstrip().endswith(" changed")
        }

    labels = dict((ident, label) for label, ident in panel.history.options)
    assert changed_names(2) == set() and "  0 B" in labels[2]
    assert changed_names(3) == {"small"}
    # #4 writes nothing new to the store (#2 has its data), yet "small" changed since #3:
    # the column says so too, by the same measure.
    assert fourth.new_bytes == 0
    assert changed_names(4) == {"small"}
    four_changed = changed_bytes(fourth, panel.previous_of(fourth))
    assert four_changed > 0 and human_bytes(four_changed) in labels[4]
    assert changed_bytes(fourth, panel.previous_of(fourth)) < fourth.total_bytes


def test_one_variable_is_one_variable(store: CheckpointStore, nb: NotebookRef) -> None:
    from nbcheckpoint.widgets.rows import history_tooltip

    ck = save(store, nb, {"a": 1})
    panel = make_panel(store, nb, namespace={})
    assert "1 variable," in history_tooltip(ck, lambda c: False)
    panel.restore_all_button.click()
    assert "1 variable (a)" in panel.last_message
    assert not any("1 variables" in t for t in panel.history.tooltips)


def test_a_cell_is_named_by_its_first_line_and_id(store: CheckpointStore, nb: NotebookRef) -> None:
    cell_id = "0f3a9c2e-41d7-4b1e-9c3a-2b7d8e1f0a6c"
    for count in (3, 9):  # the same cell, run twice
        save(
            store,
            nb,
            {"a": count},
            cell={
                "source_hash": "1" * 64,
                "execution_count": count,
                "first_line": "train()",
                "cell_id": cell_id,
            },
        )
    save(
        store,
        nb,
        {"a": 0},
        cell={"source_hash": "2" * 64, "execution_count": 11, "first_line": "", "cell_id": cell_id},
    )
    panel = make_panel(store, nb)
    labels = [label for label, _ in panel.history.options]
    assert '"train()" [9]' in labels[1] and '"train()" [3]' in labels[2]
    assert "cell 0f3a9c2e [11]" in labels[0]
    assert f"(id {cell_id})" in panel.history.tooltips[1]
