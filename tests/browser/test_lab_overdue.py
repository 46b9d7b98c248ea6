"""A checkpoint overdue by 3x ``--every`` is seen in JupyterLab (issue #13, item 4): one notification
naming the store and the reason, while the cell is stuck in a call with no safe point.

Real JupyterLab, a real kernel and headless Chromium (``conftest.py``, ``servers.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pages import output_text, run_cell, wait_executed, wait_until, workspace_url, write_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOAST = ".Toastify__toast"


def test_an_overdue_checkpoint_is_one_notification_naming_the_store(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    store = lab_server.root / "overdue-store"
    # `time.sleep(8)` is one C call: the checkpoint due after 1 s cannot be taken until it
    # returns, so it is overdue (3 s) well before the call ends.
    write_notebook(
        lab_server.root / "overdue.ipynb",
        [
            f"%load_ext nbcheckpoint\nimport time\n%config Checkpoint.store = {str(store)!r}",
            "%%checkpoint --every 1 --mode inline\nfor step in range(2):\n    time.sleep(8)",
        ],
    )
    page.goto(workspace_url(lab_server, "overdue", "overdue.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    run_cell(page, 0)
    wait_executed(page, 0)
    run_cell(page, 1)

    toasts = page.locator(TOAST).filter(has_text="State checkpoints of overdue.ipynb")
    toasts.first.wait_for(timeout=60_000)
    text = toasts.first.inner_text()
    assert "overdue: no safe point for" in text, text
    assert str(store) in text, text
    page.screenshot(path=str(artifacts / "lab-overdue.png"))

    # Both iterations wait past 3x --every; the user is told once.
    wait_executed(page, 1, timeout=120)
    assert toasts.count() == 1, [t.inner_text() for t in toasts.all()]
    assert page.locator(TOAST).filter(has_text="overdue").count() == 1
    # The cell's own output has the whole warning, with what to do about it.
    shown = wait_until(page, lambda: output_text(page, 1), 10, "the cell's output")
    assert "nbcheckpoint.safepoint()" in shown, shown
    assert str(store) in shown, shown

    # Details shows the whole message.
    toasts.first.get_by_role("button", name="Details").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "has been due for" in dialog.inner_text()
    dialog.get_by_role("button", name="Close").click()
