"""The status channel, kernel side: one iopub message per checkpoint, no comm; subscribed and removed with the extension."""

from __future__ import annotations

import os
from typing import Any

import pytest

from nbcheckpoint.capture import events
from nbcheckpoint.frontend import comm as status_comm
from nbcheckpoint.frontend.comm import StatusChannel, status_message
from nbcheckpoint.store import Checkpoint, NotebookRef
from nbcheckpoint.store.manifest import Manifest, NotebookInfo, parse


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stands in for the kernel's iopub channel: what was published, in order."""
    published: list[dict[str, Any]] = []

    def record(content: dict[str, Any]) -> bool:
        published.append(content)
        return True

    monkeypatch.setattr(status_comm, "publish", record)
    return published


def _checkpoint(**body: Any) -> Checkpoint:
    base = Manifest(
        id=12,
        notebook=NotebookInfo("train-0a1b", "/w/train.ipynb"),
        created=1000.0,
        status="running",
    )
    full = {**base.to_dict(), "cell": {"execution_count": 5}, **body}
    return Checkpoint(parse(full, key="train-0a1b", ident=full["id"]), True)


def test_status_message_fields() -> None:
    ck = _checkpoint(position={"description": "for epoch at 57/100"})
    assert status_message(ck, now=1180.0) == {
        "event": "checkpoint",
        "first_line": "",
        "id": 12,
        "last": 1000.0,
        "now": 1180.0,
        "status": "running",
        "position": "for epoch at 57/100",
        "cell": 5,
        "key": "train-0a1b",
    }
    assert status_message(_checkpoint(status="complete", cell=None), now=1.0)["position"] == ""


def test_each_checkpoint_publishes_one_message(sent: list[dict[str, Any]]) -> None:
    channel = StatusChannel()
    channel.start()
    try:
        events.emit(_checkpoint())
        events.emit(_checkpoint(id=13, position={"description": "for epoch at 58/100"}))
    finally:
        channel.stop()
    events.emit(_checkpoint(id=14))  # after stop: nothing
    assert [c["id"] for c in sent] == [12, 13]
    assert sent[1]["position"] == "for epoch at 58/100"
    assert channel.sent == 2


def test_without_a_kernel_nothing_is_sent_and_nothing_is_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Plain IPython (no ipykernel running): no frontend to tell, and no error either.
    channel = StatusChannel()
    channel.on_checkpoint(_checkpoint())
    assert channel.sent == 0
    assert capsys.readouterr().err == ""


def test_a_failing_send_never_stops_the_cell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_: dict[str, Any]) -> bool:
        raise OSError("iopub is gone")

    monkeypatch.setattr(status_comm, "publish", broken)
    channel = StatusChannel()
    channel.on_checkpoint(_checkpoint())
    channel.on_checkpoint(_checkpoint())
    err = capsys.readouterr().err
    assert err.count("could not update the JupyterLab status bar") == 1
    assert "iopub is gone" in err


def test_loading_the_extension_subscribes_and_unloading_unsubscribes(
    ip: Any, sent: list[dict[str, Any]]
) -> None:
    subscribed = [
        fn for fn in events.listeners() if isinstance(getattr(fn, "__self__", None), StatusChannel)
    ]
    assert len(subscribed) == 1
    ip.run_cell(
        "%%checkpoint --every 0.01 --mode inline\nimport time\nfor i in range(20):\n    time.sleep(0.02)\n"
    )
    assert sent, "a %%checkpoint cell sent no status"
    assert sent[-1]["status"] == "complete"
    assert any("for i" in c["position"] for c in sent[:-1]), sent
    # Filed under the key of the notebook the kernel runs (JPY_SESSION_NAME here).
    assert {c["key"] for c in sent} == {NotebookRef.from_path(os.environ["JPY_SESSION_NAME"]).key}
    ip.run_line_magic("unload_ext", "nbcheckpoint")
    try:
        assert not [
            fn
            for fn in events.listeners()
            if isinstance(getattr(fn, "__self__", None), StatusChannel)
        ]
    finally:
        ip.run_line_magic("load_ext", "nbcheckpoint")  # the fixture unloads it again


def test_a_failing_store_is_told_to_the_frontend_once(
    ip: Any, sent: list[dict[str, Any]], tmp_path: Any
) -> None:
    """A store that cannot be written: the warning printed under the cell also goes out as one
    ``problem`` message (a JupyterLab notification), naming the path and the reason."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    ip.run_line_magic("config", f"Checkpoint.store = {str(blocker / 'store')!r}")
    try:
        ip.run_cell(
            "%%checkpoint --every 0.01 --mode inline\nimport time\n"
            "for i in range(20):\n    time.sleep(0.02)\n"
        )
    finally:
        ip.run_line_magic("config", "Checkpoint.store = None")
    problems = [m for m in sent if m["event"] == "problem"]
    assert len(problems) == 1, sent
    assert str(blocker) in problems[0]["text"], problems
    assert "could not save a checkpoint" in problems[0]["text"]
    assert not [m for m in sent if m["event"] == "checkpoint"]


def test_a_save_and_a_restore_are_told_to_the_frontend(ip: Any, sent: list[dict[str, Any]]) -> None:
    """``%checkpoint save`` moves the status bar as a ``%%checkpoint`` cell does; any
    restore (here the magic's) tells JupyterLab to take its restart offer away."""
    ip.run_cell("a = 1")
    ip.run_line_magic("checkpoint", "save a")
    assert [(m["event"], m["id"], m["status"]) for m in sent] == [("checkpoint", 1, "manual")]
    ip.run_line_magic("checkpoint", "restore")
    assert sent[-1]["event"] == "restored" and sent[-1]["id"] == 1
    assert sent[-1]["key"] == sent[0]["key"]


def test_publish_in_a_plain_shell_imports_no_kernel() -> None:
    """No ipykernel imported means no kernel to tell: publishing imports none (80 ms inside a loop)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nbcheckpoint.frontend.comm import publish\n"
        "assert 'ipykernel' not in sys.modules, 'imported by nbcheckpoint itself'\n"
        "print(publish({'event': 'checkpoint'}), 'ipykernel.kernelbase' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "False"]
