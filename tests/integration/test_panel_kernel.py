"""The checkpoint panel in real kernels: live rows while a cell runs, and Restore after a kill."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint.store import CheckpointStore, NotebookRef

from .kernel import Kernel, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# The safe point sits at the top of each iteration: there, total == sum(range(len(squares))).
LOOP_CELL = """\
%%checkpoint --every 0.3
import time
total = 0
squares = []
for i in range(200):
    total += i
    squares.append(i * i)
    time.sleep(0.05)
"""


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "train.ipynb"
    path.write_text("{}")
    return path


@pytest.fixture
def kernels(notebook: Path) -> Any:
    started: list[Kernel] = []

    def start() -> Kernel:
        # The test process's per-test signing key (tests/conftest.py) is in os.environ.
        kernel = Kernel(str(notebook), str(notebook.parent))
        started.append(kernel)
        return kernel.start()

    yield start
    for kernel in started:
        kernel.shutdown()


def checkpoints(notebook: Path) -> list[Any]:
    store = CheckpointStore(str(notebook.parent / ".nbcheckpoint"))
    return store.list(NotebookRef.from_path(str(notebook)))


def widget_updates_during(
    kernel: Kernel, msg_id: str, until: Any, timeout: float = 60
) -> list[dict]:
    """Comm updates the kernel sent on behalf of execute request ``msg_id`` until ``until()`` holds."""
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(found):
        try:
            msg = kernel.kc.get_iopub_msg(timeout=0.5)
        except Exception:
            continue
        if msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] != "comm_msg":
            continue
        data = msg["content"]["data"]
        if data.get("method") == "update":
            found.append(data["state"])
    return found


def test_live_rows_then_restore_after_a_kill(kernels: Any, notebook: Path) -> None:
    first = kernels()
    first.run("import nbcheckpoint\npanel = nbcheckpoint.panel()\npanel").check()
    assert first.value("panel.ids") == []

    # While the cell runs, the panel's rows change, and the frontend hears about it at
    # once: comm updates arrive under the running cell's request, before it ends.
    msg_id = first.submit(LOOP_CELL)

    def rows_seen(updates: list[dict]) -> bool:
        labels = [u["_options_labels"] for u in updates if "_options_labels" in u]
        return bool(labels) and len(labels[-1]) >= 2

    updates = widget_updates_during(first, msg_id, rows_seen)
    assert rows_seen(updates), f"no live row updates; got {updates[-3:]}"
    assert "running" in updates[-1]["_options_labels"][0] or any(
        "running" in label for u in updates for label in u.get("_options_labels", [])
    )
    wait_for(lambda: len(checkpoints(notebook)) >= 3, 30, "three checkpoints")
    first.kill()

    saved = checkpoints(notebook)
    latest = saved[-1]
    assert latest.status == "running"

    second = kernels()
    second.run("import nbcheckpoint\npanel = nbcheckpoint.panel()").check()
    assert second.value("panel.ids")[0] == latest.id
    assert second.value("panel.banner.layout.display") is None  # shown
    banner = second.value("panel.banner_text.value")
    assert f"The kernel restarted.</b> Restore #{latest.id} (" in banner
    assert "/200)?" in banner  # the loop position
    assert second.value("'total' in globals()") is False

    # A frontend click runs the same handlers as click().
    second.run("panel.banner_restore.click()").check()
    message = second.value("panel.message.value")
    assert f"Restored checkpoint #{latest.id}" in message, message
    assert second.value("total == sum(range(len(squares)))") is True
    assert second.value("len(squares)") >= 1
    assert second.value("panel.banner.layout.display") == "none"

    # Restore selected: only the chosen variable comes back, from an older checkpoint.
    older = saved[0]
    second.run("del total, squares").check()
    second.run(
        f"panel.select({older.id})\n"
        "panel.variables.value = ('squares',)\n"
        "panel.restore_selected_button.click()"
    ).check()
    assert second.value("'total' in globals()") is False
    assert second.value("len(squares)") == len(
        CheckpointStore(str(notebook.parent / ".nbcheckpoint"))
        .load(NotebookRef.from_path(str(notebook)), older.id, ["squares"])
        .values["squares"]
    )


def test_panel_magic_displays_a_widget(kernels: Any, notebook: Path) -> None:
    kernel = kernels()
    kernel.run("x = 1\n%checkpoint save x").check()
    reply = kernel.run("%checkpoint panel").check()
    views = [d for d in reply.displays if "application/vnd.jupyter.widget-view+json" in d]
    assert len(views) == 1, reply.displays
    reply = kernel.run("%checkpoint panel --bogus")
    assert reply.status == "error" and (reply.error or {}).get("ename") == "UsageError"
