"""Helpers for driving a notebook page in JupyterLab or Notebook 7, as a person would."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook file with these code cells and the python3 kernel."""
    nb = new_notebook(cells=[new_code_cell(src) for src in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def cell(page: Any, index: int) -> Any:
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)


def run_cell(page: Any, index: int) -> None:
    """Put the cursor in the cell's editor and press Shift+Enter."""
    target = cell(page, index)
    target.scroll_into_view_if_needed()
    target.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def wait_executed(page: Any, index: int, timeout: float = 60) -> None:
    """Until the cell's prompt shows an execution count (not ``[*]`` or ``[ ]``)."""
    prompt = cell(page, index).locator(".jp-InputPrompt")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"\[\d+\]", prompt.inner_text()):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"cell {index} did not finish: prompt {prompt.inner_text()!r}")


def output_text(page: Any, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea").inner_text()


def wait_until(page: Any, predicate: Any, timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 100 ms until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def type_into_cell(page: Any, index: int, code: str) -> None:
    """Put ``code`` into an empty cell as a paste would: no auto-indent, no closing brackets."""
    target = cell(page, index)
    target.scroll_into_view_if_needed()
    target.locator(".jp-InputArea-editor").click()
    page.keyboard.insert_text(code)


def workspace_url(server: Any, workspace: str, notebook: str | None = None) -> str:
    """A JupyterLab URL in its own workspace, so tests do not reopen each other's notebooks."""
    tail = f"/tree/{notebook}" if notebook else ""
    return f"{server.url}/lab/workspaces/{workspace}{tail}?token={server.token}"


def kernel_states(page: Any) -> tuple[str, str]:
    """What the page says about the kernel: the status bar's kernel text and the
    notebook's execution indicator (``data-status``)."""
    return page.evaluate(
        """() => {
          const bar = document.querySelector('#jp-main-statusbar');
          const items = bar ? [...bar.querySelectorAll('.jp-StatusBar-TextItem')] : [];
          const kernel = items.map(e => e.textContent.trim())
            .find(t => t === 'Idle' || t === 'Busy' || t.endsWith('| Idle') || t.endsWith('| Busy')) || '';
          const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
          return [kernel, ind ? ind.getAttribute('data-status') || '' : ''];
        }"""
    )


_CLIPPED = """(sel) => {
  // Buttons and rows whose text is cut: wider content than box, an ellipsis, or sticking
  // out of the container without a sideways-scrolling list to hold them.
  const root = document.querySelector(sel);
  const edge = root.getBoundingClientRect().right;
  const scrolls = e => {
    for (let p = e.parentElement; p && p !== root; p = p.parentElement) {
      const style = getComputedStyle(p);
      if (['auto', 'scroll'].includes(style.overflowX) && p.scrollWidth > p.clientWidth) {
        return true;
      }
    }
    return false;
  };
  const cut = [];
  for (const e of root.querySelectorAll('button, .nbc-server-row *')) {
    if (e.offsetParent === null) continue;
    const text = (e.innerText || '').trim();
    const wide = e.scrollWidth > e.clientWidth + 1;
    const out = e.getBoundingClientRect().right > edge + 1 && !scrolls(e);
    if (wide || out || text.endsWith('\u2026')) cut.push(text.slice(0, 30));
  }
  return {width: root.getBoundingClientRect().width, cut};
}"""


def clipped(page: Any, selector: str) -> dict[str, Any]:
    """The width of ``selector`` and the texts of its buttons that are cut (see _CLIPPED)."""
    return page.evaluate(_CLIPPED, selector)
