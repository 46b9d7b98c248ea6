"""The jupyter_server endpoint that lists a notebook's checkpoints straight from its store, no kernel needed.

``GET /nbcheckpoint/api/checkpoints?path=<notebook path relative to the server root>``
answers a JSON list, oldest first. The JupyterLab extension uses it right after a kernel
restart, when the new kernel knows nothing yet, and for the status bar after a page load.

A notebook's checkpoints may sit under several store keys: its stable id (``id=``, else
``metadata.nbcheckpoint.id`` read from the file), the key of its current path (kernels
without the extension), keys its kernels reported (``key=``, e.g. the ``Untitled`` name a
kernel was started with) and older paths (``also=``, in this server's root). All are listed,
each checkpoint with its ``key``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..errors import CheckpointError
from ..store import Checkpoint, CheckpointStore, NotebookRef, default_store_url
from ..store.identity import valid_key

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
            "cell_id": cell.cell_id if cell is not None else None,
        },
        "position": (position.description if position is not None else None) or "",
        "variables": len(m.variables) if m is not None else 0,
        "size": ck.total_bytes,
        "key": ck.notebook,
    }


# A notebook larger than this is not parsed for its id (the frontend sends the id anyway).
_MAX_NOTEBOOK_READ = 20_000_000


def notebook_id_in_file(full: str) -> str | None:
    """``metadata.nbcheckpoint.id`` of the notebook file ``full``, if it has one.

    Examples
    --------
    >>> notebook_id_in_file("/nowhere/train.ipynb") is None
    True
    """
    try:
        if os.path.getsize(full) > _MAX_NOTEBOOK_READ:
            return None
        with open(full, encoding="utf-8") as f:
            metadata = json.load(f).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return None
    value = (metadata.get("nbcheckpoint") or {}).get("id") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and valid_key(value) else None


def list_checkpoints(
    root_dir: str,
    path: str,
    notebook_id: str | None = None,
    keys: Sequence[str] = (),
    also: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The checkpoints of the notebook at API path ``path``, under every key it may have had, oldest first."""
    full = notebook_file(root_dir, path)
    others = [notebook_file(root_dir, p) for p in also]
    for key in keys:
        if not valid_key(key):
            raise ValueError(f"{key!r} is not a store key")
    if notebook_id is not None and not valid_key(notebook_id):
        raise ValueError(f"{notebook_id!r} is not a notebook id")
    ident = notebook_id or notebook_id_in_file(full)
    refs = [NotebookRef.from_path(p) for p in (full, *others)]
    if ident:
        refs.insert(0, NotebookRef.from_id(ident, full))
    refs += [NotebookRef.from_key(k, full) for k in keys]
    urls = dict.fromkeys(default_store_url(p) for p in (full, *others))
    now = time.time()
    runs: list[list[dict[str, Any]]] = []
    for url in urls:
        store = CheckpointStore(url)
        for key in dict.fromkeys(ref.key for ref in refs):
            listed = [describe(ck, now) for ck in store.list(NotebookRef.from_key(key, full))]
            if listed:
                runs.append(listed)
    # Within one key the ids give the order (a damaged checkpoint has no time of its own);
    # the keys a notebook had (renames) go by the time of their first readable checkpoint.
    runs.sort(key=lambda run: min((d["created"] for d in run if d["created"]), default=0.0))
    return [d for run in runs for d in run]


class CheckpointsHandler(APIHandler):
    """``GET ?path=...``: the notebook's checkpoints; 400 on a bad path, 500 on a store error."""

    # Listing checkpoints reveals what the notebook's folder holds: the same
    # permission as reading its contents.
    auth_resource = "contents"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        path = self.get_query_argument("path", "")
        notebook_id = self.get_query_argument("id", None) or None
        keys = self.get_query_arguments("key")
        also = self.get_query_arguments("also")
        # The kernel manager's root is the one it resolves JPY_SESSION_NAME against.
        root_dir = (
            getattr(self.kernel_manager, "root_dir", None) or self.settings["server_root_dir"]
        )
        try:
            found = await asyncio.to_thread(
                list_checkpoints, root_dir, path, notebook_id, keys, also
            )
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from e
        except (CheckpointError, OSError) as e:
            raise web.HTTPError(500, f"could not read the checkpoint store: {e}") from e
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(found))


def setup_handlers(web_app: Any) -> None:
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, ROUTE), CheckpointsHandler)])
