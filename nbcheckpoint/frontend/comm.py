"""Kernel side of the status bar: tell JupyterLab about each new checkpoint, on iopub, without a comm.

Each update is one iopub message of type :data:`MSG_TYPE` whose content is the update.
The extension reads it from the kernel connection's iopub stream; output areas and
other frontends ignore a message type they do not know.

Why not a comm: JupyterLab 4.4+ gives each comm target a kernel *subshell*. A comm
opened by the kernel makes the frontend send ``create_subshell_request`` (and
``delete_subshell_request`` when it closes), and the kernel answers each on the
control channel with its own busy/idle status. Those "idle"s reached the status bar
while the ``%%checkpoint`` cell was still running: the kernel was shown Idle at every
checkpoint. A plain iopub message starts no request, so the kernel stays Busy.
A long-lived comm would go deaf after a page reload (the new page does not know its
id); an iopub message reaches whichever pages are connected now.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any

from ..capture import events
from ..store import Checkpoint

MSG_TYPE = "nbcheckpoint_status"
# The ``event`` of each message: a checkpoint landed, or something went wrong that the
# user must see (a store that cannot be written, say) even when the cell's output is
# scrolled away: JupyterLab shows it as a notification.
CHECKPOINT = "checkpoint"
PROBLEM = "problem"
# Variables were brought back from a checkpoint (by the panel, the magic or the
# extension's own Restore): the restart offer has been answered and goes away.
RESTORED = "restored"
# The zmq topic of our iopub messages (ipykernel's comms use b"comm-<id>").
TOPIC = b"nbcheckpoint"


def status_message(ck: Checkpoint, now: float | None = None) -> dict[str, Any]:
    """What the status bar needs about ``ck``.

    ``now`` is the kernel's clock when sending, so the frontend measures the age
    as ``now - last`` plus the time since it received the message, whatever its
    own clock says. ``key`` is the store key the kernel filed it under, so the
    extension can find this kernel's checkpoints after a restart whatever the
    notebook is called by then.

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
        "event": CHECKPOINT,
        "first_line": cell.first_line if cell is not None else "",
        "id": ck.id,
        "last": ck.created,
        "now": time.time() if now is None else now,
        "status": ck.status,
        "position": (position.description if position is not None else None) or "",
        "cell": cell.execution_count if cell is not None else None,
        "key": m.notebook.key if m is not None else "",
    }


def publish(content: dict[str, Any]) -> bool:
    """Send ``content`` on the running ipykernel's iopub channel; False when there is no kernel.

    The message has no parent header: it belongs to no cell. The extension listens to the
    kernel's whole iopub stream, and nothing routes it into an output. With the running
    request's parent, a message sent inside an ipywidgets ``Output`` capture (the panel's
    restore) went to that widget's output hook, and nbclient's hook (papermill, nbconvert
    --execute) raises on a message type it does not know.
    """
    # A running kernel has imported ipykernel already: importing it here (80 ms) would only
    # pause the cell of a plain IPython shell, which has no frontend to tell.
    kernelbase = sys.modules.get("ipykernel.kernelbase")
    if kernelbase is None:
        return False
    Kernel = kernelbase.Kernel
    if not Kernel.initialized():
        return False
    kernel = Kernel.instance()
    if kernel.session is None or kernel.iopub_socket is None:
        return False
    kernel.session.send(
        kernel.iopub_socket,
        MSG_TYPE,
        content,
        parent={},
        ident=TOPIC,
    )
    return True


# How errors.StoreWriteError names what failed, inside the engine's warning.
_STORE_WRITE = re.compile(r"Could not write checkpoint data to (?P<path>.+?): (?P<reason>[^.]+)\.")
# How capture.engine words a checkpoint overdue by OVERDUE x --every.
_OVERDUE = re.compile(
    r"a checkpoint \(store (?P<path>.+?)\) has been due for (?P<late>\d+) s \(every (?P<every>[^)]+)\)"
)


def problem_message(text: str, now: float | None = None) -> dict[str, Any]:
    """A warning the extension shows as a JupyterLab notification.

    JupyterLab cuts a notification at 140 characters, so the store path and the reason are
    sent apart (when the warning names them) for a short message; ``text`` is the whole
    warning, for the notification's details.

    Examples
    --------
    >>> m = problem_message("nbcheckpoint: could not save a checkpoint (Could not write "
    ...     "checkpoint data to /srv/.nbcheckpoint/blobs: Disk quota exceeded. The checkpoint "
    ...     "was abandoned; earlier checkpoints are intact.).", now=1.0)
    >>> (m["event"], m["kind"], m["path"], m["reason"])
    ('problem', 'write', '/srv/.nbcheckpoint/blobs', 'Disk quota exceeded')
    >>> m = problem_message("nbcheckpoint: a checkpoint (store /srv/.nbcheckpoint) has been due "
    ...     "for 3 s (every 1 s) and the cell has not reached a safe point: ...")
    >>> (m["kind"], m["path"], m["reason"])
    ('overdue', '/srv/.nbcheckpoint', 'no safe point for 3 s, every 1 s')
    """
    kind = path = reason = None
    if found := _STORE_WRITE.search(text):
        kind, path, reason = "write", found.group("path"), found.group("reason")
    elif found := _OVERDUE.search(text):
        kind, path = "overdue", found.group("path")
        reason = f"no safe point for {found.group('late')} s, every {found.group('every')}"
    return {
        "event": PROBLEM,
        "kind": kind,
        "text": text,
        "path": path,
        "reason": reason,
        "now": time.time() if now is None else now,
    }


def restored_message(ck: Checkpoint) -> dict[str, Any]:
    """Variables were restored from ``ck`` (the extension takes its restart offer away)."""
    return {"event": RESTORED, "id": ck.id, "key": ck.notebook, "now": time.time()}


def publish_problem(text: str) -> bool:
    """Tell the frontend about a problem; never raises (the caller has printed it already)."""
    try:
        return publish(problem_message(text))
    except Exception:  # the printed warning stands on its own
        return False


class StatusChannel:
    """Subscribes to new checkpoints while the IPython extension is loaded.

    Examples
    --------
    >>> sent = []
    >>> channel = StatusChannel(send=lambda content: sent.append(content) or True)
    >>> channel.start()
    >>> channel.stop()
    """

    def __init__(self, send: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.sent = 0
        self._send = send
        self._broken = False

    def start(self) -> None:
        events.subscribe(self.on_checkpoint)
        events.subscribe(self.on_restored, events.RESTORED)

    def stop(self) -> None:
        events.unsubscribe(self.on_checkpoint)
        events.unsubscribe(self.on_restored, events.RESTORED)

    def on_restored(self, ck: Checkpoint) -> None:
        """Variables came back from ``ck``: JupyterLab's restart offer is answered."""
        self.send(restored_message(ck))

    def on_checkpoint(self, ck: Checkpoint) -> None:
        """Called by the capture engine on the kernel's main thread, at a safe point."""
        self.send(status_message(ck))

    def send(self, data: dict[str, Any]) -> None:
        # Looked up on each call (not bound at import), so tests can replace `publish`.
        sender = self._send or publish
        try:
            delivered = sender(data)
        except Exception as e:  # the status bar is a nicety; the running cell must go on
            if not self._broken:
                print(
                    f"nbcheckpoint: could not update the JupyterLab status bar ({type(e).__name__}: {e}).",
                    file=sys.stderr,
                )
            self._broken = True
            return
        if delivered:
            self.sent += 1
