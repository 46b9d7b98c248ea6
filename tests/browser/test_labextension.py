"""The JupyterLab extension in real JupyterLab and headless Chromium: sidebar, status bar, kill, one notification, Restore.

Uses the ``lab_server``, ``page`` and ``artifacts`` fixtures of ``conftest.py`` beside it.
The extension must be installed in this environment (``pip install -e .`` builds it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pages import cell, run_cell, wait_executed, write_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOTEBOOK = "labext.ipynb"
CELLS = [
    # 0: this kernel's pid, to kill it as the out-of-memory killer would
    "%load_ext nbcheckpoint\nimport os, time\nprint('PID', os.getpid())\ntotal = 0",
    # 1: a long cell; checkpoints land every 0.3 s
    "%%checkpoint --every 0.3\nfor epoch in range(800):\n    total += epoch\n    time.sleep(0.05)",
    # 2: in the new kernel, after Restore
    "print('RESTORED', total)",
]
SIDEBAR = "#nbcheckpoint-sidebar"
STATUS = "#jp-main-statusbar .nbc-status"
OFFER = "Bring its variables back from state checkpoint"


def wait_until(page: Any, predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def offers(page: Any) -> Any:
    return page.locator(".Toastify__toast").filter(has_text=OFFER)


def test_sidebar_status_bar_restart_notification_restore(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    write_notebook(lab_server.root / NOTEBOOK, CELLS)
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.set_viewport_size({"width": 1400, "height": 900})  # a screen's shape, for the docs image
    page.goto(lab_server.lab_url(NOTEBOOK))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    # Fold the file browser away: more room for the notebook and the sidebar.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()

    # The toolbar button opens the Checkpoints sidebar, which shows the kernel's panel.
    page.locator(".jp-NotebookPanel-toolbar .nbc-toolbar-button").click()
    sidebar = page.locator(SIDEBAR)
    sidebar.wait_for()
    panel = sidebar.locator(".nbc-panel")
    panel.wait_for(timeout=60_000)
    assert "labext.ipynb" in sidebar.locator(".nbc-sidebar-notebook").inner_text()
    # Nothing checkpointed yet: no status bar item.
    assert page.locator(STATUS).count() == 0 or not page.locator(STATUS).is_visible()

    run_cell(page, 0)
    wait_executed(page, 0)
    out = cell(page, 0).locator(".jp-OutputArea").inner_text()
    pid = int(re.search(r"PID (\d+)", out).group(1))

    # The status bar follows the running cell: checkpoint number and loop progress.
    run_cell(page, 1)
    status = page.locator(STATUS)
    status.wait_for(timeout=30_000)
    seen: list[str] = []

    def progressed() -> bool:
        text = status.inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        return len({re.sub(r" · .* ago", "", t) for t in seen if "at " in t}) >= 3

    wait_until(page, progressed, 30, "the status bar to show three positions")
    text = seen[-1]
    assert re.match(
        r"State checkpoint #\d+ · (just now|\d+ s ago) · `for epoch` at \d+/800$", text
    ), seen
    assert all("Idle" not in t for t in seen), seen
    assert "*" in cell(page, 1).locator(".jp-InputPrompt").inner_text(), "the cell already ended"

    # The sidebar's panel gets the rows live, while the cell runs.
    rows = panel.locator(".nbc-history button")
    wait_until(page, lambda: rows.count() >= 3, 30, "three rows in the sidebar panel")
    page.screenshot(path=str(artifacts / "labextension-running.png"))

    # SIGKILL the kernel; JupyterLab restarts it and says so in its own dialog.
    os.kill(pid, signal.SIGKILL)
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=30_000)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached")

    # Exactly one offer, even though JupyterLab reports the restart twice.
    offer = offers(page)
    offer.first.wait_for(timeout=60_000)
    page.wait_for_timeout(3000)
    assert offers(page).count() == 1, [t.inner_text() for t in offers(page).all()]
    offer_text = offer.inner_text()
    match = re.search(
        r"The kernel restarted\. Bring its variables back from state checkpoint #(\d+) "
        r"\(\"for epoch in range\(800\):\" \[2\], (just now|\d+ s ago), `for epoch` at (\d+)/800\)\?",
        offer_text,
    )
    assert match, offer_text
    ident = int(match.group(1))
    page.screenshot(path=str(artifacts / "labextension.png"))

    offer.get_by_role("button", name="Restore").click()
    done = page.locator(".Toastify__toast").filter(has_text=f"Restored checkpoint #{ident}")
    done.wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "labextension-restored.png"))

    # The variable is back in the new kernel.
    run_cell(page, 2)
    wait_executed(page, 2)
    restored = re.search(r"RESTORED (\d+)", cell(page, 2).locator(".jp-OutputArea").inner_text())
    assert restored and int(restored.group(1)) > 0

    # The sidebar shows the new kernel's panel, with the history of the old one.
    panel = sidebar.locator(".nbc-panel")
    wait_until(page, lambda: panel.locator(".nbc-history button").count() >= 3, 60, "history")
    assert page.locator(STATUS).is_visible()
    assert "Idle" not in page.locator(STATUS).inner_text()

    # The palette's list command shows the server's list, newest first.
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("List the State Checkpoints")
    page.keyboard.press("Enter")
    table = page.locator(".jp-Dialog .nbc-list table")
    table.wait_for()
    first = table.locator("tbody tr").first.inner_text()
    assert first.startswith(f"#{ident}") or int(re.match(r"#(\d+)", first).group(1)) >= ident
    page.screenshot(path=str(artifacts / "labextension-list.png"))
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    problems = [m for m in console if m.startswith("error") and "nbcheckpoint" in m.lower()]
    assert problems == [], problems
    shutil.copy(lab_server.log, artifacts / "labextension-server.log")
