"""The checkpoint panel in Jupyter Notebook 7 and headless Chromium: rows, variables, Restore all.

Issue #6: the ipywidgets panel must work in JupyterLab 4 (``test_panel_browser.py``) and in
Notebook 7 (here). Uses the ``page`` and ``artifacts`` fixtures of ``conftest.py`` and the
server of ``servers.py``. Without Chromium, Playwright or ``notebook>=7`` it skips, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pages import cell, clipped, output_text, run_cell, wait_executed, write_notebook
from servers import JupyterServer, jupyter_server, require_notebook7

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOTEBOOK = "panel-nb7.ipynb"
CELLS = [
    "%load_ext nbcheckpoint\nimport time\nresult = 0\nhistory = []",
    # At each safe point result == sum(history); checkpoints every 0.2 s of a ~1.5 s loop.
    "%%checkpoint --every 0.2\nfor step in range(30):\n    result += step\n"
    "    history.append(step)\n    time.sleep(0.05)",
    "%checkpoint panel",
    # Clobbered after the panel is up: Restore all must put them back.
    "result = 'clobbered'\nhistory = None",
    "print('RESTORED', type(result).__name__, len(history), result == sum(history))",
]
ROW_SELECTOR = ".nbc-history button"


@pytest.fixture(scope="module")
def nb7_server(
    tmp_path_factory: pytest.TempPathFactory, chromium_path: str
) -> Iterator[JupyterServer]:
    require_notebook7()
    with jupyter_server(tmp_path_factory.mktemp("nb7"), "notebook") as server:
        yield server


def wait_kernel_ready(page: Any, server: JupyterServer, timeout: float = 30) -> None:
    """Notebook 7 has no status bar: the server's kernel is idle, and the page is connected to it.

    The toolbar's "Kernel Connecting" message goes away once the page holds the connection;
    the execution indicator then reads idle.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            kernels = server.api("/api/kernels")
        except urllib.error.HTTPError:
            # jupyter_server answers 500 while a kernel it is starting has no last_activity
            # yet (seen here): not ready, ask again.
            kernels = []
        status = page.locator(".jp-NotebookKernelStatus").inner_text().strip()
        indicator = page.locator(".jp-Notebook-ExecutionIndicator").get_attribute("data-status")
        if (
            kernels
            and kernels[0]["execution_state"] == "idle"
            and not status
            and indicator == "idle"
        ):
            return
        assert time.monotonic() < deadline, f"kernel not ready: {kernels} {status!r} {indicator!r}"
        page.wait_for_timeout(100)


def test_panel_in_notebook7(nb7_server: JupyterServer, page: Any, artifacts: Path) -> None:
    write_notebook(nb7_server.root / NOTEBOOK, CELLS)
    page.goto(nb7_server.notebook_url(NOTEBOOK))
    # Notebook 7's single-document page, not JupyterLab's.
    page.locator("#jp-top-bar").wait_for()
    assert page.locator("#jp-main-statusbar").count() == 0
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_ready(page, nb7_server)

    for index in (0, 1):
        run_cell(page, index)
        wait_executed(page, index)
    assert "Error" not in output_text(page, 1), output_text(page, 1)

    run_cell(page, 2)
    wait_executed(page, 2)
    panel = cell(page, 2).locator(".nbc-panel")
    panel.wait_for()
    header = panel.get_by_text("State checkpoints", exact=True)
    header.wait_for()
    assert NOTEBOOK in panel.inner_text()
    assert "signatures verify" in panel.inner_text()
    rows = panel.locator(ROW_SELECTOR)
    assert rows.count() >= 2, panel.inner_text()
    row1 = rows.filter(has_text=re.compile(r"^\s*#1\s"))
    assert row1.count() == 1, [r.inner_text() for r in rows.all()]
    assert row1.is_visible()
    # Newest first, and the newest is selected.
    assert "mod-active" in (rows.first.get_attribute("class") or "")

    run_cell(page, 3)
    wait_executed(page, 3)

    # Clicking row #1 shows its variables.
    row1.click()
    details = panel.locator(".nbc-details")
    details.get_by_text(re.compile(r"#1 · taken")).wait_for()
    assert "mod-active" in (row1.get_attribute("class") or "")
    variables = panel.locator(".nbc-vars select option")
    variables.first.wait_for(state="attached")
    # One fixed-width line per variable (non-breaking spaces): name, type, size, change.
    lines = [" ".join(o.inner_text().replace("\xa0", " ").split()) for o in variables.all()]
    names = {line.split(" ")[0] for line in lines}
    assert {"result", "history", "step"} <= names, lines
    assert any(line.startswith("result int") for line in lines), lines
    assert panel.locator(".nbc-vcols").is_visible()

    # Restore all: result and history exist in the kernel now, so the panel asks first.
    panel.get_by_role("button", name="Restore all").click()
    confirm = panel.locator(".nbc-confirm")
    confirm.wait_for()
    assert "Restore #1?" in confirm.inner_text(), confirm.inner_text()
    confirm.get_by_role("button", name="Restore #1").click()
    message = panel.locator(".nbc-message .nbc-ok")
    message.wait_for()
    assert "Restored checkpoint #1" in message.inner_text(), message.inner_text()
    confirm.wait_for(state="hidden")

    run_cell(page, 4)
    wait_executed(page, 4)
    restored = re.search(r"RESTORED (\w+) (\d+) (\w+)", output_text(page, 4))
    assert restored, output_text(page, 4)
    kind, length, consistent = restored.groups()
    # Checkpoint #1 was taken early in the loop: an int, part of the history, consistent.
    assert kind == "int" and 0 < int(length) < 30 and consistent == "True", restored.group(0)

    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "panel-notebook7.png"), full_page=True)
    shutil.copy(nb7_server.log, artifacts / "server-notebook7.log")


def test_state_checkpoints_sidebar_fits_in_notebook7(
    nb7_server: JupyterServer, page: Any, artifacts: Path
) -> None:
    """Issue #13: the toolbar button opens the State checkpoints sidebar in Notebook 7 too,
    and nothing in it is cut at Notebook 7's sidebar width (element geometry)."""
    write_notebook(nb7_server.root / "sidebar-nb7.ipynb", CELLS[:2])
    page.goto(nb7_server.notebook_url("sidebar-nb7.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_ready(page, nb7_server)
    for index in (0, 1):
        run_cell(page, index)
        wait_executed(page, index)
    page.locator(".nbc-toolbar-button").first.click()
    sidebar = page.locator("#nbcheckpoint-sidebar")
    sidebar.wait_for()
    assert sidebar.locator("h2").inner_text() == "State checkpoints"
    rows = sidebar.locator(".nbc-panel .nbc-history button")
    deadline = time.monotonic() + 60
    while rows.count() < 2:
        assert time.monotonic() < deadline, sidebar.inner_text()
        page.wait_for_timeout(100)
    page.wait_for_timeout(500)  # the panel's widgets settle their layout
    found = clipped(page, "#nbcheckpoint-sidebar")
    assert found["cut"] == [], found
    sidebar.screenshot(path=str(artifacts / "notebook7-sidebar.png"))
