"""Storage layer: serializer, signed manifests, content-addressed blobs; imports no IPython."""

from .identity import NotebookRef, default_store_url
from .records import Checkpoint, Restored
from .serializer import Snapshot, serialize
from .signing import SigningKey, load_key
from .store import CheckpointStore

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
