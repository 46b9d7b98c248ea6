"""Durable byte storage under one root, one module per protocol family, chosen by URL protocol.

``base`` holds the protocol every backend provides; ``local`` a folder on this machine;
``generic`` any fsspec filesystem; ``memory`` and ``s3`` the protocols with fast paths of
their own; ``registry`` maps a URL's protocol to its class. Only ``base``, ``local`` and
``registry`` load with this package: fsspec loads for the first URL that needs it.
"""

from .base import READ_LIMIT, TMP, Backend, FolderSync, Staged, StagingBackend, UnsafeEntry, Writer
from .local import LocalBackend
from .registry import get_backend_class, open_backend, register_implementation

__all__ = [
    "READ_LIMIT",
    "TMP",
    "Backend",
    "FolderSync",
    "LocalBackend",
    "Staged",
    "StagingBackend",
    "UnsafeEntry",
    "Writer",
    "get_backend_class",
    "open_backend",
    "register_implementation",
]
