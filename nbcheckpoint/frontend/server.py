"""The jupyter_server endpoint that lists a notebook's checkpoints straight from its store, no kernel needed.

``GET /nbcheckpoint/api/checkpoints?path=<notebook path relative to the server root>``
answers a JSON list, oldest first. The JupyterLab extension uses it right after a kernel
restart, when the new kernel knows nothing yet, and for the status bar after a page load.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..errors import CheckpointError
from ..store import Checkpoint, CheckpointStore, NotebookRef, default_store_url

ROUTE = "nbcheckpoint/api/checkpoints"


def notebook_file(root_dir: str, path: str) -> str:
    """The absolute path of ``path`` (an API path, ``/``-separated) under ``root_dir``.

    It is the path jupyter_server gives the notebook's kernel (``JPY_SESSION_NAME``),
    so the checkpoints found are the ones the kernel wrote. Paths that leave the
    root are refused.

    Examples
    --------
    >>> notebook_file("/srv/nb", "a/train.ipynb")
    '/srv/nb/a/train.ipynb'
    """
    root = os.path.abspath(root_dir)
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or "\\" in path or "\0" in path:
        raise ValueError(f"{path!r} is not a notebook path under the server root")
    full = os.path.abspath(os.path.join(root, *parts))
    if os.path.commonpath([root, full]) != root:
        raise ValueError(f"{path!r} is not a notebook path under the server root")
    return full


def describe(ck: Checkpoint, now: float) -> dict[str, Any]:
    """One checkpoint as the extension shows it.

    ``age`` is measured on the server, so a browser whose clock is off still says
    "3 min ago" correctly. One whose manifest cannot be read comes with ``verified``
    false, its ``problem``, and ``status`` ``damaged`` (or ``newer format``).
    """
    m = ck.manifest
    cell = m.cell if m is not None else None
    position = m.position if m is not None else None
    return {
        "id": ck.id,
        "created": ck.created,
        "age": max(0.0, now - ck.created) if ck.created else None,
        "status": ck.status,
        "verified": ck.verified,
        "problem": ck.problem,
        "pinned": ck.pinned,
        "cell": {
            "execution_count": cell.execution_count if cell is not None else None,
            "first_line": cell.first_line if cell is not None else "",
        },
        "position": (position.description if position is not None else None) or "",
        "variables": len(m.variables) if m is not None else 0,
        "size": ck.total_bytes,
    }


def list_checkpoints(root_dir: str, path: str) -> list[dict[str, Any]]:
    """The checkpoints of the notebook at API path ``path``, oldest first."""
    full = notebook_file(root_dir, path)
    store = CheckpointStore(default_store_url(full))
    now = time.time()
    return [describe(ck, now) for ck in store.list(NotebookRef.from_path(full))]


class CheckpointsHandler(APIHandler):
    """``GET ?path=...``: the notebook's checkpoints; 400 on a bad path, 500 on a store error."""

    # Listing checkpoints reveals what the notebook's folder holds: the same
    # permission as reading its contents.
    auth_resource = "contents"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        path = self.get_query_argument("path", "")
        # The kernel manager's root is the one it resolves JPY_SESSION_NAME against.
        root_dir = (
            getattr(self.kernel_manager, "root_dir", None) or self.settings["server_root_dir"]
        )
        try:
            found = await asyncio.to_thread(list_checkpoints, root_dir, path)
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from e
        except (CheckpointError, OSError) as e:
            raise web.HTTPError(500, f"could not read the checkpoint store: {e}") from e
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(found))


def setup_handlers(web_app: Any) -> None:
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, ROUTE), CheckpointsHandler)])
