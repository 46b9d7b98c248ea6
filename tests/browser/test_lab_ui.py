"""A consistent, current UI in JupyterLab (issue #13, item 5): the status bar follows
``%checkpoint save``, the palette's Restore asks first, and a restore made anywhere takes
the restart offer (the notification and the panel's banner) away.

Real JupyterLab (and Notebook 7), a real kernel and headless Chromium (``conftest.py``,
``servers.py``), in its own JupyterLab workspace.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from pages import (
    cell,
    output_text,
    run_cell,
    wait_executed,
    wait_until,
    workspace_url,
    write_notebook,
)
from test_panel_notebook7 import nb7_server, wait_kernel_ready  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOTEBOOK = "ui.ipynb"
CELLS = [
    "%load_ext nbcheckpoint\nimport os\nprint('PID', os.getpid())\nx = 41",  # 0
    "%checkpoint save x",  # 1
    "x = 0",  # 2
    "print('X', x)",  # 3
    "%load_ext nbcheckpoint\n%checkpoint restore",  # 4: in the new kernel, not the offer
]
SIDEBAR = "#nbcheckpoint-sidebar"
STATUS = "#jp-main-statusbar .nbc-status"
OFFER = "Bring its variables back from state checkpoint"


def run(page: Any, index: int) -> str:
    run_cell(page, index)
    wait_executed(page, index)
    return output_text(page, index)


def palette_restore(page: Any) -> Any:
    """Run "Restore the Latest State Checkpoint" from the command palette; its dialog."""
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Restore the Latest State Checkpoint")
    page.keyboard.press("Enter")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    return dialog


def test_status_bar_follows_a_save_palette_asks_and_a_restore_ends_the_offer(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    write_notebook(lab_server.root / NOTEBOOK, CELLS)
    page.goto(workspace_url(lab_server, "ui", NOTEBOOK))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)

    pid = int(re.search(r"PID (\d+)", run(page, 0)).group(1))
    status = page.locator(STATUS)
    assert status.count() == 0 or not status.is_visible()

    # (c) A manual save moves the status bar, as a %%checkpoint cell's checkpoints do.
    assert "Saved checkpoint #1: 1 variable," in run(page, 1)
    wait_until(
        page,
        lambda: status.is_visible() and status.inner_text().startswith("State checkpoint #1"),
        30,
        "the status bar to show the saved checkpoint",
    )

    # (d) The palette's Restore asks before replacing variables; Cancel changes nothing.
    run(page, 2)
    dialog = palette_restore(page)
    assert "Restore the latest state checkpoint?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")
    assert "X 0" in run(page, 3)
    dialog = palette_restore(page)
    dialog.get_by_role("button", name="Restore").click()
    page.locator(".Toastify__toast").filter(has_text="Restored checkpoint #1").first.wait_for(
        timeout=60_000
    )
    assert "X 41" in run(page, 3)

    # (a) After a kill: the offer and the panel's banner both show...
    page.locator(".jp-NotebookPanel:visible .nbc-toolbar-button").first.click()
    sidebar = page.locator(SIDEBAR)
    sidebar.wait_for()
    os.kill(pid, signal.SIGKILL)
    restarting = page.locator(".jp-Dialog")
    restarting.wait_for(timeout=30_000)
    restarting.locator(".jp-Dialog-button.jp-mod-accept").click()
    restarting.wait_for(state="detached")
    offer = page.locator(".Toastify__toast").filter(has_text=OFFER)
    offer.first.wait_for(timeout=60_000)
    banner = sidebar.locator(".nbc-panel .nbc-banner")
    wait_until(page, lambda: banner.count() and banner.first.is_visible(), 60, "the panel's banner")
    page.screenshot(path=str(artifacts / "lab-ui-offer.png"))

    # ... and a restore made elsewhere (here the magic, in a cell) takes both away.
    out = run(page, 4)
    assert "Restored checkpoint #1" in out, out
    wait_until(page, lambda: offer.count() == 0, 30, "the offer to go away")
    wait_until(page, lambda: not banner.first.is_visible(), 30, "the panel's banner to go away")
    page.screenshot(path=str(artifacts / "lab-ui-restored.png"))
    assert "X 41" in run(page, 3)
    assert "*" not in cell(page, 3).locator(".jp-InputPrompt").inner_text()


def test_notebook7_a_restore_by_the_magic_ends_the_banner_and_the_offer(
    nb7_server: Any,  # noqa: F811  (the fixture imported above)
    page: Any,
    artifacts: Path,
) -> None:
    """The same in Notebook 7: the palette's Restore asks; after a kill the sidebar panel's
    banner and the restart notification show; ``%checkpoint restore`` takes both away."""
    write_notebook(nb7_server.root / NOTEBOOK, CELLS)
    page.goto(nb7_server.notebook_url(NOTEBOOK))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_ready(page, nb7_server)
    pid = int(re.search(r"PID (\d+)", run(page, 0)).group(1))
    assert "Saved checkpoint #1: 1 variable," in run(page, 1)
    # The palette's Restore asks first here too; Cancel changes nothing.
    run(page, 2)
    dialog = palette_restore(page)
    assert "Restore the latest state checkpoint?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")
    assert "X 0" in run(page, 3)

    page.locator(".nbc-toolbar-button").first.click()
    sidebar = page.locator(SIDEBAR)
    sidebar.wait_for()
    os.kill(pid, signal.SIGKILL)
    restarting = page.locator(".jp-Dialog")
    restarting.wait_for(timeout=30_000)
    restarting.locator(".jp-Dialog-button.jp-mod-accept").click()
    restarting.wait_for(state="detached")
    offer = page.locator(".Toastify__toast").filter(has_text=OFFER)
    offer.first.wait_for(timeout=60_000)
    banner = sidebar.locator(".nbc-panel .nbc-banner")
    wait_until(page, lambda: banner.count() and banner.first.is_visible(), 60, "the panel's banner")

    out = run(page, 4)
    assert "Restored checkpoint #1" in out, out
    wait_until(page, lambda: offer.count() == 0, 30, "the offer to go away")
    wait_until(page, lambda: not banner.first.is_visible(), 30, "the panel's banner to go away")
    page.screenshot(path=str(artifacts / "notebook7-ui-restored.png"))
    assert "X 41" in run(page, 3)


COUNT_PANELS = (
    "from nbcheckpoint.capture import events\n"
    "print('PANELS', sum(type(getattr(f, '__self__', None)).__name__ == 'CheckpointPanel'"
    " for f in events.listeners()))"
)


def test_a_panel_whose_output_goes_away_stops_listening(lab_server: Any, page: Any) -> None:
    """Issue #13 item 7: a panel shown again (the cell run twice) or cleared away leaves no
    listener behind in the kernel; the one on screen still follows new checkpoints."""
    name = "listeners.ipynb"
    write_notebook(
        lab_server.root / name,
        ["%load_ext nbcheckpoint\nx = 1\n%checkpoint save x", "%checkpoint panel", COUNT_PANELS],
    )
    page.goto(workspace_url(lab_server, "listeners", name))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    run(page, 0)

    def panels() -> int:
        return int(re.search(r"PANELS (\d+)", run(page, 2)).group(1))

    run_cell(page, 1)
    cell(page, 1).locator(".nbc-panel").wait_for(timeout=60_000)
    assert panels() == 1
    run_cell(page, 1)  # the old panel's output is replaced by a new panel
    cell(page, 1).locator(".nbc-panel").wait_for(timeout=60_000)
    wait_until(page, lambda: panels() == 1, 30, "one listening panel after a re-run")

    # The panel on screen follows a save made in another cell.
    run_cell(page, 0)
    rows = cell(page, 1).locator(".nbc-history button")
    wait_until(page, lambda: rows.count() == 2, 30, "the new checkpoint in the panel")

    page.locator(".lm-MenuBar-itemLabel", has_text="Edit").click()
    page.locator(".lm-Menu-itemLabel", has_text="Clear Outputs of All Cells").click()
    wait_until(page, lambda: panels() == 0, 30, "no listening panel once outputs are cleared")
