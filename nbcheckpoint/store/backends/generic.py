"""Durable byte storage at any fsspec URL (GCS, Azure, HTTP, ...): create-if-absent, retries, bounded ranged reads.

Protocols with their own fast paths subclass :class:`FsspecBackend` in a module of their
own (``s3.py``, ``memory.py``); ``registry.py`` picks the class from the URL's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import blake3

from ...errors import StoreEntryRefused, StoreError, StoreWriteError
from .base import (
    READ_LIMIT,
    TMP,
    FolderSync,
    UnsafeEntry,
    Writer,
    is_tmp_name,
    leftover_is_dead,
    tmp_name,
    too_large,
)

# Object stores: how often to try an operation that failed for a passing reason (a dropped
# connection, a timeout, a 5xx answer), and the first pause between tries (doubled each time).
ATTEMPTS = 4
BACKOFF = 0.25
MAX_BACKOFF = 4.0
# After an ambiguous create (an error, then "it exists"), objects up to this size are read
# back and compared with what was sent, to tell our own write from another writer's.
MATCH_LIMIT = 4 << 20
# Stale multipart uploads and probe objects are looked for at most this often.
CLEANUP_EVERY = 600.0
# On a store without conditional writes, one lock keeps this process's writers from racing.
_CHECKED_CREATE_LOCK = threading.Lock()
_log = logging.getLogger(__name__)

_TRANSIENT_TYPES = frozenset(
    {
        # botocore
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "HTTPClientError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "IncompleteReadError",
        # aiohttp, fsspec, http.client
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ServerTimeoutError",
        "FSTimeoutError",
        "IncompleteRead",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "500",
        "502",
        "503",
        "504",
    }
)


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _response(e: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and error code of a botocore ``ClientError`` (None, None for others)."""
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return None, None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    return (status if isinstance(status, int) else None), (str(code) if code else None)


def _transient(e: BaseException) -> bool:
    """True for failures that may pass: connection trouble, timeouts, 5xx and throttling.

    Looks through the chain of causes, because s3fs re-raises botocore's errors as OSError.
    """
    for err in _causes(e):
        if isinstance(err, (FileNotFoundError, FileExistsError, PermissionError)):
            return False
        if isinstance(err, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return True
        if _TRANSIENT_TYPES & {t.__name__ for t in type(err).__mro__}:
            return True
        if type(err).__name__ == "ConnectionError" and "botocore" in type(err).__module__:
            return True
        status, code = _response(err)
        if (status is not None and status >= 500) or code in _TRANSIENT_CODES:
            return True
    return False


def _already_exists(e: BaseException) -> bool:
    """A refused create-if-absent: FileExistsError, or a 412 that s3fs did not translate."""
    for err in _causes(e):
        if isinstance(err, FileExistsError):
            return True
        if isinstance(err, OSError) and err.errno == errno.EEXIST:
            return True
        status, code = _response(err)
        if status == 412 or code == "PreconditionFailed":
            return True
    return False


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if _transient(e):
        return f"the store did not answer ({text})"
    return text


class _FsFailure(Exception):
    """Wraps an error raised by the filesystem during an upload, to tell it from the writer's own."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Digest:
    """Size and BLAKE3 of the bytes sent, the latter only while they are few."""

    def __init__(self) -> None:
        self.size = 0
        self._hash: Any = blake3.blake3()

    def update(self, piece: memoryview) -> None:
        self.size += piece.nbytes
        if self._hash is not None:
            if self.size > MATCH_LIMIT:
                self._hash = None
            else:
                self._hash.update(piece)

    def matches(self, data: bytes) -> bool:
        if self._hash is None or len(data) != self.size:
            return False
        return bool(blake3.blake3(data).digest() == self._hash.digest())


class _ChunkedWriter:
    """What a ``Writer`` writes into: passes the upload at most one block per call.

    s3fs copies each ``write`` into its buffer before sending a part, so one write of a
    1 GiB buffer would hold a second GiB in memory; block-sized pieces keep the extra
    memory to about two blocks, and a part is sent as soon as a block is full.
    """

    def __init__(self, f: Any, digest: _Digest, chunk: int) -> None:
        self._f = f
        self._digest = digest
        self._chunk = max(chunk, 1 << 20)
        self._pos = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        for start in range(0, view.nbytes, self._chunk):
            piece = view[start : start + self._chunk]
            try:
                self._f.write(piece)
            except Exception as e:
                raise _FsFailure(e) from e
            self._digest.update(piece)
        self._pos += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def flush(self) -> None:
        return None  # parts go out as blocks fill; the object appears only at commit

    @property
    def closed(self) -> bool:
        return False


class _RangeReader:
    """A read-only, seekable file over one object, read with ranged GETs.

    No HEAD first, and one GET for an object smaller than a block (most blobs): the first
    block is fetched when the file opens, so a missing object raises FileNotFoundError
    there. Small reads are served from the last block fetched; a read of a block or more
    goes straight to the store, at most one block per call, so memory stays bounded. Each
    GET is retried on passing failures; the position moves only when one succeeds.

    With ``limit``, an object larger than that is refused before its first byte is
    fetched, and no GET ever asks for more than ``limit + 1`` bytes from the start.
    """

    def __init__(
        self, backend: FsspecBackend, path: str, block: int, limit: int | None = None
    ) -> None:
        self._backend = backend
        self._path = path
        self._block = max(block, 64 << 10)
        self._limit = limit
        self._cap = None if limit is None else limit + 1
        self._first = True
        self._pos = 0
        self._size: int | None = None
        self._buf = memoryview(b"")
        self._buf_start = 0
        self.closed = False
        self._fill(0)

    def _get(self, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (fewer at the end of the object, none beyond it)."""
        if self._cap is not None:
            end = min(end, self._cap)
        if start >= end or (self._size is not None and start >= self._size):
            return b""
        limit, self._first = (self._limit if self._first else None), False
        try:
            data, total = self._backend._get_range(self._path, start, end, limit)
        except StoreError as e:
            if not _beyond_end(e):
                raise
            self._size = self._backend.size(self._path)  # 416: start is at or past the end
            return b""
        if total is not None:
            self._size = total
        elif len(data) < end - start:
            self._size = start + len(data)
        return data

    def _fill(self, pos: int) -> None:
        self._buf = memoryview(self._get(pos, pos + self._block))
        self._buf_start = pos

    def _buffered(self) -> memoryview:
        off = self._pos - self._buf_start
        return self._buf[off:] if 0 <= off < len(self._buf) else memoryview(b"")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        ready = self._buffered()
        if not ready and view.nbytes < self._block:
            self._fill(self._pos)
            ready = self._buffered()
        if ready:
            n = min(view.nbytes, ready.nbytes)
            view[:n] = ready[:n]
        else:
            data = self._get(self._pos, self._pos + min(view.nbytes, self._block))
            n = len(data)
            view[:n] = data
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); fewer only at the end."""
        if size is None or size < 0:
            if self._size is None:
                self._size = self._backend.size(self._path)
            end = self._size if self._cap is None else min(self._size, self._cap)
            size = max(end - self._pos, 0)
        out = bytearray(size)
        got = 0
        while got < size:
            n = self.readinto(memoryview(out)[got:])
            if not n:
                break
            got += n
        del out[got:]
        return bytes(out)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            if self._size is None:
                self._size = self._backend.size(self._path)
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._buf = memoryview(b"")


def _beyond_end(e: BaseException) -> bool:
    for err in _causes(e):
        status, code = _response(err)
        if status == 416 or code == "InvalidRange":
            return True
    return False


def _abandon(f: Any) -> None:
    """Drop an unfinished upload so that nothing of it becomes visible."""
    with contextlib.suppress(Exception):
        f.discard()  # s3fs: aborts the multipart upload
    with contextlib.suppress(Exception):
        # fsspec's close() (and __del__) would commit whatever was written so far.
        f.closed = True


def _constant(data: bytes) -> Writer:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


class FsspecBackend:
    """Any fsspec filesystem (GCS, Azure, HTTP, ...) under one URL; the base of S3 and memory.

    Only complete objects become visible. Each object is written once under its final
    name: object stores publish a PUT or a multipart upload whole, so a writer killed
    mid-upload leaves nothing visible (an unfinished multipart upload, which
    ``cleanup_tmp`` aborts once it is older than gc's grace period). A failed write is
    abandoned (the multipart upload aborted), never committed half-written.

    ``create`` is create-if-absent: ``open(mode="xb")`` (s3fs sends it as
    ``If-None-Match: *``). Whether the store honours it is probed once per backend, at
    the first write (an object under ``tmp/`` created twice must fail the second time).
    Where it is not honoured, ``create`` checks, writes and reads back, under a lock
    within this process; two processes saving the same notebook at the same moment can
    then still race, which is logged as a warning.

    Transient failures (connection errors, timeouts, 5xx, throttling) are retried
    ``attempts`` times with jittered exponential backoff; a create that failed this way is
    retried only after checking that it did not succeed. Other failures raise
    :class:`StoreError` (:class:`StoreWriteError` for writes); a missing object raises
    ``FileNotFoundError``. Credentials come from the filesystem's usual places; none of
    them is ever written into the store.

    Reads are bounded: ``read`` refuses an object larger than its ``limit`` before a byte
    of it is fetched (one look-up of its size first, which a subclass may fold into the
    GET), and never fetches more than ``limit + 1`` bytes. Object stores have no links
    nor special files, so ``unsafe_entries`` finds none.

    Thread safety: one instance may be used from several threads at once, for example a
    background writer and the kernel's main thread. fsspec runs every call on its own
    event-loop thread; what this class remembers (the probe's answer, recently renewed
    objects, the last cleanup) is guarded by ``self._lock``; uploads hold no lock and run
    in parallel.

    Examples
    --------
    >>> from nbcheckpoint.store.backends import open_backend
    >>> b = open_backend("memory://doc-example")
    >>> b.create("a/b", lambda f: f.write(b"hi")), b.create("a/b", lambda f: f.write(b"no"))
    (True, False)
    >>> b.read("a/b")
    b'hi'
    """

    local = False

    def __init__(
        self,
        url: str,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        **storage_options: Any,
    ) -> None:
        import fsspec.core

        self.url = url
        self.attempts = max(1, attempts)
        self.backoff = backoff
        try:
            self.fs, root = fsspec.core.url_to_fs(
                url, **{**self.default_options(), **storage_options}
            )
        except TypeError:  # a filesystem that refuses the listings-cache option
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        self._lock = threading.Lock()
        self._exclusive: bool | None = None
        self._renewed: dict[str, float] = {}
        self._last_cleanup = 0.0
        # Reads fetch this much per GET: the filesystem's block size (s3fs: 50 MiB).
        self._read_block = int(getattr(self.fs, "default_block_size", 0) or (8 << 20))

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        """Storage options used unless the caller gives them (a subclass adds its own)."""
        # Other processes add manifests and blobs: a cached listing would hide them.
        return {"use_listings_cache": False}

    # -------------------------------------------------------------- plumbing
    def _abs(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def _where(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}" if path else self.url

    def _failure(self, what: str, path: str, e: BaseException, tries: int) -> StoreError:
        reason = _reason(e) + (f"; tried {tries} times" if tries > 1 else "")
        if what == "write":
            return StoreWriteError(self._where(path), reason)
        return StoreError(f"Could not {what} {self._where(path)}: {reason}.")

    def _pause(self, attempt: int) -> None:
        delay = min(self.backoff * (2 ** (attempt - 1)), MAX_BACKOFF)
        time.sleep(delay * random.uniform(0.5, 1.0))

    def _call(self, what: str, path: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one idempotent filesystem call, retrying passing failures.

        Missing objects are an answer, not a failure: FileNotFoundError (and
        FileExistsError, NotADirectoryError) pass through untouched.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except (FileNotFoundError, FileExistsError, NotADirectoryError):
                raise
            except Exception as e:
                if attempt < self.attempts and _transient(e):
                    _log.debug("retrying %s %s after %r", what, path, e)
                    self._pause(attempt)
                    continue
                raise self._failure(what, path, e, attempt) from e
        raise AssertionError("unreachable")

    def _refused(self, path: str, why: str) -> StoreEntryRefused:
        return StoreEntryRefused(path, why, self.url)

    def _exists(self, final: str) -> bool:
        return bool(self.fs.exists(final))

    def _remember(self, final: str) -> None:
        with self._lock:
            if len(self._renewed) > 100_000:
                self._renewed.clear()
            self._renewed[final] = time.time()

    # --------------------------------------------------------------- writes
    def create(self, path: str, write: Writer, *, folders: FolderSync | None = None) -> bool:
        # An object is durable once its upload completes: there is no folder to sync.
        final = self._abs(path)
        # Where the store enforces create-if-absent, it answers "exists" itself; callers
        # with much to write (blobs) look before calling.
        exclusive = self._exclusive_writes()
        for attempt in range(1, self.attempts + 1):
            digest = _Digest()
            try:
                if exclusive:
                    self._upload(final, write, "xb", digest)
                    created = True
                else:
                    created = self._create_checked(path, final, write, digest)
                if created:
                    self._remember(final)
                return created
            except _FsFailure as failure:
                e = failure.error
                if _already_exists(e):
                    # Another writer's object, or our own from an earlier try or a retry
                    # inside the client that succeeded before its answer was lost.
                    return self._holds(path, final, digest)
                if attempt == self.attempts or not _transient(e):
                    raise self._failure("write", path, e, attempt) from e
                _log.debug("retrying the write of %s after %r", path, e)
            self._pause(attempt)
            # The failed try may have been published before the connection broke: look
            # before sending it again, never re-send a create that may have succeeded.
            if self._call("check", path, self._exists, final):
                return self._holds(path, final, digest)
        raise AssertionError("unreachable")

    def _upload(self, final: str, write: Writer, mode: str, digest: _Digest) -> None:
        """Stream what ``write`` writes into a new object; abandon it on any error."""
        try:
            f = self.fs.open(final, mode)
        except Exception as e:
            raise _FsFailure(e) from e
        chunk = int(getattr(f, "blocksize", 0) or (8 << 20))
        try:
            write(_ChunkedWriter(f, digest, chunk))  # type: ignore[arg-type]
        except BaseException:
            _abandon(f)
            raise
        try:
            f.close()  # the commit: a PUT, or the completion of a multipart upload
        except BaseException as e:
            _abandon(f)
            if isinstance(e, Exception):
                raise _FsFailure(e) from e
            raise

    def _holds(self, path: str, final: str, digest: _Digest) -> bool:
        """Whether the object at ``final`` is byte for byte what we sent (small objects only)."""
        if digest.size > MATCH_LIMIT:
            return False  # a blob: its name is its content's hash, so it is the same anyway
        try:
            # Never more than we could have sent: someone else's object may be huge.
            data = self._call("read", path, self.fs.cat_file, final, start=0, end=digest.size + 1)
        except FileNotFoundError:
            return False
        except StoreError as e:
            if not _beyond_end(e):
                raise
            data = b""
        ours = digest.matches(bytes(data))
        if ours:
            self._remember(final)
        return ours

    def _create_checked(self, path: str, final: str, write: Writer, digest: _Digest) -> bool:
        """Create-if-absent on a store without conditional writes: check, write, read back."""
        with _CHECKED_CREATE_LOCK:  # closes the race between writers of this process
            if self._call("check", path, self._exists, final):
                return False
            self._upload(final, write, "wb", digest)
        return digest.size > MATCH_LIMIT or self._holds(path, final, digest)

    def _exclusive_writes(self) -> bool:
        """Probe once whether ``open(mode="xb")`` refuses to overwrite (S3: If-None-Match)."""
        with self._lock:
            if self._exclusive is not None:
                return self._exclusive
        probe = f"{TMP}/{tmp_name()}"
        final = self._abs(probe)
        supported = False
        try:
            self._upload(final, _constant(b"first\n"), "xb", _Digest())
            try:
                self._upload(final, _constant(b"second\n"), "xb", _Digest())
            except _FsFailure as failure:
                if not _already_exists(failure.error):
                    raise
                supported = True
        except _FsFailure as failure:
            e = failure.error
            if not isinstance(e, (NotImplementedError, ValueError)):
                raise self._failure("write", probe, e, 1) from e
        finally:
            with contextlib.suppress(Exception):
                self.fs.rm_file(final)
        if not supported:
            _log.warning(
                "The store at %s does not refuse to overwrite an existing object "
                "(no If-None-Match): nbcheckpoint checks before writing instead, which "
                "cannot stop two machines saving the same notebook at the same moment "
                "from overwriting each other's checkpoint.",
                self.url,
            )
        with self._lock:
            self._exclusive = supported
        return supported

    @property
    def exclusive_writes(self) -> bool:
        """Whether manifests are published with a create-if-absent the store enforces."""
        return self._exclusive_writes()

    def sync_later(self, path: str, folders: FolderSync) -> None:
        return None  # an object that exists is durable: its upload has completed

    def replace(self, path: str, data: bytes) -> None:
        # One PUT replaces the object whole; repeating it is harmless.
        self._call("write", path, self.fs.pipe_file, self._abs(path), data)

    # ---------------------------------------------------------------- reads
    def _get_range(
        self, path: str, start: int, end: int, limit: int | None
    ) -> tuple[bytes, int | None]:
        """Bytes ``start`` to ``end`` of ``path``, and its whole size when that is known.

        With ``limit``, the object's size is looked up first and an object larger than
        ``limit`` is refused before any of it is fetched.
        """
        size = None
        if limit is not None:
            size = self.size(path)
            if size > limit:
                raise self._refused(path, too_large(size, limit))
        data = self._call("read", path, self.fs.cat_file, self._abs(path), start=start, end=end)
        return bytes(data), size

    def read(self, path: str, *, limit: int = READ_LIMIT) -> bytes:
        try:
            data, _ = self._get_range(path, 0, limit + 1, limit)
        except StoreError as e:
            if isinstance(e, StoreEntryRefused) or not _beyond_end(e):
                raise
            return b""  # a range of an empty object is "beyond its end"
        if len(data) > limit:
            raise self._refused(path, f"it grew past {limit} bytes while being read")
        return data

    @contextlib.contextmanager
    def open_read(self, path: str, *, limit: int | None = None) -> Iterator[IO[bytes]]:
        reader = _RangeReader(self, path, self._read_block, limit)
        try:
            yield reader  # type: ignore[misc]
        finally:
            reader.close()

    def exists(self, path: str) -> bool:
        return bool(self._call("check", path, self._exists, self._abs(path)))

    def _info(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = self._call("look up", path, self.fs.info, self._abs(path))
        return info

    def size(self, path: str) -> int:
        return int(self._info(path)["size"])

    def mtime(self, path: str) -> float:
        info = self._info(path)
        for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
            value = info.get(key)
            if value is None:
                continue
            if hasattr(value, "timestamp"):
                return float(value.timestamp())
            with contextlib.suppress(TypeError, ValueError):
                return float(value)
        return time.time()

    def listdir(self, path: str) -> list[str]:
        full = self._abs(path)
        try:
            entries = self._call("list", path, self.fs.ls, full, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries if str(e).rstrip("/") != full
        )

    # --------------------------------------------------------- maintenance
    def touch(self, path: str) -> None:
        """Most object stores cannot renew an object's age: the store re-checks its blobs
        after publishing instead (a subclass that can renew one, S3, does)."""
        return None

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete", path, self.fs.rm_file, self._abs(path))
        with self._lock:
            self._renewed.pop(self._abs(path), None)

    def cleanup_tmp(self, max_age: float) -> int:
        """Remove probe objects (and, where the store has them, unfinished uploads) left by
        writers that died.

        Runs at most every ``CLEANUP_EVERY`` seconds; failures are logged, not raised,
        because the save that triggered it does not depend on it. Only names this package
        gives its temp objects are removed.
        """
        now = time.time()
        with self._lock:
            if now - self._last_cleanup < min(CLEANUP_EVERY, max_age):
                return 0
            self._last_cleanup = now
        removed = 0
        try:
            for name in self.listdir(TMP):
                if not is_tmp_name(name):
                    continue
                try:
                    age = now - self.mtime(f"{TMP}/{name}")
                except FileNotFoundError:
                    continue
                if leftover_is_dead(name, age, max_age):
                    self.delete(f"{TMP}/{name}")
                    removed += 1
            removed += self._abort_stale_uploads(now, max_age)
        except StoreError as e:
            _log.warning("Could not clean up unfinished uploads in %s: %s", self.url, e)
        return removed

    def _abort_stale_uploads(self, now: float, max_age: float) -> int:
        """Abort unfinished uploads older than ``max_age`` (none on a plain filesystem)."""
        return 0

    def unsafe_entries(self) -> list[UnsafeEntry]:
        return []  # an object store has neither links nor special files
