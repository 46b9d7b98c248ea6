"""Content addresses and fast hashes, and the threads that compute them.

The address of a blob is the BLAKE3 of its bytes; an unchanged buffer is recognised by a
fast xxh3-128, which runs with the GIL released so that worker threads hash while the main
thread pickles (``_HashQueue``). ``single_threaded`` turns every thread off, for a forked
child. Imports nothing from the rest of the store.
"""

from __future__ import annotations

import builtins
import ctypes
import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

import blake3
import xxhash

# Worker threads are off in a forked child: a thread pool inherited through fork is dead.
THREADS = {"enabled": True}


def single_threaded() -> None:
    """Call in a forked child before saving: hash and compress on the calling thread only."""
    THREADS["enabled"] = False


def digest(data: memoryview | bytes | bytearray, *, threads: bool = True) -> str:
    """The blob address: BLAKE3 of the raw bytes, multi-threaded for large buffers."""
    view = memoryview(data)
    many = threads and view.nbytes > (1 << 20) and THREADS["enabled"]
    threads_ = blake3.blake3.AUTO if many else 1
    return blake3.blake3(view, max_threads=threads_).hexdigest()


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer``, to lend a buffer's address to a C function."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


def address_of(view: memoryview) -> int:
    """The address of a buffer's first byte."""
    buf = _PyBuffer()
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.restype = ctypes.c_int
    get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    release = ctypes.pythonapi.PyBuffer_Release
    release.restype = None
    release.argtypes = [ctypes.POINTER(_PyBuffer)]
    if get(view, ctypes.byref(buf), 0) != 0:
        raise BufferError("no buffer")
    try:
        return int(buf.buf or 0)
    finally:
        release(ctypes.byref(buf))


class _XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


def _load_xxh3() -> Callable[[memoryview], str] | None:
    """xxh3-128 that releases the GIL: the C function inside python-xxhash, through ctypes.

    python-xxhash holds the GIL while it hashes (measured: a thread hashing 1 GiB stops
    every other thread for its ~100 ms), so hashes could not overlap with the pickling of
    small objects. ctypes releases the GIL around a foreign call. Used only when the
    extension exports the function and gives the same digests; else None.
    """
    try:
        lib = ctypes.CDLL(importlib.import_module("xxhash._xxhash").__file__)
        fn = getattr(lib, "XXH3_128bits_dispatch", None) or lib.XXH3_128bits
        get_buffer = ctypes.pythonapi.PyObject_GetBuffer
        release = ctypes.pythonapi.PyBuffer_Release
    except (ImportError, OSError, AttributeError):  # pragma: no cover - another build
        return None
    fn.restype = _XXH128
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    get_buffer.restype = ctypes.c_int
    get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    release.restype = None
    release.argtypes = [ctypes.POINTER(_PyBuffer)]

    def xxh3(view: memoryview) -> str:
        buf = _PyBuffer()
        get_buffer(view, ctypes.byref(buf), 0)  # PyBUF_SIMPLE: contiguous bytes
        try:
            out = fn(buf.buf, buf.len)
        finally:
            release(ctypes.byref(buf))
        return f"{out.high64:016x}{out.low64:016x}"

    probe = memoryview(bytes(range(256)) * 1031)
    for sample in (probe, probe[:0], probe[7:250]):
        if xxh3(sample) != xxhash.xxh3_128_hexdigest(sample):  # pragma: no cover
            return None
    return xxh3


_XXH3 = _load_xxh3()


def fast_hash(view: memoryview) -> str:
    """xxh3-128 of ``view``, the GIL released while it hashes when possible."""
    if _XXH3 is not None:
        return _XXH3(view)
    return xxhash.xxh3_128_hexdigest(view)


def _parallel(work: Callable[[Any], Any], items: builtins.list[Any]) -> builtins.list[Any]:
    """``[work(x) for x in items]`` on a few threads; the first error is raised as is.

    After an error no further item is started (a save that failed is abandoned, not
    pushed on); items already running finish on their own.
    """
    if len(items) < 2 or not THREADS["enabled"]:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    failed = threading.Event()

    def guarded(item: Any) -> Any:
        if failed.is_set():
            return None
        try:
            return work(item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=min(4, len(items))) as pool:
        return builtins.list(pool.map(guarded, items))


_HASH_POOL: dict[str, Any] = {}


def _hash_threads() -> int:
    """Threads that hash beside the pickling main thread: one core is the pickler's."""
    if not THREADS["enabled"]:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use, not the machine
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


def _pool(name: str) -> Any:
    """The process's pool of 4 threads for ``name`` work, made on first use."""
    pool = _HASH_POOL.get(name)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"nbcheckpoint-{name}")
        _HASH_POOL[name] = pool
    return pool


def _hash_pool() -> Any:
    return _pool("hash")


def _stage_pool() -> Any:
    """Threads that write a save's new blobs to temp files while it is still pickling."""
    return _pool("stage")


if hasattr(os, "register_at_fork"):
    # A forked child inherits the pool without its threads; it must build its own.
    os.register_at_fork(after_in_child=_HASH_POOL.clear)


class _HashQueue:
    """Items hashed by worker threads as they are added, and by the adder once it is done.

    ``finish`` returns the results in the order of ``add``, or raises the first error;
    after an error no further item is started.
    """

    def __init__(self, work: Callable[[Any], Any], threads: int) -> None:
        self.items: builtins.list[Any] = []
        self._work = work
        self._results: builtins.list[Any] = []
        self._next = 0
        self._done = 0
        self.threads = threads
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        pool = _hash_pool() if threads else None
        self._workers = [pool.submit(self._run) for _ in range(threads)] if pool else []

    def add(self, item: Any) -> int:
        with self._cond:
            self.items.append(item)
            self._results.append(None)
            self._cond.notify()
            return len(self.items) - 1

    def _take(self, wait: bool) -> int | None:
        with self._cond:
            while True:
                if self._error is None and self._next < len(self.items):
                    self._next += 1
                    return self._next - 1
                if self._closed or self._error is not None or not wait:
                    return None
                self._cond.wait()

    def _run(self, wait: bool = True) -> None:
        while (index := self._take(wait)) is not None:
            try:
                self._results[index] = self._work(self.items[index])
                self._done += 1  # under the GIL; read only as a hint by ``working``
            except BaseException as e:
                with self._cond:
                    if self._error is None:
                        self._error = e
                    self._cond.notify_all()
                return

    def working(self) -> bool:
        """Whether items wait or are being worked on (a hint, read without the lock)."""
        return self._done < len(self.items) and self._error is None

    def finish(self) -> builtins.list[Any]:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._run(wait=False)
        for worker in self._workers:
            worker.result()
        if self._error is not None:
            raise self._error
        return self._results
