"""The panel's Recompute button in JupyterLab and headless Chromium: after a SIGKILL, a restored
notebook gets its sqlite3 connection back from the cells that made it, only after Yes."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from pages import cell, output_text, run_cell, wait_executed, write_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOTEBOOK = "recompute.ipynb"
CELLS = [
    "%load_ext nbcheckpoint\nimport os, sqlite3\nprint('PID', os.getpid())\ndata = [5, 3, 8, 1]",
    "conn = sqlite3.connect(':memory:')\nconn.execute('create table t (x)')\n"
    "conn.executemany('insert into t values (?)', [(v,) for v in data])",
    "%checkpoint save",
    # in the new kernel, after the kill
    "%load_ext nbcheckpoint\n%checkpoint restore\n%checkpoint panel",
    "print('SUM', conn.execute('select sum(x) from t').fetchone()[0])",
]


def wait_idle(page: Any) -> None:
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for()


def test_recompute_button_after_a_kill(lab_server: Any, page: Any, artifacts: Path) -> None:
    write_notebook(lab_server.root / NOTEBOOK, CELLS)
    page.goto(lab_server.lab_url(NOTEBOOK))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_idle(page)
    for index in range(3):
        run_cell(page, index)
        wait_executed(page, index)
    assert "skipped: conn" in output_text(page, 2), output_text(page, 2)
    pid = int(re.search(r"PID (\d+)", output_text(page, 0)).group(1))

    os.kill(pid, signal.SIGKILL)
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached")
    deadline = time.monotonic() + 60
    while True:
        try:
            kernels = lab_server.api("/api/kernels")
        except urllib.error.HTTPError:
            kernels = []
        if kernels and kernels[0]["execution_state"] == "idle":
            break
        assert time.monotonic() < deadline, f"no idle kernel after the kill: {kernels}"
        time.sleep(0.2)
    wait_idle(page)

    run_cell(page, 3)
    wait_executed(page, 3)
    # (output_text would also match the panel's own Output widget)
    restored = cell(page, 3).locator(".jp-Cell-outputArea").first.inner_text()
    assert "not saved: conn (sqlite3.Connection)" in restored, restored
    assert "conn.executemany('insert into t values (?)'" in restored
    panel = cell(page, 3).locator(".nbc-panel")
    panel.wait_for()
    panel.locator(".nbc-history button").first.click()
    button = panel.get_by_role("button", name="Recompute")
    assert button.get_attribute("title")
    button.click()
    confirm = panel.locator(".nbc-confirm")
    confirm.wait_for()
    assert "side effects" in confirm.inner_text()
    assert "conn = sqlite3.connect(':memory:')" in confirm.inner_text()
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(artifacts / "panel-recompute-ask.png"))
    confirm.get_by_role("button", name="Recompute").click()
    message = panel.locator(".nbc-message .nbc-ok")
    message.wait_for()
    assert "recomputed: conn (Connection)" in message.inner_text(), message.inner_text()
    panel.screenshot(path=str(artifacts / "panel-recomputed.png"))

    run_cell(page, 4)
    wait_executed(page, 4)
    assert "SUM 17" in output_text(page, 4), output_text(page, 4)
