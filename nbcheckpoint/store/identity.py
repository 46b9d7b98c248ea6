"""Which notebook a checkpoint belongs to, and the store folder key derived from it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import blake3

DEFAULT_DIRNAME = ".nbcheckpoint"
ENV_STORE = "NBCHECKPOINT_STORE"


@dataclass(frozen=True)
class NotebookRef:
    """A notebook: the key that namespaces its checkpoints, and the path shown to people."""

    key: str
    path: str

    @classmethod
    def from_path(cls, path: str) -> NotebookRef:
        """Derive a stable key: the file's stem for reading, a hash of its full path for uniqueness.

        Examples
        --------
        >>> NotebookRef.from_path("/home/ann/train.ipynb").key.startswith("train-")
        True
        """
        full = os.path.abspath(os.path.expanduser(path))
        stem = os.path.splitext(os.path.basename(full))[0] or "notebook"
        return cls(f"{_slug(stem)}-{blake3.blake3(full.encode()).hexdigest()[:10]}", full)

    @classmethod
    def from_key(cls, key: str, path: str | None = None) -> NotebookRef:
        if not valid_key(key):
            raise ValueError(f"{key!r} is not a notebook key")
        return cls(key, path or key)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("._")[:40] or "notebook"


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
