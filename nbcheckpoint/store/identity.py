"""Which notebook a checkpoint belongs to, and the store folder key derived from it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import blake3

DEFAULT_DIRNAME = ".nbcheckpoint"
ENV_STORE = "NBCHECKPOINT_STORE"
ENV_NOTEBOOK_ID = "NBCHECKPOINT_NOTEBOOK_ID"
# A folder holding one of these is a project root: keys are paths relative to it.
ROOT_MARKERS = (".git", "pyproject.toml", ".nbcheckpoint-root")


@dataclass(frozen=True)
class NotebookRef:
    """A notebook: the key that namespaces its checkpoints, and the path shown to people."""

    key: str
    path: str

    @classmethod
    def from_path(cls, path: str) -> NotebookRef:
        """Derive a key that is the same on every machine: the file's stem, for reading, and a
        hash of its path relative to its project root (see :func:`project_path`).

        The same notebook, checked out in another folder or on another machine, has the same
        key, so a shared store (``s3://...``) finds its checkpoints there; notebooks of one
        folder, which share the default store beside them, never share a key.

        Examples
        --------
        >>> NotebookRef.from_path("/home/ann/train.ipynb").key.startswith("train-")
        True
        """
        full = os.path.abspath(os.path.expanduser(path))
        stem = os.path.splitext(os.path.basename(full))[0] or "notebook"
        return cls(f"{_slug(stem)}-{_hash(project_path(full))}", full)

    @classmethod
    def from_id(cls, notebook_id: str, path: str | None = None) -> NotebookRef:
        """A key chosen by the user (``NBCHECKPOINT_NOTEBOOK_ID``, ``Checkpoint.notebook_id``).

        An id that is a valid key is the key itself; another one (``team/train v2``) becomes
        a readable slug plus a hash of the id.

        Examples
        --------
        >>> NotebookRef.from_id("train-v2", "/home/ann/train.ipynb").key
        'train-v2'
        >>> NotebookRef.from_id("team/train v2").key.startswith("team_train_v2-")
        True
        """
        text = notebook_id.strip()
        if not text:
            raise ValueError("a notebook id cannot be empty")
        key = text if valid_key(text) else f"{_slug(text)}-{_hash(text)}"
        return cls(key, path or text)

    @classmethod
    def from_key(cls, key: str, path: str | None = None) -> NotebookRef:
        if not valid_key(key):
            raise ValueError(f"{key!r} is not a notebook key")
        return cls(key, path or key)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("._")[:40] or "notebook"


def _hash(text: str) -> str:
    return blake3.blake3(text.encode()).hexdigest()[:10]


def project_root(path: str) -> str | None:
    """The nearest folder above ``path`` that holds ``.git``, ``pyproject.toml`` or
    ``.nbcheckpoint-root``; None when there is none up to the filesystem root.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> top = pathlib.Path(tempfile.mkdtemp())
    >>> (top / ".nbcheckpoint-root").touch()
    >>> project_root(str(top / "a" / "b.ipynb")) == str(top)
    True
    """
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    while True:
        if any(os.path.exists(os.path.join(folder, marker)) for marker in ROOT_MARKERS):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def project_path(path: str) -> str:
    """``path`` relative to its project root, ``/``-separated; its file name without a project.

    Examples
    --------
    >>> project_path("/nowhere/with/no/markers/train.ipynb")
    'train.ipynb'
    """
    full = os.path.abspath(os.path.expanduser(path))
    root = project_root(full)
    if root is None:
        return os.path.basename(full)
    return os.path.relpath(full, root).replace(os.sep, "/")


_KEY = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,80}$")


def valid_key(key: str) -> bool:
    """Keys come from the store's folder names, which are untrusted: no path tricks."""
    return bool(_KEY.match(key)) and key not in {".", ".."}


def default_store_url(notebook_path: str | None) -> str:
    """``$NBCHECKPOINT_STORE``, else ``.nbcheckpoint/`` beside the notebook (or the working folder)."""
    env = os.environ.get(ENV_STORE)
    if env:
        return env
    folder = os.path.dirname(os.path.abspath(notebook_path)) if notebook_path else os.getcwd()
    return os.path.join(folder, DEFAULT_DIRNAME)
