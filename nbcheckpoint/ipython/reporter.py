"""The live status line under a running cell, updated in place, and one-off messages."""

from __future__ import annotations

import collections
import sys
import uuid

from IPython import display as ipython_display

from ..frontend.comm import publish_problem

# What final checkpoints written after their cell had to say: printed before the next cell
# (output sent after a cell's reply is dropped by JupyterLab).
_AFTER_CELL: collections.deque[str] = collections.deque()


def after_cell_reports() -> list[str]:
    """The messages of final checkpoints that landed since the last call."""
    out = []
    while _AFTER_CELL:
        out.append(_AFTER_CELL.popleft())
    return out


class DisplayReporter:
    """Shows one status line per cell, replaced at each checkpoint rather than appended."""

    def __init__(self) -> None:
        self._display_id: str | None = None

    def status(self, text: str) -> None:
        data = {"text/plain": text}
        if self._display_id is None:
            self._display_id = uuid.uuid4().hex
            # Looked up at each call, not bound at import: an import made while a test
            # replaced ``display`` kept the stand-in for good (and broke later cells).
            ipython_display.display(data, raw=True, display_id=self._display_id)
        else:
            ipython_display.update_display(data, raw=True, display_id=self._display_id)

    def info(self, text: str) -> None:
        print(text, flush=True)

    def warn(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        # Also a JupyterLab notification: a failing store must be seen mid-cell.
        publish_problem(text)

    def after_cell(self, text: str, problem: bool) -> None:
        """From a watcher thread, after the cell returned: shown before the next cell, and
        a problem also at once as a JupyterLab notification."""
        _AFTER_CELL.append(text)
        if problem:
            publish_problem(text)
