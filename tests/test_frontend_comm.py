"""The status comm, kernel side: one short comm per checkpoint, registered and removed with the extension."""

from __future__ import annotations

from typing import Any

import comm
import pytest
from IPython.testing import globalipapp

from nbcheckpoint.capture import events
from nbcheckpoint.frontend.comm import TARGET, StatusChannel, status_message
from nbcheckpoint.store import Checkpoint
from nbcheckpoint.store.manifest import Manifest, NotebookInfo, parse


class RecordingComm:
    """Stands in for ipykernel's Comm: remembers what it opened with and whether it closed."""

    opened: list[RecordingComm] = []

    def __init__(self, target_name: str = "", data: Any = None, **_: Any) -> None:
        self.target_name = target_name
        self.data = data
        self.closed = False
        RecordingComm.opened.append(self)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> list[RecordingComm]:
    RecordingComm.opened = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    return RecordingComm.opened


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBCHECKPOINT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "nb.ipynb"))
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "nbcheckpoint")
    yield shell
    shell.run_line_magic("unload_ext", "nbcheckpoint")


def _checkpoint(**body: Any) -> Checkpoint:
    base = Manifest(
        id=12, notebook=NotebookInfo("nb", "nb.ipynb"), created=1000.0, status="running"
    )
    full = {**base.to_dict(), "cell": {"execution_count": 5}, **body}
    return Checkpoint(parse(full, key="nb", ident=full["id"]), True)


def test_status_message_fields() -> None:
    ck = _checkpoint(position={"description": "for epoch at 57/100"})
    assert status_message(ck, now=1180.0) == {
        "id": 12,
        "last": 1000.0,
        "now": 1180.0,
        "status": "running",
        "position": "for epoch at 57/100",
        "cell": 5,
    }
    assert status_message(_checkpoint(status="complete", cell=None), now=1.0)["position"] == ""


def test_each_checkpoint_opens_and_closes_one_comm(comms: list[RecordingComm]) -> None:
    channel = StatusChannel()
    channel.start()
    try:
        events.emit(_checkpoint())
        events.emit(_checkpoint(id=13, position={"description": "for epoch at 58/100"}))
    finally:
        channel.stop()
    events.emit(_checkpoint(id=14))  # after stop: nothing
    assert [c.target_name for c in comms] == [TARGET, TARGET]
    assert [c.data["id"] for c in comms] == [12, 13]
    assert comms[1].data["position"] == "for epoch at 58/100"
    assert all(c.closed for c in comms)
    assert channel.sent == 2


def test_a_failing_comm_never_stops_the_cell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(**_: Any) -> None:
        raise OSError("iopub is gone")

    monkeypatch.setattr(comm, "create_comm", broken)
    channel = StatusChannel()
    channel.on_checkpoint(_checkpoint())
    channel.on_checkpoint(_checkpoint())
    err = capsys.readouterr().err
    assert err.count("could not update the JupyterLab status bar") == 1
    assert "iopub is gone" in err


def test_loading_the_extension_subscribes_and_unloading_unsubscribes(
    ip: Any, comms: list[RecordingComm]
) -> None:
    subscribed = [
        fn for fn in events.listeners() if isinstance(getattr(fn, "__self__", None), StatusChannel)
    ]
    assert len(subscribed) == 1
    ip.run_cell(
        "%%checkpoint --every 0.01 --mode inline\nimport time\nfor i in range(20):\n    time.sleep(0.02)\n"
    )
    assert comms, "a %%checkpoint cell sent no status"
    assert comms[-1].data["status"] == "complete"
    assert any("for i" in c.data["position"] for c in comms[:-1]), [c.data for c in comms]
    ip.run_line_magic("unload_ext", "nbcheckpoint")
    try:
        assert not [
            fn
            for fn in events.listeners()
            if isinstance(getattr(fn, "__self__", None), StatusChannel)
        ]
    finally:
        ip.run_line_magic("load_ext", "nbcheckpoint")  # the fixture unloads it again
