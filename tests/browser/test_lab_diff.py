"""Compare two state checkpoints in JupyterLab and Notebook 7 (issue #13, item 9), as a user does it.

Two ``%%checkpoint`` cells, the second of which reshapes an array; then, in JupyterLab's State
checkpoints sidebar: the server's list (shown with no kernel) takes two checked rows and
Compare; the kernel's panel compares its selected row with another. In Notebook 7, the
``%checkpoint panel`` output does the same. Each must show the array as changed, with its
shape change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
from servers import JupyterServer, jupyter_server, require_notebook7
from test_panel_notebook7 import wait_kernel_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SIDEBAR = "#nbcheckpoint-sidebar"

CELLS = [
    "%load_ext nbcheckpoint\nimport numpy as np\nw = np.zeros((3, 4))\nsteps = 0",
    "%%checkpoint\nfor i in range(3):\n    steps += 1\n    w[0, 0] = i",
    "%%checkpoint\nw = np.zeros((5, 4))\nfor i in range(3):\n    steps += 1\n    w[0, 0] = i",
]


def _open_sidebar(page: Any) -> Any:
    page.locator(".jp-NotebookPanel:visible .nbc-toolbar-button").first.click()
    sidebar = page.locator(SIDEBAR)
    sidebar.wait_for()
    return sidebar


def _run_all(lab_server: Any, page: Any, name: str, workspace: str) -> list[dict[str, Any]]:
    write_notebook(lab_server.root / name, CELLS)
    page.goto(workspace_url(lab_server, workspace, name))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    for index in range(len(CELLS)):
        run_cell(page, index)
        wait_executed(page, index)
        assert "Error" not in output_text(page, index), output_text(page, index)
    # Saved, the file carries the notebook's id, under which the kernel filed its checkpoints.
    page.keyboard.press("Control+s")
    wait_until(
        page,
        lambda: "nbcheckpoint" in json.loads((lab_server.root / name).read_text())["metadata"],
        30,
        "the notebook saved with its id",
    )
    listed: list[dict[str, Any]] = lab_server.api(f"/nbcheckpoint/api/checkpoints?path={name}")
    assert len(listed) >= 2, listed
    return listed


def test_check_two_rows_of_the_server_list_and_compare(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    listed = _run_all(lab_server, page, "diff_list.ipynb", "diff-list")
    oldest, newest = listed[0], listed[-1]

    # With no kernel the sidebar shows the server's list, which needs none.
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
    page.locator(".lm-Menu-itemLabel", has_text="Shut Down Kernel").first.click()
    sidebar = _open_sidebar(page)
    sidebar.get_by_text("No kernel: the list comes from the server").wait_for(timeout=60_000)
    rows = sidebar.locator(".nbc-server-row")
    wait_until(page, lambda: rows.count() == len(listed) and rows.first.is_visible(), 60, "rows")

    button = sidebar.locator(".nbc-compare-button")
    assert button.is_disabled()
    for info in (newest, oldest):
        sidebar.locator(f'.nbc-compare-pick[data-ref="{info["key"]}:{info["id"]}"]').check()
    assert button.is_enabled()
    button.click()

    row = sidebar.locator('.nbc-compare-table tr[data-name="w"]')
    row.wait_for(timeout=30_000)
    assert row.get_attribute("data-change") == "changed"
    text = row.inner_text()
    assert "(3, 4)" in text and "(5, 4)" in text, text
    assert "shape (3, 4) -> (5, 4)" in text, text
    summary = sidebar.locator(".nbc-compare-summary").inner_text()
    assert summary.startswith(f"#{oldest['id']} -> #{newest['id']}: "), summary
    sidebar.locator(".nbc-server-list").screenshot(path=str(artifacts / "lab-sidebar-compare.png"))

    # A third check drops the first one: still two, still comparable.
    if len(listed) > 2:
        middle = listed[1]
        sidebar.locator(f'.nbc-compare-pick[data-ref="{middle["key"]}:{middle["id"]}"]').check()
        assert sidebar.locator(".nbc-compare-pick:checked").count() == 2
        assert button.is_enabled()


def test_the_kernel_panel_compares_the_selected_row_with_another(
    lab_server: Any, page: Any, artifacts: Path
) -> None:
    listed = _run_all(lab_server, page, "diff_panel.ipynb", "diff-panel")
    oldest, newest = listed[0], listed[-1]
    sidebar = _open_sidebar(page)
    history = sidebar.locator(".nbc-panel .nbc-history button")
    wait_until(page, lambda: history.count() == len(listed), 60, "the kernel panel's rows")

    history.first.click()  # the newest
    view = sidebar.locator(".nbc-diff-view")
    view.locator("select").select_option(label=f"#{oldest['id']}")
    view.get_by_role("button", name="Compare").click()
    row = view.locator('.nbc-diff-table tr[data-name="w"]')
    row.wait_for(timeout=30_000)
    assert row.get_attribute("data-change") == "changed"
    assert "shape (3, 4) -> (5, 4)" in row.inner_text(), row.inner_text()
    summary = view.locator(".nbc-diff b").first.inner_text()
    assert summary.startswith(f"#{oldest['id']} -> #{newest['id']}: "), summary
    sidebar.screenshot(path=str(artifacts / "lab-panel-compare.png"))


@pytest.fixture(scope="module")
def nb7_server(
    tmp_path_factory: pytest.TempPathFactory, chromium_path: str
) -> Iterator[JupyterServer]:
    require_notebook7()
    with jupyter_server(tmp_path_factory.mktemp("nb7-diff"), "notebook") as server:
        yield server


def test_the_panel_compares_in_notebook7(
    nb7_server: JupyterServer, page: Any, artifacts: Path
) -> None:
    name = "diff_nb7.ipynb"
    write_notebook(nb7_server.root / name, [*CELLS, "%checkpoint panel", "w = w.astype('float32')"])
    page.goto(nb7_server.notebook_url(name))
    page.locator("#jp-top-bar").wait_for()
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    wait_kernel_ready(page, nb7_server, timeout=60)
    for index in range(len(CELLS) + 1):
        run_cell(page, index)
        wait_executed(page, index)
    panel = cell(page, len(CELLS)).locator(".nbc-panel")
    history = panel.locator(".nbc-history button")
    wait_until(page, lambda: history.count() >= 2, 60, "the panel's rows")
    count = history.count()

    history.first.click()  # the newest
    view = panel.locator(".nbc-diff-view")
    view.locator("select").select_option(label="#1")
    view.get_by_role("button", name="Compare").click()
    row = view.locator('.nbc-diff-table tr[data-name="w"]')
    row.wait_for(timeout=30_000)
    assert row.get_attribute("data-change") == "changed"
    assert "shape (3, 4) -> (5, 4)" in row.inner_text(), row.inner_text()
    summary = view.locator(".nbc-diff b").first.inner_text()
    assert summary.startswith(f"#1 -> #{count}: "), summary

    # "now": a change made after the panel was drawn shows, and nothing is written.
    run_cell(page, len(CELLS) + 1)
    wait_executed(page, len(CELLS) + 1)
    view.locator("select").select_option(label="now (the kernel's variables)")
    view.get_by_role("button", name="Compare").click()
    wait_until(
        page,
        lambda: "dtype float64 -> float32" in view.locator('tr[data-name="w"]').inner_text(),
        30,
        "the comparison with now",
    )
    assert view.locator(".nbc-diff b").first.inner_text().startswith(f"#{count} -> now: ")
    assert history.count() == count
    # Only the user's variables: IPython's own names (its `open`, In, Out) are not "added".
    assert view.locator('tr[data-change="added"]').count() == 0
    panel.screenshot(path=str(artifacts / "nb7-panel-compare.png"))
