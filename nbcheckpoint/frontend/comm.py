"""Kernel side of the status bar: push each new checkpoint to JupyterLab over a comm.

Every update is its own short comm: opened with the message as its data, then closed.
A long-lived comm would go deaf after a page reload (the kernel cannot tell that the
old frontend is gone, and the new one does not know the comm's id); a fresh comm
reaches whichever frontends have the target registered right now. Updates come at
most once per checkpoint, so two small iopub messages each are nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..capture import events
from ..store import Checkpoint

TARGET = "nbcheckpoint.status"


def status_message(ck: Checkpoint, now: float | None = None) -> dict[str, Any]:
    """What the status bar needs about ``ck``.

    ``now`` is the kernel's clock when sending, so the frontend measures the age
    as ``now - last`` plus the time since it received the message, whatever its
    own clock says.

    Examples
    --------
    >>> from nbcheckpoint.store import Checkpoint
    >>> from nbcheckpoint.store.manifest import CellInfo, Manifest, NotebookInfo, Position
    >>> m = Manifest(id=3, notebook=NotebookInfo("k", "k.ipynb"), created=100.0, status="running",
    ...              position=Position("for epoch at 2/10"), cell=CellInfo(execution_count=5))
    >>> status_message(Checkpoint(m, True), now=130.0)["position"]
    'for epoch at 2/10'
    """
    m = ck.manifest
    cell = m.cell if m is not None else None
    position = m.position if m is not None else None
    return {
        "id": ck.id,
        "last": ck.created,
        "now": time.time() if now is None else now,
        "status": ck.status,
        "position": (position.description if position is not None else None) or "",
        "cell": cell.execution_count if cell is not None else None,
    }


class StatusChannel:
    """Subscribes to new checkpoints while the IPython extension is loaded.

    Examples
    --------
    >>> channel = StatusChannel()
    >>> channel.start()
    >>> channel.stop()
    """

    def __init__(self) -> None:
        self.sent = 0
        self._broken = False

    def start(self) -> None:
        events.subscribe(self.on_checkpoint)

    def stop(self) -> None:
        events.unsubscribe(self.on_checkpoint)

    def on_checkpoint(self, ck: Checkpoint) -> None:
        """Called by the capture engine on the kernel's main thread, at a safe point."""
        self.send(status_message(ck))

    def send(self, data: dict[str, Any]) -> None:
        # Looked up on each call: ipykernel installs its own create_comm when it starts.
        import comm

        try:
            channel = comm.create_comm(target_name=TARGET, data=data)
            channel.close()
        except Exception as e:  # the status bar is a nicety; the running cell must go on
            if not self._broken:
                print(
                    f"nbcheckpoint: could not update the JupyterLab status bar ({type(e).__name__}: {e}).",
                    file=sys.stderr,
                )
            self._broken = True
            return
        self.sent += 1
