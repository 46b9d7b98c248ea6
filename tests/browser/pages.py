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
