"""The jupyter_server endpoints that list and compare a notebook's checkpoints straight from its store, no kernel needed.

``GET /nbcheckpoint/api/checkpoints?path=<notebook path relative to the server root>``
answers a JSON list, oldest first. The JupyterLab extension uses it right after a kernel
restart, when the new kernel knows nothing yet, and for the status bar after a page load.

A notebook's checkpoints may sit under several store keys: its stable id (``id=``, else
``metadata.nbcheckpoint.id`` read from the file), the key of its current path (kernels
without the extension), keys its kernels reported (``key=``, e.g. the ``Untitled`` name a
kernel was started with) and older paths (``also=``, in this server's root). All are listed,
each checkpoint with its ``key``.

``GET /nbcheckpoint/api/diff?path=...&a=<key>:<id>&b=<key>:<id>`` compares two of them
(``nbcheckpoint.store.diff``: from the signed manifests, nothing is unpickled): 400 for a
malformed argument, 404 for an unknown checkpoint, 422 for one whose manifest cannot be
read or trusted, each with a message naming it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any

try:
    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web
except ImportError as e:  # a kernel-only environment: the kernel side needs none of this
    raise ImportError(
        f"The nbcheckpoint server endpoint needs jupyter_server ({e.name or e} is missing): "
        "pip install 'nbcheckpoint[lab]'"
    ) from e

from ..errors import CheckpointError, CheckpointNotFound, VerificationError
from ..store import Checkpoint, CheckpointStore, NotebookRef, default_store_url
from ..store.diff import Side, diff_sides, read_side
from ..store.identity import valid_key

ROUTE = "nbcheckpoint/api/checkpoints"
DIFF_ROUTE = "nbcheckpoint/api/diff"


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


def parse_ref(text: str) -> tuple[str, int]:
    """``<store key>:<id>`` as the listing gives them (``key`` and ``id``).

    Examples
    --------
    >>> parse_ref("train-1a2b3c4d5e:12")
    ('train-1a2b3c4d5e', 12)
    """
    key, sep, ident = text.rpartition(":")
    if not sep or not valid_key(key):
        raise ValueError(f"{text[:80]!r} is not a checkpoint reference (store key:id)")
    digits = ident.removeprefix("#")
    if not (digits.isdigit() and len(digits) <= 15 and int(digits) >= 1):
        raise ValueError(f"{ident[:20]!r} is not a checkpoint id")
    return key, int(digits)


def _find_side(urls: Sequence[str], full: str, key: str, ident: int) -> Side:
    missing: CheckpointNotFound | None = None
    for url in urls:
        try:
            return read_side(CheckpointStore(url), NotebookRef.from_key(key, full), ident)
        except CheckpointNotFound as e:
            missing = e
    assert missing is not None
    raise missing


def diff_at(
    root_dir: str, path: str, before: str, after: str, also: Sequence[str] = ()
) -> dict[str, Any]:
    """The comparison of checkpoints ``before`` and ``after`` (``key:id``) of the notebook at
    API path ``path``, as JSON-ready data (see :meth:`Diff.to_dict`)."""
    full = notebook_file(root_dir, path)
    others = [notebook_file(root_dir, p) for p in also]
    a, b = parse_ref(before), parse_ref(after)
    urls = list(dict.fromkeys(default_store_url(p) for p in (full, *others)))
    diff = diff_sides(_find_side(urls, full, *a), _find_side(urls, full, *b))
    return diff.to_dict()


class DiffHandler(APIHandler):
    """``GET ?path=...&a=key:id&b=key:id``: two checkpoints compared, variable by variable."""

    auth_resource = "contents"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        path = self.get_query_argument("path", "")
        before = self.get_query_argument("a", "")
        after = self.get_query_argument("b", "")
        also = self.get_query_arguments("also")
        root_dir = (
            getattr(self.kernel_manager, "root_dir", None) or self.settings["server_root_dir"]
        )
        try:
            found = await asyncio.to_thread(diff_at, root_dir, path, before, after, also)
        except ValueError as e:
            raise web.HTTPError(400, str(e), reason="Bad checkpoint reference") from e
        except CheckpointNotFound as e:
            raise web.HTTPError(404, str(e), reason="No such checkpoint") from e
        except VerificationError as e:
            raise web.HTTPError(422, str(e), reason="Checkpoint cannot be read") from e
        except (CheckpointError, OSError) as e:
            raise web.HTTPError(500, f"could not read the checkpoint store: {e}") from e
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(found))


def setup_handlers(web_app: Any) -> None:
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base_url, ROUTE), CheckpointsHandler),
            (url_path_join(base_url, DIFF_ROUTE), DiffHandler),
        ],
    )
