"""Which notebook this kernel runs: jupyter_server's session path, VS Code's file, or the working folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..store import NotebookRef
from ..store.identity import ENV_NOTEBOOK_ID

HEADLESS_NAME = "ipython-session"


def notebook_path(user_ns: Mapping[str, Any], override: str | None = None) -> str:
    """The notebook's path, or a stable stand-in for plain IPython and headless runs.

    Order: an explicit setting, ``__vsc_ipynb_file__`` (VS Code), ``__session__``
    (ipykernel copies jupyter_server's ``JPY_SESSION_NAME`` there), ``JPY_SESSION_NAME``,
    then ``<working folder>/ipython-session``.
    """
    if override:
        return os.path.abspath(os.path.expanduser(override))
    for candidate in (
        user_ns.get("__vsc_ipynb_file__"),
        user_ns.get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return os.path.abspath(os.path.expanduser(candidate.strip()))
    return os.path.join(os.getcwd(), HEADLESS_NAME)


def notebook_ref(
    user_ns: Mapping[str, Any], override: str | None = None, notebook_id: str | None = None
) -> NotebookRef:
    """The notebook's key in the store: an explicit id, ``$NBCHECKPOINT_NOTEBOOK_ID``, or its path.

    A key from a path is the same on every machine (see ``NotebookRef.from_path``); an id
    names the notebook when its place in the project differs between machines.
    """
    path = notebook_path(user_ns, override)
    chosen = notebook_id or os.environ.get(ENV_NOTEBOOK_ID)
    if chosen and chosen.strip():
        return NotebookRef.from_id(chosen, path)
    return NotebookRef.from_path(path)
