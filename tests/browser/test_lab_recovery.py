"""Recovery in JupyterLab as users do it (issue #13): a renamed notebook, a sidebar that never goes
blank, and a kernel shown Busy for the whole ``%%checkpoint`` cell.

Real JupyterLab, real kernels and headless Chromium (``conftest.py``, ``servers.py``); each test
works in its own JupyterLab workspace so none reopens another's notebooks. Run them one at a time:
they are CPU-heavy.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from pages import (
    cell,
    clipped,
    kernel_states,
    output_text,
    run_cell,
    type_into_cell,
    wait_executed,
    wait_until,
    workspace_url,
    write_notebook,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SIDEBAR = "#nbcheckpoint-sidebar"
STATUS = "#jp-main-statusbar .nbc-status"
OFFER = "Bring its variables back from state checkpoint"


def wait_kernel_idle(page: Any) -> None:
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)


def current_tab(page: Any) -> str:
    return page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text().strip()


def sidebar_rows(page: Any) -> dict[str, int]:
    """Rows the user can see in the sidebar: the kernel panel's and the server list's."""
    return page.evaluate(
        """(sel) => {
          const sb = document.querySelector(sel);
          const seen = e => e.offsetParent !== null;
          const count = q => sb ? [...sb.querySelectorAll(q)].filter(seen).length : 0;
          return {panel: count('.nbc-panel .nbc-history button'), server: count('.nbc-server-row')};
        }""",
        SIDEBAR,
    )


def open_sidebar(page: Any) -> Any:
    page.locator(".jp-NotebookPanel:visible .nbc-toolbar-button").first.click()
    sidebar = page.locator(SIDEBAR)
    sidebar.wait_for()
    return sidebar


def test_renamed_untitled_notebook_is_offered_its_checkpoints_after_a_kill(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    """New notebook -> Untitled.ipynb -> rename to train.ipynb -> %%checkpoint loop -> SIGKILL:
    the restore offer appears and Restore brings the values back."""
    page.goto(workspace_url(lab_server, "rename"))
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_idle(page)
    assert current_tab(page) == "Untitled.ipynb"

    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    page.locator(".lm-Menu-itemLabel", has_text="Rename Notebook").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("train.ipynb")
    page.keyboard.press("Enter")
    dialog.wait_for(state="detached")
    wait_until(page, lambda: current_tab(page) == "train.ipynb", 30, "the rename")

    type_into_cell(
        page, 0, "%load_ext nbcheckpoint\nimport os, time\nprint('PID', os.getpid())\ntotal = 0"
    )
    page.keyboard.press("Shift+Enter")
    wait_executed(page, 0)
    pid = int(re.search(r"PID (\d+)", output_text(page, 0)).group(1))
    # Shift+Enter left the cursor in a new cell below.
    page.keyboard.insert_text(
        "%%checkpoint --every 0.3\nfor epoch in range(800):\n    total += epoch\n    time.sleep(0.05)"
    )
    page.keyboard.press("Shift+Enter")
    status = page.locator(STATUS)
    wait_until(
        page,
        lambda: status.is_visible() and re.search(r"#([3-9]|\d\d)", status.inner_text()),
        60,
        "three checkpoints in the status bar",
    )
    assert "*" in cell(page, 1).locator(".jp-InputPrompt").inner_text(), "the cell already ended"
    page.keyboard.press("Control+s")
    wait_until(
        page,
        lambda: "nbcheckpoint" in (lab_server.root / "train.ipynb").read_text(),
        30,
        "the notebook saved with its id",
    )

    # Filed under the notebook's own id, which the saved file carries; nothing under Untitled.
    notebook_id = json.loads((lab_server.root / "train.ipynb").read_text())["metadata"][
        "nbcheckpoint"
    ]["id"]
    keys = sorted(p.name for p in (lab_server.root / ".nbcheckpoint" / "notebooks").iterdir())
    assert keys == [notebook_id], keys
    # The server finds them from the path alone (it reads the id from the file).
    listed = lab_server.api("/nbcheckpoint/api/checkpoints?path=train.ipynb")
    assert len(listed) >= 3 and {c["key"] for c in listed} == {notebook_id}, listed

    os.kill(pid, signal.SIGKILL)
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=30_000)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached")

    offer = page.locator(".Toastify__toast").filter(has_text=OFFER)
    offer.first.wait_for(timeout=60_000)
    assert offer.count() == 1, [t.inner_text() for t in offer.all()]
    ident = int(re.search(r"checkpoint #(\d+)", offer.inner_text()).group(1))
    page.screenshot(path=str(artifacts / "lab-renamed-offer.png"))
    offer.get_by_role("button", name="Restore").click()
    done = page.locator(".Toastify__toast").filter(has_text=f"Restored checkpoint #{ident}")
    done.wait_for(timeout=60_000)

    # The values are back in the new kernel (typed into the cell below the loop).
    cell(page, 2).locator(".jp-InputArea-editor").click()
    page.keyboard.insert_text("print('RESTORED', total)")
    page.keyboard.press("Shift+Enter")
    wait_executed(page, 2)
    restored = re.search(r"RESTORED (\d+)", output_text(page, 2))
    assert restored and int(restored.group(1)) > 0, output_text(page, 2)


A_CELLS = [
    "%load_ext nbcheckpoint\nimport time\ntotal = 0",
    "%%checkpoint --every 0.2\nfor epoch in range(30):\n    total += epoch\n    time.sleep(0.05)",
]


def test_sidebar_keeps_its_rows_across_notebook_switches_and_a_reload(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    """Open A with the sidebar, open B, switch back to A: rows present; reload the page: rows present."""
    write_notebook(lab_server.root / "side_a.ipynb", A_CELLS)
    write_notebook(lab_server.root / "side_b.ipynb", ["x = 1"])
    page.goto(workspace_url(lab_server, "switch", "side_a.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_idle(page)
    for index in (0, 1):
        run_cell(page, index)
        wait_executed(page, index)
    open_sidebar(page)
    wait_until(page, lambda: sidebar_rows(page)["panel"] >= 3, 60, "rows for A")
    first = sidebar_rows(page)["panel"]

    # Open B (File > Open from the file browser would do the same): the sidebar follows it.
    page.locator(".jp-DirListing-item", has_text="side_b.ipynb").dblclick()
    wait_until(page, lambda: current_tab(page) == "side_b.ipynb", 30, "B to open")
    wait_until(
        page,
        lambda: "side_b.ipynb" in page.locator(f"{SIDEBAR} .nbc-sidebar-notebook").inner_text(),
        30,
        "the sidebar to follow B",
    )
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="side_a.ipynb").click()
    wait_until(page, lambda: sidebar_rows(page)["panel"] == first, 30, "A's rows again")

    page.reload()
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="side_a.ipynb").click()
    # JupyterLab saves the workspace (with the open sidebar) a moment after a change: a
    # reload just before that shows the sidebar closed; the user opens it again.
    page.wait_for_timeout(1000)
    if not page.locator(SIDEBAR).is_visible():
        open_sidebar(page)
    wait_until(
        page,
        lambda: sidebar_rows(page)["panel"] == first or sidebar_rows(page)["server"] == first,
        60,
        "A's rows after a reload",
    )
    # The kernel's panel comes back too (the kernel is idle).
    wait_until(page, lambda: sidebar_rows(page)["panel"] == first, 60, "the kernel panel")
    page.locator(SIDEBAR).screenshot(path=str(artifacts / "lab-sidebar-after-reload.png"))


def test_while_a_cell_runs_the_kernel_reads_busy_and_the_sidebar_lists_from_the_server(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    """The status bar and the execution indicator say busy from the first checkpoint to the
    cell's end; the sidebar, opened mid-cell, shows the server's rows as they are taken."""
    write_notebook(
        lab_server.root / "busy.ipynb",
        [
            "%load_ext nbcheckpoint\nimport time\ntotal = 0",
            "%%checkpoint --every 0.2\nfor epoch in range(100):\n    total += epoch\n"
            "    time.sleep(0.05)",
        ],
    )
    page.goto(workspace_url(lab_server, "busy", "busy.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_idle(page)
    # Fold the file browser away: room for the notebook's toolbar beside the sidebar.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
    run_cell(page, 0)
    wait_executed(page, 0)

    run_cell(page, 1)
    prompt = cell(page, 1).locator(".jp-InputPrompt")
    status = page.locator(STATUS)
    samples: list[tuple[str, str, str]] = []
    opened = False
    server_rows: list[int] = []
    while "*" in prompt.inner_text() or not samples:
        bar, indicator = kernel_states(page)
        text = status.inner_text() if status.is_visible() else ""
        if "*" not in prompt.inner_text():
            break
        samples.append((bar, indicator, text))
        if len([t for _, _, t in samples if t]) >= 5 and not opened:
            # Checkpoints are being taken: open the sidebar mid-cell.
            open_sidebar(page)
            opened = True
        if opened:
            server_rows.append(sidebar_rows(page)["server"])
        page.wait_for_timeout(100)
    wait_executed(page, 1)

    during = [s for s in samples if s[2]]  # from the first checkpoint on
    assert len(during) >= 10, samples
    # The kernel's idle status and the cell's reply travel on two channels: the bar may read
    # Idle a moment before the prompt loses its star. One such reading, at the very end, is
    # the cell ending; any other reading that is not Busy is a wrong status.
    last_busy = max(i for i, (bar, _, _) in enumerate(during) if bar.endswith("Busy"))
    wrong = [(i, bar) for i, (bar, _, _) in enumerate(during) if not bar.endswith("Busy")]
    ending = [(i, bar) for i, bar in wrong if i > last_busy and bar.endswith("Idle")]
    assert len(ending) <= 1 and len(wrong) == len(ending), (wrong, len(during))
    # The toolbar's execution indicator moves into the toolbar's overflow menu when the
    # sidebar opens and narrows the notebook: judged while it is on the page.
    indicators = [indicator for _, indicator, _ in during[: last_busy + 1] if indicator]
    assert len(indicators) >= 3 and set(indicators) == {"busy"}, during
    # The server's list grew while the kernel could not render its panel.
    assert max(server_rows) >= 3 and max(server_rows) > min(server_rows), server_rows
    note = page.locator(f"{SIDEBAR} .nbc-sidebar-view:visible .nbc-sidebar-note")
    # After the cell, the kernel's own panel replaces the list.
    wait_until(page, lambda: sidebar_rows(page)["panel"] >= 3, 60, "the kernel panel")
    assert not note.is_visible() or "running" not in note.inner_text()
    # Drawing the panel is a (silent) request of its own: the kernel reads Busy for a moment
    # (seen under a CPU burner), then Idle.
    wait_until(page, lambda: kernel_states(page)[0].endswith("Idle"), 30, "the kernel idle")


def test_a_store_that_cannot_be_written_is_one_notification_and_one_line(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    """A checkpoint that fails is seen as a JupyterLab notification (once, naming the store
    path and the reason); ``%checkpoint save`` on that store prints one line naming the path."""
    blocker = lab_server.root / "blocked"
    blocker.write_text("a file where the store's folder should be")
    store = blocker / "store"
    write_notebook(
        lab_server.root / "problem.ipynb",
        [
            f"%load_ext nbcheckpoint\nimport time\n%config Checkpoint.store = {str(store)!r}",
            "%%checkpoint --every 0.2\nfor step in range(30):\n    time.sleep(0.05)",
            "%%checkpoint --every 0.2\nfor step in range(30):\n    time.sleep(0.05)",
            "x = 1\n%checkpoint save",
        ],
    )
    page.goto(workspace_url(lab_server, "problem", "problem.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_idle(page)
    for index in (0, 1, 2):
        run_cell(page, index)
        wait_executed(page, index)
    toasts = page.locator(".Toastify__toast").filter(has_text="State checkpoints of problem.ipynb")
    toasts.first.wait_for(timeout=30_000)
    text = toasts.first.inner_text()
    assert "not saved: Not a directory" in text and str(blocker) in text, text
    # Two failing cells with the same reason: one notification.
    assert toasts.count() == 1, [t.inner_text() for t in toasts.all()]
    page.screenshot(path=str(artifacts / "lab-store-problem.png"))

    run_cell(page, 3)
    wait_executed(page, 3)
    error = output_text(page, 3).strip()
    assert len(error.splitlines()) == 1 and str(blocker) in error, error


def test_the_sidebar_fits_400_pixels_and_every_label_says_state_checkpoints(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    """Nothing in the sidebar is cut at the default right-sidebar width, and every label of
    ours says "State checkpoint(s)", never to be confused with JupyterLab's file checkpoints."""
    write_notebook(lab_server.root / "narrow.ipynb", A_CELLS)
    page.goto(workspace_url(lab_server, "narrow", "narrow.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_idle(page)
    for index in (0, 1):
        run_cell(page, index)
        wait_executed(page, index)
    button = page.locator(".jp-NotebookPanel:visible .nbc-toolbar-button [title]").first
    assert "state checkpoints" in (button.get_attribute("title") or "").lower()
    sidebar = open_sidebar(page)
    wait_until(page, lambda: sidebar_rows(page)["panel"] >= 3, 60, "the kernel panel")
    page.wait_for_timeout(500)  # the panel's widgets settle their layout
    found = clipped(page, SIDEBAR)
    assert found["width"] <= 420, found
    assert found["cut"] == [], found
    sidebar.screenshot(path=str(artifacts / "lab-sidebar-400.png"))

    assert sidebar.locator("h2").inner_text() == "State checkpoints"
    assert sidebar.locator(".nbc-panel").get_by_text("State checkpoints", exact=True).is_visible()
    assert page.locator(STATUS).inner_text().startswith("State checkpoint #")
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("nbcheckpoint")
    page.locator(".lm-CommandPalette-input").fill("")
    ours = page.locator(".lm-CommandPalette-header", has_text="State checkpoints")
    assert ours.count() == 1
    labels = page.locator(".lm-CommandPalette-item").filter(has_text="Checkpoint")
    texts = [t.inner_text() for t in labels.all()]
    assert texts, "no palette items"
    # JupyterLab's own file checkpoint commands stay as they are; ours all say "State".
    assert all("State" in t or "Revert" in t or "Save" in t for t in texts), texts
    page.keyboard.press("Escape")

    # The palette's restore asks first, as the panel does: Cancel changes nothing.
    def palette_restore() -> Any:
        page.locator(".jp-NotebookPanel:visible .jp-Cell").first.click()
        page.keyboard.press("Control+Shift+C")
        page.locator(".lm-CommandPalette-input").fill("Restore the Latest State Checkpoint")
        page.keyboard.press("Enter")
        confirm = page.locator(".jp-Dialog")
        confirm.wait_for()
        assert "Restore the latest state checkpoint?" in confirm.inner_text()
        return confirm

    palette_restore().get_by_role("button", name="Cancel").click()
    page.locator(".jp-Dialog").wait_for(state="detached")
    restoring = page.locator(".Toastify__toast").filter(has_text="Restor")
    page.wait_for_timeout(1000)
    assert restoring.count() == 0, [t.inner_text() for t in restoring.all()]
    # Restore goes ahead (its outcome is the notification's, tested with the restart offer).
    palette_restore().get_by_role("button", name="Restore").click()
    wait_until(page, lambda: restoring.count() > 0, 30, "the restore to start")
