"""Storage layer: serializer, signed manifests, content-addressed blobs; imports no IPython.

The names below load on first use: the pager process (:mod:`.pagerd`) imports a few
modules of this package, not the whole store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .identity import NotebookRef as NotebookRef
    from .identity import default_store_url as default_store_url
    from .records import Checkpoint as Checkpoint
    from .records import Restored as Restored
    from .serializer import Snapshot as Snapshot
    from .serializer import serialize as serialize
    from .signing import SigningKey as SigningKey
    from .signing import load_key as load_key
    from .store import CheckpointStore as CheckpointStore

_WHERE = {
    "Checkpoint": "records",
    "CheckpointStore": "store",
    "NotebookRef": "identity",
    "Restored": "records",
    "SigningKey": "signing",
    "Snapshot": "serializer",
    "default_store_url": "identity",
    "load_key": "signing",
    "serialize": "serializer",
}

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "NotebookRef",
    "Restored",
    "SigningKey",
    "Snapshot",
    "default_store_url",
    "load_key",
    "serialize",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
