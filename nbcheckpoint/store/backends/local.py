"""A store in a local folder: temp file + fsync + link, every path opened below the root without following links.

Someone who can write the store (a shared folder, a ``.nbcheckpoint/`` committed to a
repository and cloned) may leave links and special files in it. Every path below the
root is opened one folder at a time from the folder above (``openat`` with
``O_NOFOLLOW``), entries are looked at with ``lstat``, files are checked with ``fstat``
before a byte is read, and a FIFO is opened non-blocking: nothing outside the store is
read, changed or deleted, and no reader blocks or reads without bound. The root itself is
the user's choice and may be a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from ...errors import StoreEntryRefused, StoreWriteError
from .base import (
    DIR_MODE,
    FILE_MODE,
    READ_LIMIT,
    TMP,
    FolderSync,
    Staged,
    UnsafeEntry,
    Writer,
    is_set_aside_name,
    is_tmp_name,
    leftover_is_dead,
    tmp_name,
    too_large,
)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
# Non-blocking: opening a FIFO for reading would wait for a writer. No controlling tty.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | _CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
# A store is at most notebooks/<key>/<kind>/<file> deep; a deeper walk is cut short.
_MAX_DEPTH = 6


def describe(mode: int) -> str | None:
    """Why an entry with this ``st_mode`` is never followed nor read (None: a file or folder)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return "it is a symbolic link, which nbcheckpoint never follows inside a store"
    kind = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return f"it is {kind}, not a regular file"


def _split(path: str) -> list[str]:
    parts = path.split("/") if path else []
    if any(p in ("", ".", "..") for p in parts):
        raise StoreEntryRefused(path, "it is not a plain path inside the store")
    return parts


class _BoundedFile:
    """A read-only file over a descriptor that returns at most ``cap`` bytes in all."""

    def __init__(self, fd: int, cap: int) -> None:
        self._f = os.fdopen(fd, "rb", buffering=0)
        self._left = cap

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self._f.readinto(view[: max(self._left, 0)]) if self._left > 0 else 0
        self._left -= n or 0
        return n or 0

    def read(self, size: int | None = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        out = bytearray(max(want, 0))
        got = 0
        while got < want:
            n = self.readinto(memoryview(out)[got:])
            if not n:
                break
            got += n
        del out[got:]
        return bytes(out)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


class LocalBackend:
    """A folder on a local disk, written with temp file + fsync + link + fsync of the folder.

    Examples
    --------
    >>> import tempfile
    >>> b = LocalBackend(tempfile.mkdtemp())
    >>> b.create("a/b", lambda f: f.write(b"hi")), b.read("a/b")
    (True, b'hi')
    """

    local = True

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root

    # -------------------------------------------------------------- plumbing
    def _abs(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def _refused(self, path: str, why: str) -> StoreEntryRefused:
        return StoreEntryRefused(path, why, self.root)

    def _why(self, dir_fd: int, name: str, path: str) -> str:
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            return "it changed while being opened"
        return describe(mode) or "it is not a folder"

    @contextlib.contextmanager
    def _folder(
        self, parts: list[str], *, create: bool = False, folders: FolderSync | None = None
    ) -> Iterator[int]:
        """:meth:`_walk` as a context: the descriptor is closed after use."""
        fd = self._walk(parts, create, folders)
        try:
            yield fd
        finally:
            os.close(fd)

    def _walk(
        self, parts: list[str], create: bool = False, folders: FolderSync | None = None
    ) -> int:
        """A descriptor of the folder at ``parts``, each step opened without following a link.

        The caller closes it. Raises ``FileNotFoundError`` when a folder is missing
        (``create`` makes it, each new entry durable at once or in ``folders``), and
        StoreEntryRefused when one is a link or not a folder.
        """
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.makedirs(self.root, DIR_MODE, exist_ok=True)
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            except OSError as e:
                raise StoreWriteError(self.root, e.strerror or str(e)) from e
        except OSError as e:  # the store's own folder is a file, or cannot be opened
            if create:
                raise StoreWriteError(self.root, e.strerror or str(e)) from e
            raise
        try:
            for depth, name in enumerate(parts):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    child = self._mkdir(fd, name, parts[:depth], folders)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        here = "/".join(parts[: depth + 1])
                        raise self._refused(here, self._why(fd, name, here)) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _mkdir(self, parent: int, name: str, above: list[str], folders: FolderSync | None) -> int:
        """Make folder ``name`` in ``parent`` (whose path is ``above``); its descriptor."""
        where = self._abs("/".join([*above, name]))
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent)
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreWriteError(where, e.strerror or str(e)) from e
        else:
            try:
                if folders is None:
                    os.fsync(parent)
                else:
                    # A new store's first save makes up to 256 blob folders: one fsync of
                    # their parent for all, with the save's other folders, not one each.
                    self._sync_in(folders, above)
            except OSError as e:
                raise StoreWriteError(where, e.strerror or str(e)) from e
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=parent)
            os.fchmod(child, DIR_MODE)  # mkdir's mode is filtered by the umask
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refused("/".join([*above, name]), self._why(parent, name, "")) from None
            raise StoreWriteError(where, e.strerror or str(e)) from e
        return child

    def _sync_in(self, folders: FolderSync, parts: list[str], entry: str | None = None) -> None:
        """Leave the fsync of folder ``parts`` (and the removal of ``entry`` if it fails) to ``folders``."""
        rel = "/".join(parts)
        folders.add(
            self._abs(rel),
            lambda: self._fsync_folder(parts),
            None if entry is None else (lambda: self.delete(f"{rel}/{entry}" if rel else entry)),
        )

    def _fsync_folder(self, parts: list[str]) -> None:
        with self._folder(parts) as fd:
            os.fsync(fd)

    @contextlib.contextmanager
    def _parent(self, path: str, **kwargs: Any) -> Iterator[tuple[int, str, list[str]]]:
        parts = _split(path)
        if not parts:
            raise self._refused(path, "it is the store itself")
        with self._folder(parts[:-1], **kwargs) as fd:
            yield fd, parts[-1], parts[:-1]

    def _lstat(self, path: str) -> os.stat_result:
        parts = _split(path)
        if not parts:
            raise self._refused(path, "it is the store itself")
        dir_fd = self._walk(parts[:-1])
        try:
            return os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)

    def _open(self, path: str, walk: Callable[[list[str]], int] | None = None) -> tuple[int, int]:
        """A descriptor (the caller closes it) of the regular file ``path`` and its size.

        Looked at with ``lstat`` first, so a link, FIFO or device is never opened; opened
        non-blocking and checked with ``fstat``, in case it was swapped meanwhile. ``walk``
        gives folder descriptors it keeps open itself (see :meth:`opener`).
        """
        parts = _split(path)
        if not parts:
            raise self._refused(path, "it is the store itself")
        name = parts[-1]
        dir_fd = self._walk(parts[:-1]) if walk is None else walk(parts[:-1])
        try:
            before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            why = describe(before.st_mode)
            if why is None and stat.S_ISDIR(before.st_mode):
                why = "it is a folder, not a file"
            if why:
                raise self._refused(path, why)
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
                    raise self._refused(path, self._why(dir_fd, name, path)) from None
                raise
        finally:
            if walk is None:
                os.close(dir_fd)
        try:
            st = os.fstat(fd)
            # Another inode than the one looked at is fine if it is a regular file: leases
            # and status records are replaced by rename while others read them. Anything
            # else swapped in (a FIFO, a device) is refused, unread.
            if not stat.S_ISREG(st.st_mode):
                raise self._refused(path, describe(st.st_mode) or "it changed while being opened")
        except BaseException:
            os.close(fd)
            raise
        # O_NONBLOCK stays set: it changes nothing for a regular file.
        return fd, st.st_size

    def _write_tmp(self, tmp_fd: int, name: str, write: Writer | None, data: bytes | None) -> None:
        where = self._abs(f"{TMP}/{name}")
        try:
            fd = os.open(name, _WRITE_FLAGS, FILE_MODE, dir_fd=tmp_fd)
        except OSError as e:
            raise StoreWriteError(where, e.strerror or str(e)) from e
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                if write is not None:
                    write(f)
                else:
                    assert data is not None
                    f.write(data)
                f.flush()
                # A failed fsync is never retried: Linux may already have dropped the pages.
                os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tmp_fd)
            if isinstance(e, OSError):
                raise StoreWriteError(where, e.strerror or str(e)) from e
            raise

    def _refuse_write(self, path: str, e: StoreEntryRefused) -> StoreWriteError:
        return StoreWriteError(
            self._abs(path),
            f"{e.path} {e.reason.removeprefix('it ')}; remove it (`nbcheckpoint verify` lists "
            "every such entry)",
        )

    # --------------------------------------------------------------- writes
    def create(self, path: str, write: Writer, *, folders: FolderSync | None = None) -> bool:
        try:
            return self._create(path, write, folders)
        except StoreEntryRefused as e:
            raise self._refuse_write(path, e) from None

    def stage(self, write: Writer) -> Staged:
        """Write a temp file durably (write and fsync) for :meth:`adopt` to put in place.

        A save writes its new blobs this way while it is still pickling, before its lease
        is in the store: a temp file is no blob, and no gc takes a live writer's.
        """
        try:
            with self._folder([TMP], create=True) as tmp_fd:
                name = tmp_name()
                self._write_tmp(tmp_fd, name, write, None)
                st = os.stat(name, dir_fd=tmp_fd, follow_symlinks=False)
        except StoreEntryRefused as e:
            raise self._refuse_write(TMP, e) from None
        return Staged(name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def adopt(self, staged: Staged, path: str, *, folders: FolderSync | None = None) -> bool:
        """:meth:`create` from a file :meth:`stage` wrote; the temp file is gone afterwards.

        Raises ``FileNotFoundError`` when the temp file is gone, or is not the one staged
        (removed as a dead writer's, or swapped): the caller writes the data again.
        """
        try:
            return self._create(path, None, folders, staged)
        except StoreEntryRefused as e:
            self.discard(staged)
            raise self._refuse_write(path, e) from None

    def discard(self, staged: Staged) -> None:
        """Remove a staged temp file that will not be adopted (nothing if it is gone)."""
        with contextlib.suppress(OSError), self._folder([TMP]) as tmp_fd:
            os.unlink(staged.name, dir_fd=tmp_fd)

    def _create(
        self,
        path: str,
        write: Writer | None,
        folders: FolderSync | None,
        staged: Staged | None = None,
    ) -> bool:
        final = self._abs(path)
        with self._parent(path, create=True, folders=folders) as (fd, name, above):
            try:
                existing = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                why = describe(existing.st_mode)
                if why:
                    raise self._refused(path, why)
                if staged is not None:
                    self.discard(staged)
                return False
            if folders is not None and above:
                # The folder may come from an earlier save whose batch never got synced
                # (it failed): its entry in the parent is made durable again with this save's.
                self._sync_in(folders, above[:-1])
            with self._folder([TMP], create=True) as tmp_fd:
                if staged is None:
                    tmp = tmp_name()
                    self._write_tmp(tmp_fd, tmp, write, None)
                else:
                    tmp = staged.name
                    # Still the file staged (not removed as a dead writer's, nor swapped)?
                    st = os.stat(tmp, dir_fd=tmp_fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != staged[1:]:
                        raise FileNotFoundError(errno.ENOENT, "not the file staged", tmp)
                try:
                    # link() fails when the name exists, so two writers never overwrite
                    # each other.
                    os.link(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=fd, follow_symlinks=False)
                    created = True
                except FileExistsError:
                    created = False
                except FileNotFoundError as e:
                    if staged is not None:
                        raise  # removed meanwhile: the caller writes the data again
                    raise StoreWriteError(final, e.strerror or str(e)) from e
                except OSError as e:
                    raise StoreWriteError(final, e.strerror or str(e)) from e
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=tmp_fd)
            if created and folders is not None:
                self._sync_in(folders, above, name)  # synced once for all its new entries
            elif created:
                try:
                    os.fsync(fd)
                except OSError as e:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=fd)
                    raise StoreWriteError(self._abs("/".join(above)), e.strerror or str(e)) from e
            return created

    def sync_later(self, path: str, folders: FolderSync) -> None:
        self._sync_in(folders, _split(path)[:-1])

    def replace(self, path: str, data: bytes) -> None:
        try:
            with (
                self._parent(path, create=True) as (fd, name, _),
                self._folder([TMP], create=True) as tmp_fd,
            ):
                tmp = tmp_name()
                self._write_tmp(tmp_fd, tmp, None, data)
                try:
                    # rename() replaces the entry itself, never what a link points at.
                    os.rename(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=fd)
                    os.fsync(fd)
                except OSError as e:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=tmp_fd)
                    raise StoreWriteError(self._abs(path), e.strerror or str(e)) from e
        except StoreEntryRefused as e:
            raise self._refuse_write(path, e) from None

    # ---------------------------------------------------------------- reads
    def read(self, path: str, *, limit: int = READ_LIMIT) -> bytes:
        try:
            fd, size = self._open(path)
            with open(fd, "rb", buffering=0, closefd=True):  # closes fd, whatever happens
                if size > limit:
                    raise self._refused(path, too_large(size, limit))
                # At most one byte over the cap: a file that grows meanwhile (or never
                # ends) is refused, not read to its end.
                chunks = []
                got = 0
                while got <= limit:
                    chunk = os.read(fd, min(limit + 1 - got, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
                if got > limit:
                    raise self._refused(path, f"it grew past {limit} bytes while being read")
                return b"".join(chunks)
        except (FileNotFoundError, StoreEntryRefused):
            raise
        except OSError as e:
            raise self._refused(path, e.strerror or str(e)) from e

    def open_descriptor(self, path: str) -> tuple[int, int]:
        """A descriptor of the regular file ``path`` (the caller closes it) and its size.

        Links, FIFOs and devices are refused unopened, as by :meth:`open_read`. An open
        descriptor keeps the file readable after ``gc`` or ``rm`` unlinks it.
        """
        return self._open(path)

    @contextlib.contextmanager
    def opener(self) -> Iterator[Callable[[str], tuple[int, int]]]:
        """:meth:`open_descriptor` for many files: each folder is walked to once, not per file.

        The folders' descriptors stay open until the block ends: files opened through them
        are in the folders that were checked when walked to, even if one is renamed or
        replaced by a link meanwhile.
        """
        folders: dict[tuple[str, ...], int] = {}

        def walk(parts: list[str]) -> int:
            fd = folders.get(tuple(parts))
            if fd is None:
                fd = folders[tuple(parts)] = self._walk(parts)
            return fd

        try:
            yield lambda path: self._open(path, walk)
        finally:
            for fd in folders.values():
                os.close(fd)

    @contextlib.contextmanager
    def open_read(self, path: str, *, limit: int | None = None) -> Iterator[IO[bytes]]:
        fd, size = self._open(path)
        f = _BoundedFile(fd, (size if limit is None else limit) + 1)
        try:
            if limit is not None and size > limit:
                raise self._refused(path, too_large(size, limit))
            yield f  # type: ignore[misc]
        finally:
            f.close()

    def exists(self, path: str) -> bool:
        try:
            self._lstat(path)
        except (FileNotFoundError, NotADirectoryError, StoreEntryRefused):
            return False
        return True

    def size(self, path: str) -> int:
        return self._lstat(path).st_size

    def mtime(self, path: str) -> float:
        return self._lstat(path).st_mtime

    def listdir(self, path: str) -> list[str]:
        try:
            with self._folder(_split(path)) as fd:
                return sorted(os.listdir(fd))
        except (FileNotFoundError, NotADirectoryError, StoreEntryRefused):
            return []

    # --------------------------------------------------------- maintenance
    def touch(self, path: str) -> None:
        with (
            contextlib.suppress(FileNotFoundError, StoreEntryRefused),
            self._parent(path) as (fd, name, _),
        ):
            os.utime(name, dir_fd=fd, follow_symlinks=False)

    def delete(self, path: str) -> None:
        """Remove the entry ``path`` (a link itself, never what it points at)."""
        try:
            with self._parent(path) as (fd, name, _):
                os.unlink(name, dir_fd=fd)
        except (FileNotFoundError, StoreEntryRefused):
            return  # what is below a link is not in the store
        except OSError as e:
            raise StoreWriteError(self._abs(path), e.strerror or str(e)) from e

    def set_aside(self, path: str, name: str) -> bool:
        """Move the regular file ``path`` to ``tmp/name``, dated now; False if it is not there.

        A link, FIFO or device is left where it is (False): only the store's own files
        move, and nothing outside the store is touched. :meth:`cleanup_tmp` removes it
        once older than its ``max_age``.
        """
        try:
            with (
                self._parent(path) as (src, src_name, _),
                self._folder([TMP], create=True) as tmp,
            ):
                st = os.stat(src_name, dir_fd=src, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    return False
                os.rename(src_name, name, src_dir_fd=src, dst_dir_fd=tmp)
                os.utime(name, dir_fd=tmp, follow_symlinks=False)
        except (FileNotFoundError, StoreEntryRefused):
            return False
        except OSError as e:
            raise StoreWriteError(self._abs(path), e.strerror or str(e)) from e
        return True

    def cleanup_tmp(self, max_age: float) -> int:
        removed = 0
        now = time.time()
        try:
            with self._folder([TMP]) as fd:
                for name in os.listdir(fd):
                    set_aside = is_set_aside_name(name)
                    if not (set_aside or is_tmp_name(name)):
                        continue  # not one of ours: a temp file of this package never has it
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue  # reported by verify, never touched
                    age = now - st.st_mtime
                    if age > max_age if set_aside else leftover_is_dead(name, age, max_age):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=fd)
                            removed += 1
        except (FileNotFoundError, StoreEntryRefused):
            return 0
        return removed

    def unsafe_entries(self) -> list[UnsafeEntry]:
        found: list[UnsafeEntry] = []
        try:
            with self._folder([]) as fd:
                self._scan(fd, "", 0, found)
        except FileNotFoundError:
            return []
        return found

    def _scan(self, fd: int, prefix: str, depth: int, found: list[UnsafeEntry]) -> None:
        for name in sorted(os.listdir(fd)):
            path = f"{prefix}{name}"
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            why = describe(st.st_mode)
            if why:
                found.append(UnsafeEntry(path, why))
            elif stat.S_ISDIR(st.st_mode):
                if depth >= _MAX_DEPTH:
                    found.append(UnsafeEntry(path, "it is nested deeper than a store ever is"))
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    found.append(UnsafeEntry(path, f"it cannot be opened ({e.strerror or e})"))
                    continue
                try:
                    self._scan(child, f"{path}/", depth + 1, found)
                finally:
                    os.close(child)
