"""Operating-system handles (open files, sockets, processes, threads) are never saved, and a
restore never reopens one: it must not touch the file system outside the store.

dill pickles an open file as "reopen this path in this mode": a file written with ``'w'``
comes back truncated to 0 bytes. Our pickler refuses such handles with a reason, and our
unpicklers refuse dill's file reconstruction, so a checkpoint written by an older version
cannot truncate a user's file either.
"""

from __future__ import annotations

import io
import pickle
import sys
import threading
from typing import Any

#: dill's function that reopens a file by name while unpickling.
_FILE_OPENERS = {("dill._dill", "_create_filehandle"), ("dill.dill", "_create_filehandle")}

_FILE_TYPES: tuple[type, ...] = (
    io.FileIO,
    io.BufferedReader,
    io.BufferedWriter,
    io.BufferedRandom,
    io.BufferedRWPair,
    io.TextIOWrapper,
)
_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


class HandleError(pickle.PicklingError):
    """An object holds an operating-system handle, which a checkpoint never saves."""

    def __init__(self, obj: object, reason: str) -> None:
        super().__init__(reason)
        self.obj = obj
        self.reason = reason


class HandleRefused(pickle.UnpicklingError):
    """A checkpoint asked to reopen a file while loading; the restore refused."""


def _file_types() -> tuple[type, ...]:
    pyio = sys.modules.get("_pyio")  # dill registers the pure-Python file types too
    if pyio is None:
        return _FILE_TYPES
    return (
        *_FILE_TYPES,
        pyio.FileIO,
        pyio.BufferedReader,
        pyio.BufferedWriter,
        pyio.BufferedRandom,
        pyio.TextIOWrapper,
    )


def _file_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if name is None:
        name = getattr(getattr(obj, "buffer", None), "name", None)
    return repr(name) if isinstance(name, (str, bytes)) else f"descriptor {name}"


def _handle_bases() -> tuple[type, ...]:
    """The handle classes of the modules loaded so far (an object of a module not yet
    imported cannot exist, so a type judged before the import is judged right)."""
    bases = [*_file_types(), threading.Thread]
    for module, names in (
        ("socket", ("socket",)),
        ("mmap", ("mmap",)),
        ("sqlite3", ("Connection", "Cursor")),
        ("subprocess", ("Popen",)),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            bases.extend(getattr(loaded, name) for name in names)
    return tuple(bases)


# Type -> whether its instances are handles: the pickler asks about every object it meets.
_IS_HANDLE: dict[type, bool] = {}


def handle_reason(obj: object) -> str | None:
    """Why ``obj`` cannot be saved, when it is an operating-system handle; else None.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryFile() as f:
    ...     handle_reason(f).endswith("file handles are not saved; open the file again after a restore")
    True
    >>> handle_reason([1, 2]) is None
    True
    """
    kind = type(obj)
    known = _IS_HANDLE.get(kind)
    if known is None:
        known = _IS_HANDLE[kind] = issubclass(kind, _handle_bases())
    if not known:
        return None
    if isinstance(obj, _file_types()):
        state = "closed file" if obj.closed else "open file"  # type: ignore[attr-defined]
        return (
            f"{state} {_file_name(obj)}: file handles are not saved; "
            "open the file again after a restore"
        )
    socket = sys.modules.get("socket")
    if socket is not None and isinstance(obj, socket.socket):
        return "socket: network connections are not saved; connect again after a restore"
    mmap = sys.modules.get("mmap")
    if mmap is not None and isinstance(obj, mmap.mmap):
        return "mmap.mmap: memory maps are not saved; map the file again after a restore"
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(obj, (sqlite3.Connection, sqlite3.Cursor)):
        return (
            f"{type(obj).__module__}.{type(obj).__qualname__}: database connections are not "
            "saved; connect again after a restore"
        )
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None and isinstance(obj, subprocess.Popen):
        return (
            f"subprocess (pid {obj.pid}): processes are not saved; start it again after a restore"
        )
    if isinstance(obj, threading.Thread):
        return f"thread {obj.name!r}: threads are not saved; start it again after a restore"
    return f"{kind.__module__}.{kind.__qualname__}: operating-system handles are not saved"


def fresh_lock(obj: object) -> tuple[Any, tuple[()]] | None:
    """A reduction that restores a lock unlocked, or None when ``obj`` is no lock.

    Whoever held it (a thread, or the cell's own ``with lock:``, which a resumed cell
    enters again) does not exist in the new kernel: a lock restored held would deadlock.
    """
    if type(obj) is _LOCK:
        return threading.Lock, ()
    if type(obj) is _RLOCK:
        return threading.RLock, ()
    return None


def _refuse_file(name: Any, mode: Any, position: Any, closed: Any, open: Any, *rest: Any) -> object:
    state = "closed" if closed else "open"
    raise HandleRefused(
        f"{state} file {name!r} (mode {mode!r}) was not reopened: a restore never opens "
        "your files; open it again yourself"
    )


class GuardedUnpickler(pickle.Unpickler):
    """The C unpickler, with dill's file reopening replaced by a refusal."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FILE_OPENERS:
            return _refuse_file
        return super().find_class(module, name)


_DILL_UNPICKLER: type | None = None


def _dill_unpickler() -> type:
    global _DILL_UNPICKLER
    if _DILL_UNPICKLER is None:
        import dill

        class DillUnpickler(dill.Unpickler):  # type: ignore[misc]
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) in _FILE_OPENERS:
                    return _refuse_file
                return super().find_class(module, name)

        _DILL_UNPICKLER = DillUnpickler
    return _DILL_UNPICKLER


def guarded_loads(payload: bytes, buffers: Any = None, use_dill: bool = True) -> Any:
    """Unpickle ``payload`` (with dill, or the C unpickler), refusing to reopen any file.

    Examples
    --------
    >>> import dill, tempfile
    >>> with tempfile.NamedTemporaryFile("w") as f:
    ...     data = dill.dumps(f)
    >>> guarded_loads(data)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nbcheckpoint.store.handles.HandleRefused: open file ... was not reopened: ...
    """
    data = io.BytesIO(payload)
    unpickler = _dill_unpickler() if use_dill else GuardedUnpickler
    return unpickler(data, buffers=buffers).load()
