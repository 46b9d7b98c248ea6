"""The in-cell panel at a narrow output width (about 400 px, Notebook 7): nothing is cut (issue #13, item 6).

Action buttons wrap onto more lines instead of shrinking to "Rest…"; the history and variable
tables keep their columns whole, with their headers, and scroll sideways together. Checked by
element geometry in real Notebook 7 and headless Chromium (``conftest.py``, ``servers.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pages import cell, run_cell, wait_executed, write_notebook
from servers import JupyterServer
from test_panel_notebook7 import nb7_server, wait_kernel_ready  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CELLS = [
    "%load_ext nbcheckpoint\nimport time\nresult = 0\nhistory = []",
    "%%checkpoint --every 0.2\nfor step in range(30):\n    result += step\n"
    "    history.append(step)\n    time.sleep(0.05)",
    "%checkpoint panel",
]

# Everything the user reads or clicks in the panel: cut when its content is wider than its
# box (and it does not scroll), when it ends in an ellipsis (buttons), or when it sticks out
# of the panel without a sideways-scrolling table to reach it; a table whose header does not
# scroll with its rows is cut too (the columns lose their titles).
_CUT = """(panel) => {
  const edge = panel.getBoundingClientRect().right;
  const scroller = e => {
    for (let p = e.parentElement; p && p !== panel; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (['auto', 'scroll'].includes(s.overflowX) && p.scrollWidth > p.clientWidth + 1) {
        return p;
      }
    }
    return null;
  };
  const seen = e => e.offsetParent !== null && e.getBoundingClientRect().width > 0;
  const cut = [];
  const items = panel.querySelectorAll('button, .nbc-cols, select');
  for (const e of items) {
    if (!seen(e)) continue;
    const text = (e.innerText || e.tagName).trim().slice(0, 40);
    const isAction = e.tagName === 'BUTTON' && !e.closest('.nbc-history');
    const own = getComputedStyle(e);
    const scrollsItself = ['auto', 'scroll'].includes(own.overflowX);
    if (e.scrollWidth > e.clientWidth + 1 && !scrollsItself) cut.push(['content', text]);
    if (isAction && text.endsWith('\\u2026')) cut.push(['ellipsis', text]);
    const right = e.getBoundingClientRect().right;
    if (right > edge + 1) {
      const box = scroller(e);
      if (!box) cut.push(['outside', text]);
      else if (!box.querySelector('.nbc-cols')) cut.push(['header does not scroll', text]);
    }
  }
  return {width: panel.getBoundingClientRect().width, cut};
}"""


def test_the_panel_fits_a_400_pixel_output(
    nb7_server: JupyterServer,  # noqa: F811 (the imported fixture)
    page: Any,
    artifacts: Path,
) -> None:
    # Notebook 7 at this window width gives a cell's output about 400 px.
    page.set_viewport_size({"width": 440, "height": 1400})
    write_notebook(nb7_server.root / "narrow-panel.ipynb", CELLS)
    page.goto(nb7_server.notebook_url("narrow-panel.ipynb"))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    wait_kernel_ready(page, nb7_server)
    for index in (0, 1, 2):
        run_cell(page, index)
        wait_executed(page, index)
    panel = cell(page, 2).locator(".nbc-panel")
    panel.wait_for()
    rows = panel.locator(".nbc-history button")
    deadline = time.monotonic() + 30
    while rows.count() < 2:
        assert time.monotonic() < deadline, panel.inner_text()
        page.wait_for_timeout(100)
    # The variables and the details of a row, then Delete's question (Yes / No).
    rows.last.click()
    panel.locator(".nbc-vars select option").first.wait_for(state="attached")
    panel.get_by_role("button", name="Delete").click()
    panel.locator(".nbc-confirm").wait_for()
    page.wait_for_timeout(500)  # the widgets settle their layout

    found = panel.evaluate(_CUT)
    assert 360 <= found["width"] <= 440, found
    panel.screenshot(path=str(artifacts / "panel-narrow.png"))
    assert found["cut"] == [], found

    # Every action is still there, on its own whole label.
    labels = panel.evaluate(
        """(panel) => [...panel.querySelectorAll('button')]
             .filter(b => b.offsetParent !== null && !b.closest('.nbc-history'))
             .map(b => b.innerText.trim())"""
    )
    for name in ("Restore all", "Restore selected", "Delete", "Pin", "Refresh", "Delete #", "No"):
        assert any(label.startswith(name) for label in labels), (name, labels)
    panel.locator(".nbc-confirm button", has_text="No").click()
