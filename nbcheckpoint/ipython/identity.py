"""Which notebook this kernel runs: what JupyterLab told it, VS Code's file, jupyter_server's session path, or the working folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..store import NotebookRef
from ..store.identity import ENV_NOTEBOOK_ID, valid_key

HEADLESS_NAME = "ipython-session"
# Set by the JupyterLab extension with a silent execution (labextension/src/model.ts):
# {"id": <metadata.nbcheckpoint.id>, "path": <path under the server root>, "root": <server root>}
# and, to restore from an older store key, "key". The leading "__nbc_" keeps it out of
# checkpoints and variable listings.
FRONTEND_NAME = "__nbc_notebook__"


@dataclass(frozen=True)
class FrontendNotebook:
    """What the JupyterLab extension said about the notebook this kernel runs.

    The kernel keeps the path it was started with (``__session__``) across renames and
    restarts; the extension knows the notebook's current path and its stable id.
    """

    id: str | None
    path: str | None
    root: str | None
    key: str | None

    @classmethod
    def from_namespace(cls, user_ns: Mapping[str, Any]) -> FrontendNotebook | None:
        """Read ``__nbc_notebook__``; None when absent. Fields of the wrong type are ignored.

        Examples
        --------
        >>> FrontendNotebook.from_namespace({"__nbc_notebook__": {"id": "a1", "path": "t.ipynb"}}).id
        'a1'
        >>> FrontendNotebook.from_namespace({}) is None
        True
        """
        value = user_ns.get(FRONTEND_NAME)
        if not isinstance(value, Mapping):
            return None

        def text(name: str) -> str | None:
            item = value.get(name)
            return item.strip() if isinstance(item, str) and item.strip() else None

        ident = text("id")
        key = text("key")
        return cls(
            id=ident if ident and valid_key(ident) else None,
            path=text("path"),
            root=text("root"),
            key=key if key and valid_key(key) else None,
        )

    def resolve(self, started_as: str | None) -> str | None:
        """The notebook's absolute path on this machine, or None when it cannot be told.

        Under the server root when that folder exists here (a local kernel); else beside
        the path the kernel was started with (a rename in the same folder).

        Examples
        --------
        >>> FrontendNotebook("a1", "tmp/train.ipynb", "/", None).resolve(None)
        '/tmp/train.ipynb'
        >>> FrontendNotebook("a1", "train.ipynb", None, None).resolve("/w/Untitled.ipynb")
        '/w/train.ipynb'
        """
        if not self.path:
            return None
        parts = [p for p in self.path.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            return None
        if self.root:
            root = os.path.abspath(os.path.expanduser(self.root))
            full = os.path.join(root, *parts)
            if os.path.isdir(os.path.dirname(full)):
                return full
        if started_as:
            return os.path.join(os.path.dirname(os.path.abspath(started_as)), parts[-1])
        return None


def _started_as(user_ns: Mapping[str, Any]) -> str | None:
    for candidate in (user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate.strip():
            return os.path.abspath(os.path.expanduser(candidate.strip()))
    return None


def notebook_path(user_ns: Mapping[str, Any], override: str | None = None) -> str:
    """The notebook's path, or a stable stand-in for plain IPython and headless runs.

    Order: an explicit setting, ``__vsc_ipynb_file__`` (VS Code), the current path the
    JupyterLab extension gave (``__nbc_notebook__``), ``__session__`` (ipykernel copies
    jupyter_server's ``JPY_SESSION_NAME`` there: the path the kernel started with, which a
    rename does not change), ``JPY_SESSION_NAME``, then ``<working folder>/ipython-session``.
    """
    if override:
        return os.path.abspath(os.path.expanduser(override))
    vscode = user_ns.get("__vsc_ipynb_file__")
    if isinstance(vscode, str) and vscode.strip():
        return os.path.abspath(os.path.expanduser(vscode.strip()))
    started_as = _started_as(user_ns)
    frontend = FrontendNotebook.from_namespace(user_ns)
    if frontend is not None:
        current = frontend.resolve(started_as)
        if current:
            return current
    if started_as:
        return started_as
    return os.path.join(os.getcwd(), HEADLESS_NAME)


def notebook_ref(
    user_ns: Mapping[str, Any], override: str | None = None, notebook_id: str | None = None
) -> NotebookRef:
    """The notebook's key in the store.

    Order: an explicit id (``Checkpoint.notebook_id``), ``$NBCHECKPOINT_NOTEBOOK_ID``, the key
    or id the JupyterLab extension gave (the id kept in the notebook's metadata, which
    follows it across renames and moves), then a key from its path (see
    ``NotebookRef.from_path``): the fallback when there is no frontend to ask.

    Examples
    --------
    >>> ns = {"__session__": "/w/Untitled.ipynb",
    ...       "__nbc_notebook__": {"id": "f00d", "path": "train.ipynb"}}
    >>> ref = notebook_ref(ns)
    >>> (ref.key, ref.path)
    ('f00d', '/w/train.ipynb')
    """
    path = notebook_path(user_ns, override)
    chosen = notebook_id or os.environ.get(ENV_NOTEBOOK_ID)
    if chosen and chosen.strip():
        return NotebookRef.from_id(chosen, path)
    frontend = FrontendNotebook.from_namespace(user_ns)
    if frontend is not None and frontend.key:
        return NotebookRef.from_key(frontend.key, path)
    if frontend is not None and frontend.id:
        return NotebookRef.from_id(frontend.id, path)
    return NotebookRef.from_path(path)
