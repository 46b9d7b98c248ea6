"""The checkpoint panel in JupyterLab and headless Chromium: live rows, a killed kernel, the banner, Restore."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from pages import cell, output_text, run_cell, wait_executed, write_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOTEBOOK = "panel.ipynb"
CELLS = [
    # 0: this kernel's pid, to kill it as the out-of-memory killer would
    "%load_ext nbcheckpoint\nimport os, time\nprint('PID', os.getpid())\ntotal = 0\nhistory = []",
    # 1: the panel, opened before the long cell: its rows must appear while that cell runs
    "%checkpoint panel",
    # 2: a long cell; at each safe point total == sum(history)
    "%%checkpoint --every 0.3\nfor epoch in range(600):\n    total += epoch\n"
    "    history.append(epoch)\n    time.sleep(0.05)",
    # 3: in the new kernel, after the kill
    "%load_ext nbcheckpoint\n%checkpoint panel",
    # 4: the restored state
    "print('RESTORED', total, len(history), total == sum(history))",
]


def wait_idle(page: Any) -> None:
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for()


def test_panel_live_rows_kill_banner_restore(
    lab_server: Any, page: Any, artifacts: Path, tmp_path: Path
) -> None:
    write_notebook(lab_server.root / NOTEBOOK, CELLS)
    page.goto(lab_server.lab_url(NOTEBOOK))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_idle(page)

    run_cell(page, 0)
    wait_executed(page, 0)
    pid = int(re.search(r"PID (\d+)", output_text(page, 0)).group(1))
    kernels = lab_server.api("/api/kernels")
    assert len(kernels) == 1 and kernels[0]["execution_state"] in ("idle", "busy")

    run_cell(page, 1)
    wait_executed(page, 1)
    panel = cell(page, 1).locator(".nbc-panel")
    panel.wait_for()
    assert "No checkpoints yet" in panel.inner_text()
    # Every button says what it does.
    for button in panel.locator("button:visible").all():
        assert button.get_attribute("title"), button.inner_text()

    # Live: rows land in the panel while the long cell is still running.
    run_cell(page, 2)
    rows = panel.locator(".nbc-history button")
    deadline = time.monotonic() + 30
    while rows.count() < 3:
        assert time.monotonic() < deadline, f"only {rows.count()} rows appeared"
        page.wait_for_timeout(100)
    assert "*" in cell(page, 2).locator(".jp-InputPrompt").inner_text(), "the cell already ended"
    assert "running" in rows.first.inner_text()
    # The exact time is on hover.
    assert re.search(r"taken \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows.first.get_attribute("title"))
    panel.screenshot(path=str(artifacts / "panel-live.png"))

    # SIGKILL the kernel, as the out-of-memory killer would; JupyterLab restarts it.
    os.kill(pid, signal.SIGKILL)
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "restart" in dialog.inner_text().lower()
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached")
    deadline = time.monotonic() + 60
    while True:
        try:
            kernels = lab_server.api("/api/kernels")
        except urllib.error.HTTPError:
            kernels = []  # a 500 while the new kernel has no last_activity yet (seen here)
        if kernels and kernels[0]["execution_state"] == "idle":
            break
        assert time.monotonic() < deadline, f"no idle kernel after the kill: {kernels}"
        time.sleep(0.2)
    wait_idle(page)

    run_cell(page, 3)
    wait_executed(page, 3)
    panel = cell(page, 3).locator(".nbc-panel")
    banner = panel.locator(".nbc-banner")
    banner.wait_for()
    text = banner.inner_text()
    assert "The kernel restarted." in text, text
    ident = re.search(r"Restore #(\d+) \(", text).group(1)
    assert panel.locator(".nbc-history button").count() >= 3
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts / "panel.png"))

    banner.get_by_role("button", name=f"Restore #{ident}").click()
    message = panel.locator(".nbc-message .nbc-ok")
    message.wait_for()
    assert f"Restored checkpoint #{ident}" in message.inner_text()
    banner.wait_for(state="hidden")
    panel.screenshot(path=str(artifacts / "panel-restored.png"))

    run_cell(page, 4)
    wait_executed(page, 4)
    restored = re.search(r"RESTORED (\d+) (\d+) (\w+)", output_text(page, 4))
    assert restored, output_text(page, 4)
    assert int(restored.group(2)) > 0 and restored.group(3) == "True"
    page.screenshot(path=str(artifacts / "lab.png"), full_page=True)
    shutil.copy(lab_server.log, artifacts / "server.log")
