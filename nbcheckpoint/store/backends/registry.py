"""Which backend class serves which URL protocol (modelled on fsspec's ``registry.py``).

A protocol with its own fast path is one new module and one line in
``known_implementations``; any other protocol fsspec knows is served by the generic
:class:`~nbcheckpoint.store.backends.generic.FsspecBackend`. Classes are named by dotted
path and imported on first use, so fsspec and its plugins load only for a URL.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend

# protocol -> dotted path of the class that serves it.
known_implementations: dict[str, str] = {
    "file": "nbcheckpoint.store.backends.local.LocalBackend",
    "local": "nbcheckpoint.store.backends.local.LocalBackend",
    "memory": "nbcheckpoint.store.backends.memory.MemoryBackend",
    "s3": "nbcheckpoint.store.backends.s3.S3Backend",
    "s3a": "nbcheckpoint.store.backends.s3.S3Backend",
}
GENERIC = "nbcheckpoint.store.backends.generic.FsspecBackend"
_registry: dict[str, type[Any]] = {}


def register_implementation(protocol: str, cls: type[Any] | str, clobber: bool = False) -> None:
    """Serve ``protocol`` with ``cls`` (a class, or the dotted path of one).

    Raises ValueError when the protocol is served already, unless ``clobber``.
    """
    protocol = protocol.lower()
    if not clobber and (protocol in _registry or protocol in known_implementations):
        current = _registry.get(protocol) or known_implementations[protocol]
        raise ValueError(f"{protocol}:// is already served by {current}; pass clobber=True")
    if isinstance(cls, str):
        _registry.pop(protocol, None)
        known_implementations[protocol] = cls
    else:
        _registry[protocol] = cls


def get_backend_class(protocol: str) -> type[Any]:
    """The class that serves ``protocol`` (the generic fsspec backend when none is named)."""
    protocol = protocol.lower()
    if protocol not in _registry:
        module, _, name = known_implementations.get(protocol, GENERIC).rpartition(".")
        _registry[protocol] = getattr(importlib.import_module(module), name)
    return _registry[protocol]


def split_protocol(url: str) -> tuple[str, str]:
    """``("s3", "bucket/x")`` for ``s3://bucket/x``; ``("file", path)`` for a plain path."""
    protocol, sep, rest = url.partition("://")
    if not sep or "/" in protocol or "\\" in protocol:
        return "file", url
    return protocol.lower(), rest


def open_backend(url: str, **options: Any) -> Backend:
    """Return the backend for a folder path or an fsspec URL.

    Examples
    --------
    >>> open_backend("/tmp/ckpts").local
    True
    >>> type(open_backend("memory://ckpts")).__name__
    'MemoryBackend'
    """
    protocol, rest = split_protocol(url)
    cls = get_backend_class(protocol)
    backend: Backend = cls(rest if protocol in ("file", "local") else url, **options)
    return backend
