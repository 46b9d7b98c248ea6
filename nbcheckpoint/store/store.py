"""The checkpoint store: content-addressed blobs, signed manifests as the commit point, retention and gc."""

from __future__ import annotations

import builtins
import contextlib
import json
import mmap
import os
import platform
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any, cast

import zstandard

from ..errors import (
    CheckpointError,
    CheckpointNotFound,
    NewerFormat,
    NoUsableCheckpoint,
    StoreEntryRefused,
    StoreError,
    StoreWriteError,
    UntrustedCheckpoint,
    VerificationError,
)
from ..gcpause import paused
from . import pager as _pager
from .backends import Backend, FolderSync, Staged, StagingBackend, UnsafeEntry, open_backend
from .blobs import (
    BLOB_MAGIC,
    CODEC_RAW,
    CODEC_SHUFFLE,
    CODEC_ZSTD,
    HEADER_LEN,
    SHUFFLE_WIDTHS,
    decode_blob,
    missing_why,
    shuffle,
)
from .blobs import BlobError as _BlobError
from .blobs import blob_limit as _blob_limit
from .blobs import blob_path as _blob_path
from .blobs import valid_hash as _valid_hash
from .credentials import redact
from .hashing import (
    THREADS,
    _hash_threads,
    _HashQueue,
    _parallel,
    _stage_pool,
    address_of,
    digest,
    fast_hash,
)
from .identity import NotebookRef, valid_key
from .leases import (
    LEASE_TTL,
    Lease,
    StoreClock,
    delete_quietly,
    hashes_in,
    read_capped,
    savers_of,
    scan_leases,
)
from .manifest import FORMAT, STATUSES, Group, Manifest, complete, decode
from .pager import MapTicket, Pager
from .pager import known_hash as mapped_hash
from .records import Checkpoint, GcReport, PendingSave, Problem, ReadOnlyBody, Restored
from .serializer import Snapshot, deserialize, serialize, type_name
from .signing import SigningKey, load_key

MANIFEST_MAGIC = b"NBCKPT1\n"
MANIFEST_MAGIC_STEM = b"NBCKPT"
CHUNK = 8 << 20
COMPRESS_MIN = 4096
COMPRESS_SAMPLE = 256 << 10
COMPRESS_PROBE = 48 << 10
# zstd pays when the data must cross a network, which is slower than compressing it; a
# local disk (about 1 GB/s here) writes faster than zstd level 1 compresses (about 0.5 GB/s
# a core), so there only data that shrinks to a quarter is worth it (it then reads faster
# from a cold disk, though slower from the page cache: zstd decompresses about 1 GB/s a core).
COMPRESS_GAIN = {"remote": 0.85, "local": 0.25}
MAX_MANIFEST = 64 << 20
DEFAULT_GRACE = 3600.0
# A status record is ``<status>\n<64 hex digits>``: anything longer was not written here.
MAX_STATUS_RECORD = 256
# Retention applied after every save when the caller sets no limit of its own: the
# newest DEFAULT_KEEP checkpoints of each notebook, plus pinned ones. Twenty reach back
# over an afternoon of auto-saved cells, and a notebook rarely has more than a few
# distinct large states among them (unchanged arrays are stored once).
DEFAULT_KEEP = 20
# A store-wide cap, checked after every save (the oldest unpinned checkpoints of the
# notebook just saved go first). 10 GB holds a handful of states of a notebook that
# keeps a few GB in memory, which is what a checkpoint is for, while a forgotten store on
# a laptop disk stops growing long before the disk fills. Raise it for larger states.
DEFAULT_MAX_SIZE = 10 * 10**9
# Pass as ``keep`` or ``max_size`` to turn that limit off.
UNLIMITED = -1
# How many of its own saves a store instance trusts its running estimate of the store's
# size before it measures again (other writers add to the store too).
USAGE_RECHECK = 100
# Leftover temp files of writers on other machines are removed once older than this
# (on this machine's clock), whatever the grace: a live writer's temp file is younger.
TMP_MIN_AGE = 600.0
KEY_REASON = (
    "it holds this store's signing key ({where}); saved, it would let anyone who can "
    "read the store forge checkpoints that run code on restore"
)
_HEX = frozenset("0123456789abcdef")
_HEADER_KEYS = frozenset({"alg", "key_id", "len", "sig"})
FAST_HASH_MIN = 64 << 10
CHUNK_SIZE = 4 << 20
CHUNK_MIN = 8 << 20
FAST_CACHE_MAX = 1_000_000


def _manifest_name(ident: int) -> str:
    return f"{ident:08d}.ckpt"


def _nb_dir(key: str) -> str:
    return f"notebooks/{key}"


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def _versions() -> dict[str, str]:
    import dill

    found = {"python": platform.python_version(), "dill": dill.__version__}
    for name in ("numpy", "pandas", "torch", "nbcheckpoint"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if version:
            found[name] = str(version)
    return found


class CheckpointStore:
    """Checkpoints of many notebooks under one folder or fsspec URL.

    Layout: ``blobs/xx/<blake3>`` (immutable, shared by every notebook),
    ``notebooks/<key>/manifests/<id>.ckpt`` (signed, written last: the commit point),
    ``notebooks/<key>/pins/<id>`` and ``notebooks/<key>/status/<id>``, ``tmp/``, and
    ``leases/`` (saves in progress and gc markers, see :mod:`.leases`).

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> nb = NotebookRef.from_path("demo.ipynb")
    >>> ck = store.save({"x": [1, 2, 3]}, nb)
    >>> store.load(nb).values["x"]
    [1, 2, 3]
    """

    def __init__(
        self,
        url: str,
        *,
        key: SigningKey | None = None,
        compress: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        # This machine's clock: only recorded (a checkpoint's "created"), never compared
        # with times read from the store (gc uses the store's own clock, see leases.py).
        self.clock = clock
        self._usage: int | None = None
        self._usage_saves = 0
        self.backend: Backend = open_backend(url)
        self._key = key
        self.compress = compress
        self._manifest_cache: dict[tuple[str, int], tuple[int, Checkpoint]] = {}
        self._known_blobs: set[str] = set()
        self._mapped_seen: set[str] = set()  # blobs found as untouched restored chunks
        self._fast: dict[tuple[int, str], str] = {}
        # Fast hash of a whole chunked buffer -> the addresses of its chunks.
        self._fast_whole: dict[tuple[int, str], tuple[str, ...]] = {}
        # Chunk memory span -> (write-tracking number when hashed, its address, its owner).
        self._chunk_memo: dict[tuple[int, int], tuple[int, str, weakref.ref[Any]]] = {}
        self._initialized = False

    # ------------------------------------------------------------------ setup
    @property
    def key(self) -> SigningKey:
        if self._key is None:
            self._key = load_key()
        return self._key

    def _init_root(self) -> None:
        if self._initialized:
            return
        if not self.backend.exists(".gitignore"):
            # Keeps checkpoints (and possibly large data) out of git commits by accident.
            with contextlib.suppress(StoreWriteError):
                self.backend.create(".gitignore", _writer(b"# created by nbcheckpoint\n*\n"))
        self._initialized = True

    # ------------------------------------------------------------------ blobs
    def _write_blob(
        self,
        h: str,
        data: memoryview,
        folders: FolderSync | None = None,
        width: int = 1,
        staged: tuple[Staged, int] | None = None,
    ) -> int:
        """Store ``data`` under its address unless present; returns the bytes written.

        With ``folders``, the blob is durable, and known to this store, only once the
        caller's ``folders.sync()`` has succeeded. ``width``: the size of the numbers it
        holds (2, 4 or 8: it is byte-shuffled before zstd, see ``blobs``), else 1.
        ``staged``: the blob already written to a temp file (see :meth:`_stage_blob`), and
        its size there: it is linked in place, or written again if that file is gone.
        """
        path = _blob_path(h)
        if h in self._known_blobs or self.backend.exists(path):
            if staged is not None:
                self._staging.discard(staged[0])
            # Renew its age so a concurrent gc, which spares young blobs, keeps it.
            self.backend.touch(path)
            if folders is None:
                self._known_blobs.add(h)
            elif h not in self._known_blobs:
                # Perhaps another writer's, linked but with its folder not yet synced.
                self.backend.sync_later(path, folders)
            return 0
        if staged is not None:
            try:
                created = self._staging.adopt(staged[0], path, folders=folders)
            except FileNotFoundError:
                pass  # its temp file is gone (taken for a dead writer's): written below
            else:
                if folders is None:
                    self._known_blobs.add(h)
                elif not created:
                    self.backend.sync_later(path, folders)
                return staged[1] if created else 0
        write, written = self._blob_writer(data, width)
        self.backend.create(path, write, folders=folders)
        if folders is None:
            self._known_blobs.add(h)
        return written[0]

    def _blob_writer(
        self, data: memoryview, width: int
    ) -> tuple[Callable[[IO[bytes]], None], builtins.list[int]]:
        """What writes ``data``'s blob file (header, codec, data), and the bytes it wrote
        (set once it has written)."""
        gain = COMPRESS_GAIN["local" if self.backend.local else "remote"]
        packed = None
        if not self.compress or data.nbytes < COMPRESS_MIN:
            codec = CODEC_RAW
        elif data.nbytes <= CHUNK:
            # Up to a chunk, compressed whole in one call (which releases the GIL; a stream
            # writer hands each 128 KiB of output to Python), and kept if it gains enough.
            # A small probe first spares data that clearly will not compress.
            codec = CODEC_RAW
            width = _layout(data, width)
            if _compresses(data, (1.0 + gain) / 2, COMPRESS_PROBE, width):
                source = shuffle(data, width) if width > 1 else data
                packed = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(source)
                if len(packed) < gain * data.nbytes:
                    codec = CODEC_ZSTD if width == 1 else CODEC_SHUFFLE
                    if width > 1:
                        packed = bytes([width]) + packed
                else:
                    packed = None
        else:
            codec = CODEC_ZSTD if _compresses(data, gain) else CODEC_RAW
        written = [0]

        def write(f: IO[bytes]) -> None:
            f.write(BLOB_MAGIC + bytes([codec]))
            if codec == CODEC_RAW or packed is not None:
                f.write(data if packed is None else packed)
                written[0] = HEADER_LEN + (data.nbytes if packed is None else len(packed))
                return
            threads = -1 if data.nbytes > CHUNK and THREADS["enabled"] else 0
            cctx = zstandard.ZstdCompressor(level=1, threads=threads, write_content_size=True)
            with cctx.stream_writer(f, size=data.nbytes, closefd=False) as z:
                for start in range(0, data.nbytes, CHUNK):
                    z.write(data[start : start + CHUNK])
            written[0] = f.tell() if f.seekable() else HEADER_LEN + data.nbytes

        return write, written

    def _stage_blob(self, h: str, data: memoryview, width: int) -> tuple[Staged, int] | None:
        """Write blob ``h`` to a temp file now, for the commit to link in place (see
        :class:`_Stager`); None when the store has it already."""
        if self._present(h):
            return None
        write, written = self._blob_writer(data, width)
        return self._staging.stage(write), written[0]

    def _read_blob(self, h: str, size: int, into: memoryview | None = None) -> Any:
        """Read, decompress and check one blob against its signed address and size.

        Reads into ``into`` (a slice of a larger buffer) when given, else a new bytearray.
        """
        if not _valid_hash(h):
            raise VerificationError("?", f"the manifest names an invalid blob address {h!r}")
        path = _blob_path(h)
        out: Any = bytearray(size) if into is None else into
        try:
            with self.backend.open_read(path, limit=_blob_limit(size)) as f:
                decode_blob(f, h, size, out)
        except FileNotFoundError as e:
            raise _BlobError(h, missing_why(self.backend, h)) from e
        except StoreEntryRefused as e:
            raise _BlobError(h, f"was refused: {e.reason}") from e
        return out

    # -------------------------------------------------------------- manifests
    def _manifest_ids(self, key: str) -> list[int]:
        ids = []
        for name in self.backend.listdir(f"{_nb_dir(key)}/manifests"):
            stem, _, ext = name.partition(".")
            # Only names this store writes: str.isdigit() also takes superscripts, and a
            # thousand digits would be a number int() refuses.
            if ext == "ckpt" and stem.isascii() and stem.isdigit() and len(stem) <= 18:
                ids.append(int(stem))
        return sorted(ids)

    def _encode_manifest(self, body: Mapping[str, Any]) -> bytes:
        body = complete(body)
        try:
            # What is written must read back: the check readers make, made before signing.
            decode(_canonical(body), key=body["notebook"]["key"], ident=body["id"])
        except VerificationError as e:
            raise StoreError(f"nbcheckpoint built a checkpoint it cannot read back: {e}") from e
        raw = _canonical(body)
        header = {
            "alg": "hmac-sha256",
            "key_id": self.key.key_id,
            "len": len(raw),
            "sig": self.key.sign(raw),
        }
        return MANIFEST_MAGIC + _canonical(header) + b"\n" + raw

    def _decode_manifest(self, data: bytes, key: str, ident: int, trust: bool) -> Checkpoint:
        """Parse and check a manifest; raises VerificationError when it cannot be trusted or read."""
        if not data.startswith(MANIFEST_MAGIC):
            stem = data[: len(MANIFEST_MAGIC)]
            container = stem[len(MANIFEST_MAGIC_STEM) : -1]
            if (
                stem.startswith(MANIFEST_MAGIC_STEM)
                and stem.endswith(b"\n")
                and container.isdigit()
                and int(container) > 1
            ):
                raise NewerFormat(ident, int(container), 1)
            raise VerificationError(
                ident, "the manifest is not an nbcheckpoint manifest (damaged header)"
            )
        if len(data) > MAX_MANIFEST:
            raise VerificationError(ident, "the manifest is larger than any nbcheckpoint writes")
        rest = data[len(MANIFEST_MAGIC) :]
        line, sep, raw = rest.partition(b"\n")
        try:
            header = json.loads(line)
            if not sep or not isinstance(header, dict) or header.get("len") != len(raw):
                raise ValueError("length")
            # The header is not signed: accept only what the store writes, so damage shows.
            if header.get("alg") != "hmac-sha256" or not set(header) <= _HEADER_KEYS:
                raise ValueError("header")
        except (ValueError, RecursionError) as e:
            raise VerificationError(ident, "the manifest is truncated or damaged") from e
        sig = header.get("sig")
        verified = False
        problem = None
        if not isinstance(sig, str) or not sig:
            problem = "it is not signed"
        elif header.get("key_id") != self.key.key_id:
            problem = "it was signed with a different key (another user or machine)"
        elif not (len(sig) == 64 and set(sig) <= _HEX) or not self.key.verify(raw, sig):
            # (compare_digest refuses text that is not ASCII: check the form first)
            problem = "its signature does not match: the manifest was changed after it was written"
        else:
            verified = True
        if not verified and not trust:
            if (
                problem
                == "its signature does not match: the manifest was changed after it was written"
            ):
                raise VerificationError(ident, problem)
            raise UntrustedCheckpoint(ident, problem or "unknown")
        manifest, body = decode(raw, key=key, ident=ident)
        return Checkpoint(manifest, verified, problem, raw=ReadOnlyBody(body))

    def read_checkpoint(
        self,
        notebook: NotebookRef | str,
        ident: int,
        *,
        trust: bool = False,
        use_cache: bool = True,
    ) -> Checkpoint:
        """One checkpoint's manifest, signature checked (blobs are not read).

        Raises ``VerificationError`` (``MalformedManifest``, ``NewerFormat``,
        ``UntrustedCheckpoint``) for a checkpoint that cannot be used, whatever its files hold.
        The cache only knows a manifest's size: damage in place, or a deleted id saved again,
        can keep it. Restores, ``verify`` and gc pass ``use_cache=False`` to read the disk.
        """
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        if not valid_key(key):
            raise CheckpointError(f"{key!r} is not a valid notebook key")
        path = f"{_nb_dir(key)}/manifests/{_manifest_name(ident)}"
        cached = self._manifest_cache.get((key, ident))
        try:
            size = self.backend.size(path)
        except FileNotFoundError:
            raise CheckpointNotFound(ident, key, self._manifest_ids(key)) from None
        if use_cache and cached is not None and cached[0] == size and (cached[1].verified or trust):
            ck = cached[1]
        else:
            try:
                data = self.backend.read(path, limit=MAX_MANIFEST)
            except FileNotFoundError:
                raise CheckpointNotFound(ident, key, self._manifest_ids(key)) from None
            except StoreEntryRefused as e:
                raise VerificationError(
                    ident, f"the manifest {e.path} was refused: {e.reason}"
                ) from e
            except (StoreError, OSError) as e:
                if not _not_a_file(e):
                    raise  # the store cannot be read: not this checkpoint's fault
                raise VerificationError(ident, "its manifest is not a file") from None
            ck = self._decode_manifest(data, key, ident, trust)
            self._manifest_cache[(key, ident)] = (size, ck)
        ck.pinned = self.backend.exists(f"{_nb_dir(key)}/pins/{ident}")
        ck.status_override = self._read_status(key, ident)
        return ck

    def _read_status(self, key: str, ident: int) -> str | None:
        """The status a checkpoint was marked with after it was written (``interrupted``), if any.

        A record not in the form this store writes makes the checkpoint a bad one
        (``VerificationError``); one in that form but not signed with this key for this
        checkpoint is ignored (the manifest's own, signed, status stands).
        """
        path = f"{_nb_dir(key)}/status/{ident}"
        try:
            data = self.backend.read(path, limit=MAX_STATUS_RECORD)
        except FileNotFoundError:
            return None
        except StoreEntryRefused as e:
            raise VerificationError(ident, f"its status record was refused: {e.reason}") from e
        except (StoreError, OSError) as e:
            if not _not_a_file(e):
                raise
            raise VerificationError(ident, "its status record is not a file") from None
        line, sep, sig = data.partition(b"\n")
        sig = sig.strip()
        if (
            len(data) > MAX_STATUS_RECORD
            or not sep
            or line.decode("latin-1") not in STATUSES
            or len(sig) != 64
            or not set(sig.decode("latin-1")) <= _HEX
        ):
            raise VerificationError(ident, "its status record is damaged")
        status = line.decode("ascii")
        if self.key.verify(f"{key}/{ident}/{status}".encode(), sig.decode("ascii")):
            return status
        return None  # forged, or signed elsewhere: it changes nothing

    def set_status(self, notebook: NotebookRef, ident: int, status: str) -> None:
        """Mark a checkpoint (for example ``interrupted``) without rewriting its manifest."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        record = f"{notebook.key}/{ident}/{status}"
        self.backend.replace(
            f"{_nb_dir(notebook.key)}/status/{ident}",
            f"{status}\n{self.key.sign(record.encode())}".encode(),
        )

    # ------------------------------------------------------------------- save
    def save(
        self,
        namespace: Mapping[str, Any],
        notebook: NotebookRef,
        names: Iterable[str] | None = None,
        *,
        status: str = "manual",
        cell: Mapping[str, Any] | None = None,
        position: Mapping[str, Any] | None = None,
        kernel: Mapping[str, Any] | None = None,
        include_credentials: bool = False,
        snapshot: Snapshot | None = None,
        keep: int | None = None,
        max_size: int | None = None,
        base: Checkpoint | None = None,
        changed: Iterable[str] | None = None,
        recipes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Checkpoint:
        """Snapshot variables of ``namespace`` as a new checkpoint of ``notebook``.

        Blobs are written first, the signed manifest last with create-if-absent, so a
        crash at any moment leaves either the whole checkpoint or none of it.

        Parameters
        ----------
        names : the variables to save (default: all of ``namespace``).
        snapshot : an already serialized namespace (used by the capture engine).
        keep, max_size : retention applied after the save.
        base, changed : incremental save. Groups of ``base`` that hold none of the
            ``changed`` names, and whose names are all still saved, are recorded again
            without pickling. Objects changed behind the back of ``changed`` are missed.
        recipes : how variables were made (``{name: {"steps", "reads", "note"}}``, see
            ``capture/recipes.py``); those of the variables that are skipped are recorded.
        """
        pending = self.prepare(
            namespace,
            notebook,
            names,
            status=status,
            cell=cell,
            position=position,
            kernel=kernel,
            include_credentials=include_credentials,
            snapshot=snapshot,
            base=base,
            changed=changed,
            recipes=recipes,
            stage=True,
        )
        return self.commit(pending, keep=keep, max_size=max_size)

    def prepare(
        self,
        namespace: Mapping[str, Any],
        notebook: NotebookRef,
        names: Iterable[str] | None = None,
        *,
        status: str = "manual",
        cell: Mapping[str, Any] | None = None,
        position: Mapping[str, Any] | None = None,
        kernel: Mapping[str, Any] | None = None,
        include_credentials: bool = False,
        snapshot: Snapshot | None = None,
        base: Checkpoint | None = None,
        changed: Iterable[str] | None = None,
        recipes: Mapping[str, Mapping[str, Any]] | None = None,
        written: Mapping[tuple[int, int], int] | None = None,
        stage: bool = False,
    ) -> PendingSave:
        """The part of a save that must see the namespace: pickle it and address every blob.

        With ``stage``, on a local store, new blobs are also written to temp files (written
        and fsynced on worker threads, as soon as each is hashed and searched for the key)
        while the rest is pickled; the commit then only links them in place. For a caller
        that commits right away: it takes longer to return, and it reads live memory.

        Unchanged large buffers are recognised by a fast hash (xxh3; for a chunked buffer,
        one of the whole, then of each chunk only when the whole changed) and cost no
        BLAKE3 and no write. Hashing runs on worker threads beside the pickling and is
        over when this returns. The result refers to live memory until
        :meth:`PendingSave.detach`.

        The signing key never reaches the store: every new blob is searched for it (raw,
        and hex in both cases; libc ``memmem``, about 12 GB/s a pattern here), and a
        variable that carries it is withheld and reported, whatever object holds it.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        carriers: dict[str, dict[str, str]] = {}
        for _attempt in range(4):
            stager = _Stager(self) if stage and _Stager.possible(self) else None
            try:
                pending, found = self._prepare_once(
                    namespace,
                    notebook,
                    names,
                    status=status,
                    cell=cell,
                    position=position,
                    kernel=kernel,
                    include_credentials=include_credentials,
                    snapshot=snapshot,
                    base=base,
                    changed=changed,
                    exclude=carriers,
                    recipes=recipes,
                    written=written,
                    stager=stager,
                )
            except BaseException:
                if stager is not None:
                    stager.abandon()
                raise
            staged = stager.finish() if stager is not None else {}
            # Only blobs of this checkpoint are linked: none of a variable withheld for
            # carrying the key (the next attempt stages again without it).
            pending.staged = {h: s for h, s in staged.items() if not found and h in pending.data}
            self._discard(s for h, s in staged.items() if h not in pending.staged)
            if not found:
                return pending
            carriers.update(found)
            if snapshot is not None:
                snapshot = _without(snapshot, set(found))
        raise StoreError(
            "Could not keep the signing key out of this checkpoint; nothing was saved."
        )

    def _prepare_once(
        self,
        namespace: Mapping[str, Any],
        notebook: NotebookRef,
        names: Iterable[str] | None,
        *,
        status: str,
        cell: Mapping[str, Any] | None,
        position: Mapping[str, Any] | None,
        kernel: Mapping[str, Any] | None,
        include_credentials: bool,
        snapshot: Snapshot | None,
        base: Checkpoint | None,
        changed: Iterable[str] | None,
        exclude: Mapping[str, dict[str, str]],
        recipes: Mapping[str, Mapping[str, Any]] | None = None,
        written: Mapping[tuple[int, int], int] | None = None,
        stager: _Stager | None = None,
    ) -> tuple[PendingSave, dict[str, dict[str, str]]]:
        """One attempt at :meth:`prepare`; also returns the variables found carrying the key."""
        started = time.perf_counter()
        chosen = list(namespace) if names is None else [n for n in names if n in namespace]
        chosen = [n for n in chosen if n not in exclude]
        blobs: dict[str, dict[str, int]] = {}
        groups: list[dict[str, Any]] = []
        variables: dict[str, dict[str, Any]] = {}
        reusable: builtins.list[dict[str, Any]] = []
        if base is not None and changed is not None and snapshot is None:
            reusable = self._reusable_groups(base, set(chosen), set(changed))
        reused = {name for group in reusable for name in group["names"]}
        data: dict[str, memoryview] = {}
        learned: dict[tuple[int, str], str] = {}
        # Worker threads hash each buffer the moment the pickler hands it over, so the
        # fast hashes of large buffers (which release the GIL) overlap with the pickling of
        # small objects (which cannot). All of it is done before this method returns.
        # Each new blob is searched for the signing key right after it is hashed, on the
        # same worker thread (it is still in the CPU's cache, and the search overlaps with
        # the pickling); ``_key_carriers`` reads the results.
        searched: dict[str, bool] = {}
        key = self.key
        queue = _HashQueue(
            lambda item: self._address_buffer(item, written, (key, searched), stager),
            _hash_threads(),
        )
        # Each buffer is kept with its queue position: its id must stay its own.
        queued: dict[int, tuple[memoryview, int]] = {}

        def plan(buf: memoryview) -> int:
            known = queued.get(id(buf))
            if known is None:
                known = queued[id(buf)] = (buf, queue.add((buf, True)))
            return known[1]

        planned: dict[int, tuple[int, builtins.list[int]]] = {}
        try:
            if snapshot is not None:
                snap = snapshot
            else:
                snap = serialize(
                    namespace,
                    [n for n in chosen if n not in reused],
                    include_credentials=include_credentials,
                    on_buffer=plan,
                    share_gil=queue.working if queue.threads else None,
                    kept=[group["names"] for group in reusable],
                )
            # Kept as they are in ``base``, but for those a variable saved now joined.
            redone = set(snap.redone)
            for index, kept_group in enumerate(reusable):
                if base is not None and index not in redone:
                    self._reuse_group(base, kept_group, groups, variables, blobs)
            for group in snap.groups:
                indexes = [plan(buf) for buf in group.buffers]
                # Pickles are stored whole, however large (only buffers are chunked).
                planned[id(group)] = (queue.add((memoryview(group.payload), False)), indexes)
            rng = snap.rng
            rng_index = queue.add((memoryview(rng), False)) if rng is not None else None
        finally:
            results = queue.finish()

        # The k-th chunk of every buffer is written before the (k+1)-th of any: arrays that
        # compress (CPU) and arrays that do not (disk) then go to the writer side by side.
        rank: dict[str, int] = {}
        learned_whole: dict[tuple[int, str], tuple[str, ...]] = {}

        def address(index: int) -> builtins.list[str]:
            """The addresses of a buffer's pieces (large buffers are stored in chunks)."""
            whole, parts = cast(tuple[Any, builtins.list[Any]], results[index])
            buf, chunked = queue.items[index]
            width = _element_width(buf)
            hashes = []
            for position, (view, (fast, h, stored)) in enumerate(
                zip(_chunks(buf) if chunked else [buf], parts)
            ):
                blobs[h] = {"size": view.nbytes}
                if not stored:  # stored: unchanged since we wrote it: no BLAKE3, no write
                    if fast is not None:
                        learned[fast] = h
                    data[h] = view
                    rank.setdefault(h, position)
                    if width > 1:
                        widths[h] = width
                hashes.append(h)
            if whole is not None:
                learned_whole[whole] = tuple(hashes)
            if len(hashes) > 1:
                seams.append((_flat(buf), hashes))
                flat = _flat(buf)
                spans[address_of(flat), flat.nbytes] = sum(not p[2] for p in parts)
            return hashes

        widths: dict[str, int] = {}  # new blobs of numeric arrays: their elements' size
        # Chunked buffers, whose chunks are separate blobs: the key could straddle a seam.
        seams: builtins.list[tuple[memoryview, builtins.list[str]]] = []
        spans: dict[tuple[int, int], int] = {}  # chunked buffers: how many chunks were new

        group_blobs: builtins.list[tuple[builtins.list[str], set[str]]] = []
        for group in snap.groups:
            index = len(groups)
            payload_index, indexes = planned[id(group)]
            [h_pickle] = address(payload_index)
            hashes: builtins.list[str] = []
            chunks: builtins.list[int] = []
            for i in indexes:
                # Large buffers are stored in chunks: an edit to part of an array writes
                # only the chunks it touched, and chunks read and verify in parallel.
                pieces = address(i)
                hashes.extend(pieces)
                chunks.append(len(pieces))
            entry: dict[str, Any] = {
                "names": group.names,
                "pickle": h_pickle,
                "buffers": hashes,
                "size": group.size,
                "pickler": group.pickler,
            }
            if any(n != 1 for n in chunks):
                entry["chunks"] = chunks
            groups.append(entry)
            group_blobs.append((group.names, {h_pickle, *hashes}))
            for name in group.names:
                variables[name] = {
                    "type": snap.types.get(name, "?"),
                    "size": group.size,
                    "group": index,
                    "shared_with": [n for n in group.names if n != name],
                    **snap.shapes.get(name, {}),
                }
        rng_hash = address(rng_index)[0] if rng_index is not None else None
        data = {h: data[h] for h in sorted(data, key=rank.__getitem__)}  # a stable sort
        found = self._key_carriers(namespace, data, group_blobs, seams, searched)
        withheld = {**snap.withheld, **exclude}
        secrets = [*snap.secrets, *self.key.text_patterns]
        body: dict[str, Any] = {
            "format": FORMAT,
            "id": 0,
            "notebook": {"key": notebook.key, "path": notebook.path},
            "created": self.clock(),
            "status": status,
            # The cell's text may spell out a value withheld from the checkpoint.
            "cell": _redacted(cell, secrets) if cell else None,
            "position": _redacted(position, secrets) if position else None,
            "kernel": dict(kernel) if kernel else {"pid": os.getpid(), "host": platform.node()},
            "groups": groups,
            "variables": variables,
            "modules": snap.modules,
            "skipped": snap.skipped,
            "withheld": withheld,
            "rng": rng_hash,
            "blobs": blobs,
            "versions": _versions(),
            "stats": {},
            "recipes": _recipes(recipes, snap.skipped, secrets),
        }
        pending = PendingSave(notebook, body, data, learned, started, learned_whole)
        pending.buffers = [(*span, new) for span, new in spans.items()]
        pending.widths = widths
        return pending, found

    def _key_carriers(
        self,
        namespace: Mapping[str, Any],
        data: Mapping[str, memoryview],
        group_blobs: builtins.list[tuple[builtins.list[str], set[str]]],
        seams: builtins.list[tuple[memoryview, builtins.list[str]]],
        searched: Mapping[str, bool] | None = None,
    ) -> dict[str, dict[str, str]]:
        """The variables whose new blobs hold the signing key, with why they are withheld.

        Only blobs about to be written are searched: the others are in the store already,
        and were searched when they were written. ``searched``: blobs searched already
        (by the hashing threads), and whether the key was found in each.
        """
        key = self.key
        searched = searched or {}
        hits = {h for h in data if searched.get(h)}
        items = [(h, v) for h, v in data.items() if h not in searched]
        total = sum(v.nbytes for _, v in items)
        # memmem releases the GIL: large saves are searched on a few threads.
        search = _parallel if total > (64 << 20) else lambda fn, xs: [fn(x) for x in xs]
        hits |= {
            h for (h, _), hit in zip(items, search(lambda i: key.found_in(i[1]), items)) if hit
        }
        reach = max(len(p) for p in key.patterns) - 1
        for flat, pieces in seams:
            if not any(h in data for h in pieces):
                continue  # all stored already, and searched then
            for k, edge in enumerate(range(CHUNK_SIZE, flat.nbytes, CHUNK_SIZE), 1):
                if pieces[k - 1] in self._mapped_seen and pieces[k] in self._mapped_seen:
                    # Two restored chunks never touched, side by side as in the checkpoint
                    # they came from, whose save searched this seam: reading it would
                    # load both.
                    continue
                if key.found_in(bytes(flat[max(0, edge - reach) : edge + reach])):
                    hits.update(pieces)
                    break
        if not hits:
            return {}
        found: dict[str, dict[str, str]] = {}
        for group_names, hashes in group_blobs:
            if not hashes & hits:
                continue
            guilty = group_names
            if len(group_names) > 1:
                # Pickled together: find which of them holds it, by pickling each alone.
                alone = [n for n in group_names if n in namespace and _holds_key(key, namespace, n)]
                guilty = alone or group_names
            for name in guilty:
                value = namespace.get(name)
                found[name] = {
                    "type": type_name(value),
                    "reason": KEY_REASON.format(where=name),
                    "where": name,
                }
        if not found:
            # The key in a blob no variable accounts for (the random state?): refuse.
            raise StoreError("The signing key turned up in a checkpoint; nothing was saved.")
        return found

    def commit(
        self, pending: PendingSave, *, keep: int | None = None, max_size: int | None = None
    ) -> Checkpoint:
        """Write the missing blobs, then publish the signed manifest: the commit point.

        Safe to call from a writer thread once ``pending`` is detached from live memory.

        A lease naming every blob of the checkpoint is in the store before the first blob
        and until the manifest is published, so a concurrent gc spares them whatever the
        clocks say. Retention follows: ``keep`` and ``max_size`` default to
        DEFAULT_KEEP and DEFAULT_MAX_SIZE; UNLIMITED turns either off.
        """
        try:
            self._init_root()
            lease = Lease.take(self.backend, pending.notebook.key, pending.body["blobs"])
        except BaseException:
            self._discard_staged(pending)
            raise
        try:
            self._cleanup_tmp(DEFAULT_GRACE, lease.path)
            ident = self._commit_leased(pending, lease)
        except BaseException:
            delete_quietly(self.backend, lease.path)  # nothing published: its blobs are garbage
            self._discard_staged(pending)
            raise
        lease.release()
        self._retain_after_save(pending, keep, max_size)
        return self.read_checkpoint(pending.notebook, ident)

    @property
    def _staging(self) -> StagingBackend:
        """The backend, as one that stages (only called where :meth:`_Stager.possible`)."""
        return cast(StagingBackend, self.backend)

    def _discard(self, staged: Iterable[tuple[Staged, int]]) -> None:
        """Remove staged temp files that will not be linked (nothing for those gone)."""
        for temp, _ in staged:
            self._staging.discard(temp)

    def _discard_staged(self, pending: PendingSave) -> None:
        """Remove the temp files of ``pending``'s staged blobs that were not linked."""
        self._discard(pending.staged.values())
        pending.staged = {}

    def _cleanup_tmp(self, max_age: float, fresh: str) -> int:
        """Remove dead writers' temp files older than ``max_age`` on the store's clock.

        The backend judges ages on this machine's clock; ``fresh``, an object just
        written, tells how far ahead of the store's clock this machine is, and the limit
        grows by that much (a machine hours ahead would otherwise take a live writer's
        temp files for a dead one's).
        """
        try:
            ahead = time.time() - self.backend.mtime(fresh)
        except FileNotFoundError:
            ahead = 0.0
        return self.backend.cleanup_tmp(max_age + max(0.0, ahead))

    def _commit_leased(self, pending: PendingSave, lease: Lease) -> int:
        """The blobs and the manifest of :meth:`commit`, under ``lease``; returns the new id."""
        # Each blob file is fsynced before it is linked; each folder that gained blobs gets
        # one fsync, after all the links and before the manifest names them (one fsync per
        # blob cost ~10% of a save). ``_known_blobs`` holds only blobs known to be durable.
        folders = FolderSync()
        for h in pending.body["blobs"]:
            if h in pending.data:
                continue
            path = _blob_path(h)
            if not self.backend.exists(path):
                self._known_blobs.discard(h)
                raise StoreWriteError(
                    path, "a blob this checkpoint reuses was removed meanwhile (gc?)"
                )
            self.backend.touch(path)  # renew its age, so a concurrent gc spares it
            if h not in self._known_blobs:
                self.backend.sync_later(path, folders)  # found, not written, by this store
        bytes_new = 0
        bytes_written = 0
        items = list(pending.data.items())

        def write(item: tuple[str, memoryview]) -> int:
            h = item[0]
            written = self._write_blob(
                h, item[1], folders, pending.widths.get(h, 1), pending.staged.get(h)
            )
            lease.renew_if_due()
            return written

        try:
            # Compression and fsync of one blob overlap with the writing of others.
            results = _parallel(write, items)
            folders.sync()
        except BaseException:
            folders.abandon()
            raise
        self._known_blobs.update(pending.body["blobs"])
        for (_, view), written in zip(items, results):
            if written:
                bytes_new += view.nbytes
                bytes_written += written
        lease.renew_if_due()
        ident = self._publish(
            pending.notebook.key, pending.body, pending.started, bytes_new, bytes_written
        )
        # A gc that was running when our lease appeared may have read the leases before it,
        # and may delete a blob we found present until it ends: wait for it (only such gcs,
        # and only when one is running), so that the checks below are final.
        lease.wait_for_gcs()
        # A gc running concurrently may have removed a blob we found present and reused;
        # put any such blob back while its bytes are still in hand.
        for h, view in pending.data.items():
            if not self.backend.exists(_blob_path(h)):
                self._known_blobs.discard(h)
                self._write_blob(h, view, width=pending.widths.get(h, 1))
        # A gc that looked at the leases just before ours was written may have judged a blob
        # we reuse unused, between our check of it and now. Without its bytes we cannot
        # put it back: the checkpoint is withdrawn, never acknowledged broken.
        reused = [h for h in pending.body["blobs"] if h not in pending.data]
        if reused:
            here = _parallel(lambda h: self.backend.exists(_blob_path(h)), reused)
            missing = [h for h, present in zip(reused, here) if not present]
            if missing:
                self.backend.delete(
                    f"{_nb_dir(pending.notebook.key)}/manifests/{_manifest_name(ident)}"
                )
                self._known_blobs.difference_update(missing)
                raise StoreWriteError(
                    _blob_path(missing[0]),
                    "a gc removed a blob this checkpoint reuses while it was saved; "
                    "the checkpoint was withdrawn, save again",
                )
        self.learn(pending.learned, pending.learned_whole)
        self._usage = None if self._usage is None else self._usage + bytes_new
        return ident

    def _retain_after_save(
        self, pending: PendingSave, keep: int | None, max_size: int | None
    ) -> None:
        """Apply retention after a save: the caller's limits, else the defaults.

        The store-wide size is measured at the first save of this instance and every
        USAGE_RECHECK saves, and estimated in between (adding what each save wrote), so
        a save does not read every manifest of the store.
        """
        keep = DEFAULT_KEEP if keep is None else keep
        max_size = DEFAULT_MAX_SIZE if max_size is None else max_size
        keep_limit = None if keep == UNLIMITED else keep
        size_limit = None if max_size == UNLIMITED else max_size
        if size_limit is not None:
            self._usage_saves += 1
            if self._usage is None or self._usage_saves >= USAGE_RECHECK:
                self._usage_saves = 0
                self._usage = self._measure_usage()
            if self._usage <= size_limit:
                size_limit = None  # under the cap: nothing to do for it this time
        if keep_limit is None and size_limit is None:
            return
        # Over the cap, retain measures exactly (and leaves the result in ``_usage``).
        self.retain(pending.notebook, keep=keep_limit, max_size=size_limit)

    def _address_buffer(
        self,
        item: tuple[memoryview, bool],
        written: Mapping[tuple[int, int], int] | None = None,
        search: tuple[SigningKey, dict[str, bool]] | None = None,
        stager: _Stager | None = None,
    ) -> tuple[Any, builtins.list[Any]]:
        """:meth:`_address_pieces`, then (with ``stager`` and ``search``) each new piece
        handed to ``stager`` when neither it nor a seam between two of the buffer's pieces
        holds the key: not a byte of the key goes to a temp file either."""
        whole, parts = self._address_pieces(item, written, search)
        if stager is None or search is None:
            return whole, parts
        key, searched = search
        buf, chunked = item
        pieces = _chunks(buf) if chunked else [buf]
        new = [i for i, part in enumerate(parts) if not part[2] and searched.get(part[1]) is False]
        if not new:
            return whole, parts
        flat = _flat(buf)
        reach = max(len(p) for p in key.patterns) - 1
        seams: dict[int, bool] = {}

        def seam(k: int) -> bool:
            """Whether the key straddles the seam before piece ``k`` (read only when a new
            piece is beside it: a mapped chunk untouched since a restore stays unread)."""
            if not 0 < k < len(pieces):
                return False
            if k not in seams:
                edge = k * CHUNK_SIZE
                seams[k] = key.found_in(bytes(flat[max(0, edge - reach) : edge + reach]))
            return seams[k]

        width = _element_width(buf)
        for i in new:
            # A piece beside a seam that holds the key is left to the commit, which
            # withholds the variable once ``_key_carriers`` has seen the seam.
            if not (seam(i) or seam(i + 1)):
                stager.add(parts[i][1], pieces[i], width)
        return whole, parts

    def _address_pieces(
        self,
        item: tuple[memoryview, bool],
        written: Mapping[tuple[int, int], int] | None = None,
        search: tuple[SigningKey, dict[str, bool]] | None = None,
    ) -> tuple[Any, builtins.list[Any]]:
        """For a buffer and whether it may be chunked: the fast hash of the whole when it is
        chunked and new (else None), and ``_address`` of each of its pieces.

        An unchanged large buffer is recognised by one hash of the whole: one call, which
        releases the GIL, instead of one per chunk, each of which needs the GIL back to
        start (see ``_HashQueue``). With ``written`` (see :meth:`_by_write_tokens`), only
        the chunks written since they were last hashed are read. Runs on hashing threads:
        it only reads the caches (and adds to the chunk memo, which only this uses).

        With ``search`` (the signing key, and where to note the results), each new piece is
        searched for the key as soon as it is addressed, while it is still in the cache.
        """
        buf, chunked = item
        pieces = _chunks(buf) if chunked else [buf]

        def note(piece: memoryview, part: Any) -> Any:
            """Search a new piece for the key (once per address); ``part`` unchanged."""
            if search is not None and not part[2] and part[1] not in search[1]:
                search[1][part[1]] = search[0].found_in(piece)
            return part

        def each(piece: memoryview) -> Any:
            return note(piece, self._address(piece))

        def told(parts: builtins.list[Any]) -> builtins.list[Any]:
            return [note(piece, part) for piece, part in zip(pieces, parts)]

        if Pager.any_mapped():
            # Restored chunks never touched since (lazy restore) are their blobs still.
            mapped = [mapped_hash(piece) for piece in pieces]
            if any(h is not None for h in mapped):
                self._mapped_seen.update(h for h in mapped if h is not None)
                return None, [
                    each(piece) if h is None else (None, h, self._present(h))
                    for piece, h in zip(pieces, mapped)
                ]
        if len(pieces) == 1 or not THREADS["enabled"]:
            # On one thread (a forked child) there is no GIL to share, and a child's
            # caches die with it: one hash per chunk is all it needs.
            return None, [each(piece) for piece in pieces]
        if written:
            by_tokens = self._by_write_tokens(buf, pieces, written)
            if by_tokens is not None:
                return None, told(by_tokens)
        flat = _flat(buf)
        whole = (flat.nbytes, fast_hash(flat))
        known = self._fast_whole.get(whole)
        stored = known is not None and len(known) == len(pieces)
        if stored and all(h in self._known_blobs for h in known or ()):
            if written:  # the chunks' numbers start here: the next save reads none of them
                self._remember_chunks(buf, pieces, written, known or ())
            return None, [(None, h, True) for h in known or ()]
        parts = [each(piece) for piece in pieces]
        if written:
            self._remember_chunks(buf, pieces, written, [part[1] for part in parts])
        return whole, parts

    def _remember_chunks(
        self,
        buf: memoryview,
        pieces: builtins.list[memoryview],
        written: Mapping[tuple[int, int], int],
        hashes: Iterable[str],
    ) -> None:
        """Pair each chunk's write-tracking number with its address (see
        :meth:`_by_write_tokens`, which reads these pairs)."""
        try:
            owner_ref = weakref.ref(buf.obj)
        except TypeError:
            return
        if len(self._chunk_memo) > FAST_CACHE_MAX:
            self._chunk_memo.clear()
        for span, h in zip(_chunk_spans(buf, pieces), hashes):
            token = written.get(span)
            if token is not None:
                self._chunk_memo[span] = (token, h, owner_ref)

    def _by_write_tokens(
        self,
        buf: memoryview,
        pieces: builtins.list[memoryview],
        written: Mapping[tuple[int, int], int],
    ) -> builtins.list[Any] | None:
        """The pieces' addresses, reading only the chunks written since they were hashed.

        ``written`` maps a chunk's memory span ``(address, size)`` to a number that stays
        the same while none of its pages is written (the caller's write tracking asked the
        kernel just before this save). A chunk whose number is the one it had when this
        store last hashed it, in a buffer of the same object (kept alive all along), and
        whose blob the store holds, is that blob again. None when some chunk has no
        number, or the buffer's owner cannot be watched for its end: then every chunk is
        hashed, as without tracking.
        """
        owner = buf.obj
        try:
            owner_ref = weakref.ref(owner)
        except TypeError:
            return None  # no way to tell this memory from a later owner's at the same place
        spans = _chunk_spans(buf, pieces)
        tokens = [written.get(span) for span in spans]
        if any(token is None for token in tokens):
            return None
        if not any(
            (memo := self._chunk_memo.get(span)) is not None and memo[0] == token
            for span, token in zip(spans, tokens)
        ):
            # No chunk known by its number (the watch just began, or all were written): one
            # hash of the whole finds an unchanged buffer faster than one per chunk, and
            # pairs the numbers with the addresses (``_remember_chunks``).
            return None
        if len(self._chunk_memo) > FAST_CACHE_MAX:
            self._chunk_memo.clear()
        out: builtins.list[Any] = []
        for span, token, piece in zip(spans, tokens, pieces):
            memo = self._chunk_memo.get(span)
            # The same owner, still alive: its memory was not freed and given to another
            # object since (memory handed back and mapped again can read differently with
            # no write seen).
            if (
                memo is not None
                and memo[0] == token
                and memo[2]() is owner
                and memo[1] in self._known_blobs
            ):
                out.append((None, memo[1], True))
                continue
            found = self._address(piece)
            self._chunk_memo[span] = (cast(int, token), found[1], owner_ref)
            out.append(found)
        return out

    def _present(self, h: str) -> bool:
        """Whether the store holds blob ``h`` (of a published checkpoint): no need to write it."""
        if h in self._known_blobs:
            return True
        return self.backend.exists(_blob_path(h))

    def _address(self, view: memoryview) -> tuple[tuple[int, str] | None, str, bool]:
        """The fast hash (None for small data), the address, and whether the store has it.

        Runs on hashing threads: it only reads the store's caches.
        """
        if view.nbytes < FAST_HASH_MIN:
            return None, digest(view, threads=False), False
        fast = (view.nbytes, fast_hash(view))
        known = self._fast.get(fast)
        if known is not None and known in self._known_blobs:
            return fast, known, True
        # Pieces hash side by side on the queue's threads; BLAKE3's own threads are for
        # the large unchunked payloads.
        return fast, digest(view, threads=view.nbytes > CHUNK_MIN), False

    def learn(
        self,
        fast: Mapping[tuple[int, str], str],
        whole: Mapping[tuple[int, str], tuple[str, ...]] | None = None,
    ) -> None:
        """Remember fast-hash to address pairs of blobs now in the store (bounded)."""
        if len(self._fast) + len(fast) > FAST_CACHE_MAX:
            self._fast.clear()
        self._fast.update(fast)
        if whole:
            if len(self._fast_whole) + len(whole) > FAST_CACHE_MAX // 16:
                self._fast_whole.clear()
            self._fast_whole.update(whole)
        self._known_blobs.update(fast.values())

    def _reusable_groups(
        self, base: Checkpoint, chosen: set[str], changed: set[str]
    ) -> builtins.list[dict[str, Any]]:
        """The groups of ``base`` that hold only variables saved now and none that changed,
        and whose blobs are still there."""
        reusable = []
        for group in base.body["groups"]:
            names = set(group["names"])
            if not names <= chosen or names & changed:
                continue
            hashes = [group["pickle"], *group["buffers"]]
            # Blobs this store wrote or checked need no look here (this runs on the main
            # thread, after every auto-saved cell); commit checks, syncs and renews them all.
            unsure = [h for h in hashes if h not in self._known_blobs]
            if not all(self.backend.exists(_blob_path(h)) for h in unsure):
                continue  # collected since: pickle it again
            reusable.append(group)
        return reusable

    @staticmethod
    def _reuse_group(
        base: Checkpoint,
        group: dict[str, Any],
        groups: builtins.list[dict[str, Any]],
        variables: dict[str, dict[str, Any]],
        blobs: dict[str, dict[str, int]],
    ) -> None:
        """Record a group of ``base`` in the new checkpoint as it is."""
        for h in [group["pickle"], *group["buffers"]]:
            blobs[h] = dict(base.body["blobs"][h])
        index = len(groups)
        groups.append(dict(group))
        for name in group["names"]:
            variables[name] = {**base.body["variables"][name], "group": index}

    def _publish(
        self, key: str, body: dict[str, Any], started: float, bytes_new: int, bytes_written: int
    ) -> int:
        ids = self._manifest_ids(key)
        ident = (ids[-1] if ids else 0) + 1
        body["parent"] = ids[-1] if ids else None
        for _ in range(10_000):
            body["id"] = ident
            body["stats"] = {
                "bytes_new": bytes_new,
                "bytes_written": bytes_written,
                "bytes_total": sum(b["size"] for b in body["blobs"].values()),
                "duration": round(time.perf_counter() - started, 6),
            }
            data = self._encode_manifest(body)
            if self.key.found_in(data):
                # Cell text, a position's description, a kernel field... spelled it out.
                body.update(_redacted(body, self.key.text_patterns, shapes=False))
                data = self._encode_manifest(body)
                if self.key.found_in(data):
                    raise StoreError("The signing key turned up in a manifest; nothing was saved.")
            path = f"{_nb_dir(key)}/manifests/{_manifest_name(ident)}"
            if self.backend.create(path, _writer(data)):
                return ident
            ident += 1  # another writer took this number: take the next one
        raise StoreError(f"Could not find a free checkpoint number for {key}")

    # ------------------------------------------------------------ listing
    def notebooks(self) -> list[str]:
        return [k for k in self.backend.listdir("notebooks") if valid_key(k)]

    def list(self, notebook: NotebookRef | str | None = None) -> builtins.list[Checkpoint]:
        """Checkpoints, oldest first. Unreadable ones are listed with ``problem`` set.

        A manifest of a newer format is listed with ``newer_format`` set and status
        ``newer format``; any other that cannot be read, with status ``damaged``.
        """
        keys = (
            [notebook.key if isinstance(notebook, NotebookRef) else notebook]
            if notebook
            else self.notebooks()
        )
        found: builtins.list[Checkpoint] = []
        for key in keys:
            for ident in self._manifest_ids(key):
                try:
                    found.append(self.read_checkpoint(key, ident, trust=True))
                except NewerFormat as e:
                    found.append(Checkpoint.unreadable(key, ident, e.reason, e.found))
                except VerificationError as e:
                    found.append(Checkpoint.unreadable(key, ident, e.reason))
                except CheckpointNotFound:
                    continue  # removed while listing
        return found

    def announce(self, notebook: NotebookRef) -> Lease:
        """Say in the store that a save of ``notebook`` has begun, before its pickling.

        A process saving from a copy of the kernel (a forked child) holds this until it is
        done, so that a restore in another kernel waits for it (:meth:`savers`). The lease
        names no blob; release it when the save is over, whatever happened.
        """
        self._init_root()
        return Lease.take(self.backend, notebook.key, [])

    def savers(self, notebook: NotebookRef | str, max_age: float) -> builtins.list[int]:
        """Processes of this host saving a checkpoint of ``notebook`` now (see ``announce``)."""
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        return savers_of(self.backend, key, max_age)

    def latest_id(self, notebook: NotebookRef | str) -> int | None:
        """The newest checkpoint's id, readable or not (``read_checkpoint`` tells which)."""
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        ids = self._manifest_ids(key)
        return ids[-1] if ids else None

    # ------------------------------------------------------------------ load
    def load(
        self,
        notebook: NotebookRef | str,
        ident: int | None = None,
        names: Iterable[str] | None = None,
        *,
        trust: bool = False,
        lazy: bool = False,
    ) -> Restored:
        """Verify and unpickle a checkpoint (default: the newest one that verifies).

        The signature and every blob hash are checked BEFORE anything is unpickled. With
        ``lazy``, where :func:`.pager.unavailable` allows, large buffers are not read:
        they are mapped, and each chunk is read and its hash checked when the process first
        touches it (see :mod:`.pager`); every other blob is checked before unpickling.
        """
        # The collector is paused for all of it, not only for each unpickling: the imports
        # the pickles ask for (matplotlib's is 200 ms) make objects by the thousand too.
        with paused():
            return self._load(notebook, ident, names, trust, lazy)

    def _load(
        self,
        notebook: NotebookRef | str,
        ident: int | None,
        names: Iterable[str] | None,
        trust: bool,
        lazy: bool,
    ) -> Restored:
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        if ident is not None:
            return self._load_one(key, ident, names, trust, lazy)
        passed_over: dict[int, str] = {}
        for candidate in reversed(self._manifest_ids(key)):
            try:
                result = self._load_one(key, candidate, names, trust, lazy)
            except VerificationError as e:
                passed_over[candidate] = e.reason
                continue
            except CheckpointNotFound:
                continue
            result.passed_over = passed_over
            return result
        raise NoUsableCheckpoint(key, passed_over)

    def _load_one(
        self, key: str, ident: int, names: Iterable[str] | None, trust: bool, lazy: bool = False
    ) -> Restored:
        ck = self.read_checkpoint(key, ident, trust=trust, use_cache=False)
        m = cast(Manifest, ck.manifest)  # read_checkpoint raises for an unreadable one
        wanted = None if names is None else set(names)
        if wanted is not None:
            unknown = wanted - set(m.variables) - set(m.modules)
            if unknown:
                raise CheckpointError(
                    f"Checkpoint #{ident} has no variable {', '.join(sorted(unknown))}; "
                    f"it has {', '.join(sorted(m.variables)) or 'none'}."
                )
        groups = [g for g in m.groups if wanted is None or wanted & set(g.names)]
        sizes = m.blobs
        # The pager (lazy restore) gets ready while the pickles are read and checked (or
        # already is: see prepare_lazy). A small state is read whole: see LAZY_TOTAL_MIN.
        pager = None
        if lazy and _mappable_bytes(groups, sizes) >= _pager.LAZY_TOTAL_MIN:
            pager = Pager.for_store(self.backend)
        # Each buffer gets one allocation; its chunks are read straight into their slices.
        reads: builtins.list[tuple[str, memoryview | None]] = []
        buffers: builtins.list[builtins.list[Any]] = []
        to_map: builtins.list[tuple[builtins.list[Any], int, Any, tuple[str, ...]]] = []
        try:
            for g in groups:
                reads.append((g.pickle, None))
                group_buffers: builtins.list[Any] = []
                for parts in g.buffer_pieces():
                    total = sum(sizes[h] for h in parts)
                    if pager is not None and total >= _pager.LAZY_MIN:
                        to_map.append((group_buffers, len(group_buffers), parts, g.names))
                        group_buffers.append(None)  # mapped once the pickles are read
                        continue
                    group_buffers.append(self._read_into(reads, parts, sizes))
                buffers.append(group_buffers)
        except (MemoryError, OverflowError, OSError) as e:
            raise VerificationError(
                ident, f"its data does not fit in memory here ({type(e).__name__})"
            ) from None
        if m.rng is not None:
            reads.append((m.rng, None))
        mapped = 0
        # The maps are asked for first: the pager opens their blobs while the pickles are
        # read and the groups that need no mapped buffer are unpickled here. Nothing
        # touches mapped memory before its map is answered.
        tickets = self._begin_maps(pager, ident, to_map, sizes) if pager is not None else []
        waits = {id(group_buffers) for group_buffers, _, _, _ in to_map}
        values: dict[str, Any] = {}
        failed: dict[str, str] = {}
        try:
            try:
                results = self._read_blobs(reads, sizes)
                data = {h: blob for (h, into), blob in zip(reads, results) if into is None}
                for g, group_buffers in zip(groups, buffers):
                    if id(group_buffers) not in waits:
                        self._unpickle(g, group_buffers, data, wanted, values, failed)
            finally:
                bufs = self._end_maps(pager, ident, tickets)
            late: builtins.list[tuple[str, memoryview | None]] = []
            for (group_buffers, i, parts, _), buf in zip(to_map, bufs):
                if buf is None:  # the pager stopped: read it now
                    buf = self._read_into(late, parts, sizes)
                else:
                    mapped += sum(sizes[h] for h in parts)
                group_buffers[i] = buf
            self._read_blobs(late, sizes)
        except _BlobError as e:
            raise VerificationError(ident, f"blob {e.h[:12]} {e.why}") from None
        except (MemoryError, OverflowError):
            raise VerificationError(ident, "its data does not fit in memory here") from None
        for g, group_buffers in zip(groups, buffers):
            if id(group_buffers) in waits:
                self._unpickle(g, group_buffers, data, wanted, values, failed)
        order = [name for g in groups for name in g.names]  # the manifest's order, as saved
        values = {name: values[name] for name in order if name in values}
        modules = {n: mod for n, mod in m.modules.items() if wanted is None or n in wanted}
        rng = bytes(data[m.rng]) if m.rng is not None and wanted is None else None
        return Restored(ck, values, modules, rng, failed, mapped=mapped)

    @staticmethod
    def _unpickle(
        g: Group,
        group_buffers: builtins.list[Any],
        data: Mapping[str, Any],
        wanted: set[str] | None,
        values: dict[str, Any],
        failed: dict[str, str],
    ) -> None:
        """Unpickle group ``g`` into ``values``; a failure names the variables it cost."""
        try:
            loaded = deserialize(bytes(data[g.pickle]), group_buffers, g.pickler)
        except Exception as e:
            for name in g.names:
                failed[name] = f"{type(e).__name__}: {e}"
            return
        for name in g.names:
            if wanted is None or name in wanted:
                if name in loaded:
                    values[name] = loaded[name]
                else:
                    failed[name] = "its group was saved without it"

    def prepare_lazy(self, checkpoint: Checkpoint) -> bool:
        """Start the pager now when restoring ``checkpoint`` lazily would map its buffers.

        A new kernel that finds a checkpoint from an earlier one calls this, so the pager
        process is ready (started, imported) by the time the user restores: its start is
        then off the restore's path. True when a pager is running for this store. If no
        restore uses it within ``pager.IDLE_RETIRE`` seconds, it stops.
        """
        m = checkpoint.manifest
        if m is None or _mappable_bytes(m.groups, m.blobs) < _pager.LAZY_TOTAL_MIN:
            return False
        pager = Pager.for_store(self.backend)
        if pager is None:
            return False
        pager.retire_unless_used()  # no restore within IDLE_RETIRE: it stops
        return True

    @staticmethod
    def _read_into(
        reads: builtins.list[tuple[str, memoryview | None]],
        parts: Iterable[str],
        sizes: Mapping[str, int],
    ) -> Any:
        """A new buffer for ``parts``, with a read of each into its slice added to ``reads``."""
        parts = builtins.list(parts)
        buf = _allocate(sum(sizes[h] for h in parts))
        view, offset = memoryview(buf), 0
        for h in parts:
            reads.append((h, view[offset : offset + sizes[h]]))
            offset += sizes[h]
        return buf

    def _read_blobs(
        self, reads: builtins.list[tuple[str, memoryview | None]], sizes: Mapping[str, int]
    ) -> builtins.list[Any]:
        """Each read's blob (into its slice, or a new bytearray), each blob read and checked once.

        A blob named again (the same bytes in several buffers, a run of zero chunks) is
        copied from its first read: a copy is cheaper than another read and hash.
        """
        first: dict[str, int] = {}
        for i, (h, _) in enumerate(reads):
            first.setdefault(h, i)
        once = [reads[i] for i in first.values()]
        # Reading, decompressing and hashing release the GIL: blobs go in parallel.
        got = _parallel(lambda r: self._read_blob(r[0], sizes[r[0]], r[1]), once)
        done = {h: blob for h, blob in zip(first, got)}
        results = []
        for i, (h, into) in enumerate(reads):
            if i == first[h] or into is None:  # a pickle: unpickling only reads it
                results.append(done[h])
            else:
                into[:] = done[h]
                results.append(into)
        return results

    @staticmethod
    def _begin_maps(
        pager: Pager,
        ident: int,
        to_map: Iterable[tuple[Any, int, Any, tuple[str, ...]]],
        sizes: Mapping[str, int],
    ) -> builtins.list[MapTicket | None]:
        """Ask the pager for each buffer's map; None for one it cannot take (read it then)."""
        to_map = builtins.list(to_map)
        for _, _, parts, _ in to_map:  # all checked before any map is asked for
            for h in parts:
                if not _valid_hash(h):
                    raise VerificationError(
                        ident, f"the manifest names an invalid blob address {h!r}"
                    )
        tickets: builtins.list[MapTicket | None] = []
        for _, _, parts, names in to_map:
            try:
                tickets.append(pager.map_begin([(h, sizes[h]) for h in parts], ident, names))
            except OSError:
                tickets.append(None)
        return tickets

    @staticmethod
    def _end_maps(
        pager: Pager | None, ident: int, tickets: Iterable[MapTicket | None]
    ) -> builtins.list[Any]:
        """The mapped buffers (None: read it now, the pager stopped), every map answered.

        Raises ``VerificationError`` naming the first blob the pager could not open, once
        every answer is in (none is left half taken).
        """
        bufs: builtins.list[Any] = []
        failed: tuple[str, str] | None = None
        for ticket in tickets:
            buf = None
            if ticket is not None and pager is not None:
                try:
                    buf = pager.map_end(ticket)
                except LookupError as e:
                    failed = failed or e.args[0]
                except OSError:
                    pass
            bufs.append(buf)
        if failed is not None:
            h, why = failed
            raise VerificationError(ident, f"blob {h[:12]} {why}")
        return bufs

    # ----------------------------------------------------------- maintenance
    def verify(self, notebook: NotebookRef | str | None = None) -> builtins.list[Problem]:
        """Check every manifest's signature and every blob it names; list what is wrong.

        Any checkpoint that cannot be read (damaged, unsigned, a newer format) is one problem.
        """
        problems: builtins.list[Problem] = []
        keys = (
            [notebook.key if isinstance(notebook, NotebookRef) else notebook]
            if notebook
            else self.notebooks()
        )
        checked: dict[str, str | None] = {}
        for key in keys:
            for ident in self._manifest_ids(key):
                try:
                    ck = self.read_checkpoint(key, ident, use_cache=False)
                except VerificationError as e:
                    problems.append(Problem(key, ident, e.reason))
                    continue
                except CheckpointNotFound:
                    continue
                for h, size in cast(Manifest, ck.manifest).blobs.items():
                    if h not in checked:
                        try:
                            self._read_blob(h, size)
                            checked[h] = None
                        except _BlobError as e:
                            checked[h] = e.why
                        except MemoryError:
                            checked[h] = "is too large to check in this much memory"
                    if checked[h]:
                        problems.append(Problem(key, ident, f"blob {h[:12]} {checked[h]}"))
        problems.extend(_unsafe(self.backend.unsafe_entries(), keys if notebook else None))
        return problems

    def delete(self, notebook: NotebookRef | str, ident: int) -> None:
        """Remove a checkpoint's manifest; its blobs go at the next gc if nothing else uses them."""
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        path = f"{_nb_dir(key)}/manifests/{_manifest_name(ident)}"
        if not self.backend.exists(path):
            raise CheckpointNotFound(ident, key, self._manifest_ids(key))
        self.backend.delete(path)
        self.backend.delete(f"{_nb_dir(key)}/pins/{ident}")
        self.backend.delete(f"{_nb_dir(key)}/status/{ident}")
        self._manifest_cache.pop((key, ident), None)

    def pin(self, notebook: NotebookRef | str, ident: int, pinned: bool = True) -> None:
        """Pinned checkpoints are never removed by retention."""
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        if ident not in self._manifest_ids(key):
            raise CheckpointNotFound(ident, key, self._manifest_ids(key))
        if pinned:
            self.backend.replace(f"{_nb_dir(key)}/pins/{ident}", b"")
        else:
            self.backend.delete(f"{_nb_dir(key)}/pins/{ident}")

    def _pinned(self, key: str) -> set[int]:
        """Pinned ids of a notebook, from one listing (not one look per checkpoint)."""
        return {int(n) for n in self.backend.listdir(f"{_nb_dir(key)}/pins") if n.isdigit()}

    def _manifest_blobs(
        self, key: str, ident: int, use_cache: bool = False
    ) -> dict[str, int] | None:
        """Blob address -> size for one manifest; None when it is gone.

        A manifest this installation cannot read (damaged, unsigned, of a newer format)
        still protects its blobs: every blob-address-shaped string in its bytes counts as
        in use, with size -1 (unknown). Only a failure to reach the store raises.
        """
        try:
            ck = self.read_checkpoint(key, ident, trust=True, use_cache=use_cache)
            return {h: int(info["size"]) for h, info in ck.body["blobs"].items()}
        except CheckpointNotFound:
            return None
        except Exception:  # whatever the reader made of it, read the bytes (errors go up)
            path = f"{_nb_dir(key)}/manifests/{_manifest_name(ident)}"
            try:
                raw = read_capped(self.backend, path, MAX_MANIFEST + 1)
            except (FileNotFoundError, StoreEntryRefused):
                return None  # a link, special file or giant is no manifest this store wrote
            return dict.fromkeys(hashes_in(raw), -1)

    def _all_manifest_blobs(self, use_cache: bool = False) -> dict[tuple[str, int], dict[str, int]]:
        """Every manifest's blobs, each manifest read once (several at a time)."""
        where = [(key, ident) for key in self.notebooks() for ident in self._manifest_ids(key)]
        found = _parallel(lambda kv: self._manifest_blobs(kv[0], kv[1], use_cache), where)
        return {kv: blobs for kv, blobs in zip(where, found) if blobs is not None}

    def _referenced(self) -> dict[str, int]:
        refs: dict[str, int] = {}
        for blobs in self._all_manifest_blobs().values():
            for h, size in blobs.items():
                refs[h] = max(size, refs.get(h, -1))
        return refs

    def _measure_usage(self) -> int:
        """Bytes of blobs the store's manifests use (uncompressed sizes), each counted once."""
        sizes: dict[str, int] = {}
        for blobs in self._all_manifest_blobs(use_cache=True).values():
            for h, size in blobs.items():
                sizes[h] = max(size, sizes.get(h, -1))
        return sum(self._sizes_known(sizes).values())

    def _sizes_known(self, sizes: dict[str, int]) -> dict[str, int]:
        """``sizes`` with each unknown (-1) size looked up on disk (0 when the blob is absent)."""
        for h, size in sizes.items():
            if size < 0:
                try:
                    sizes[h] = self.backend.size(_blob_path(h)) if _valid_hash(h) else 0
                except FileNotFoundError:
                    sizes[h] = 0
        return sizes

    def retain(
        self,
        notebook: NotebookRef | str,
        *,
        keep: int | None = None,
        max_size: int | None = None,
        grace: float = DEFAULT_GRACE,
    ) -> builtins.list[int]:
        """Remove the oldest unpinned checkpoints beyond ``keep``, or while the store exceeds ``max_size`` bytes.

        The newest checkpoint is always kept. Returns the removed ids. Sizes are those
        of the blobs every manifest of the store uses, each counted once: all manifests
        are read once, then each removal subtracts the blobs no other manifest uses.
        """
        key = notebook.key if isinstance(notebook, NotebookRef) else notebook
        ids = self._manifest_ids(key)
        pinned = self._pinned(key) & set(ids)
        removable = [i for i in ids[:-1] if i not in pinned]
        removed: builtins.list[int] = []
        if keep is not None:
            # The newest ``keep`` stay, and pinned ones on top of them.
            newest = set(ids[-max(keep, 1) :])
            for victim in [i for i in removable if i not in newest]:
                # Another writer's retention may have removed it first: gone is gone.
                with contextlib.suppress(CheckpointNotFound):
                    self.delete(key, victim)
                removed.append(victim)
            removable = [i for i in removable if i in newest]
        if max_size is not None and removable:
            manifests = self._all_manifest_blobs(use_cache=True)
            users: dict[str, int] = {}
            sizes: dict[str, int] = {}
            for blobs in manifests.values():
                for h, size in blobs.items():
                    users[h] = users.get(h, 0) + 1
                    sizes[h] = max(size, sizes.get(h, -1))
            self._sizes_known(sizes)
            total = sum(sizes.values())
            while removable and total > max_size:
                victim = removable.pop(0)
                with contextlib.suppress(CheckpointNotFound):
                    self.delete(key, victim)
                removed.append(victim)
                for h in manifests.get((key, victim), {}):
                    users[h] -= 1
                    if users[h] == 0:
                        total -= sizes[h]
            self._usage = total
        elif removed:
            self._usage = None  # measured again at the next save
        if removed:
            self.gc(grace=grace)
        return removed

    def gc(self, *, grace: float = DEFAULT_GRACE) -> GcReport:
        """Delete blobs no manifest references, if older than ``grace`` seconds, and dead writers' temp files.

        Nothing here reads this machine's clock. Blobs of saves in progress are named by
        their leases, which gc reads before the manifests; ages are measured on the
        store's clock (the modification time of a marker gc writes first), and a blob
        written after the marker is always spared, even with ``grace=0``. Blobs of
        manifests that cannot be read are treated as in use.
        """
        clock = StoreClock.read(self.backend)
        try:
            leases = scan_leases(self.backend, clock, grace)
            # A live writer's temp files are young: spare them, whatever the grace.
            tmp_age = max(grace, LEASE_TTL if leases.live else TMP_MIN_AGE)
            report = GcReport(removed_tmp=self._cleanup_tmp(tmp_age, clock.path))
            refs = self._referenced()
            clock.renew_if_due()
            for prefix in self.backend.listdir("blobs"):
                if len(prefix) != 2 or not set(prefix) <= _HEX:
                    continue  # not a folder this store made: never touched
                for rest in self.backend.listdir(f"blobs/{prefix}"):
                    h = prefix + rest
                    if not _valid_hash(h):
                        continue  # not a blob's name (someone else's file): never deleted
                    if h in refs or h in leases.protected:
                        continue
                    path = f"blobs/{prefix}/{rest}"
                    clock.renew_if_due()
                    leases.refresh(self.backend)
                    if h in leases.protected:
                        continue
                    try:
                        # Read the age right before deleting, to keep the race window small.
                        if self.backend.mtime(path) >= clock.now - grace:
                            report.kept_recent += 1
                            continue
                        size = self.backend.size(path)
                    except FileNotFoundError:
                        continue
                    self.backend.delete(path)
                    self._known_blobs.discard(h)
                    report.removed_blobs += 1
                    report.freed_bytes += size
        finally:
            delete_quietly(self.backend, clock.path)
        return report

    def disk_usage(self) -> int:
        """Bytes stored in blobs (compressed sizes on disk)."""
        total = 0
        for prefix in self.backend.listdir("blobs"):
            for rest in self.backend.listdir(f"blobs/{prefix}"):
                with contextlib.suppress(FileNotFoundError):
                    total += self.backend.size(f"blobs/{prefix}/{rest}")
        return total


class _Stager:
    """A save's new blobs written to temp files on worker threads while it still pickles.

    The hashing threads hand over each new blob once it is hashed and searched for the
    key; writing, compressing and fsync release the GIL, so the writes overlap with the
    pickling, and the commit only links each file in place (under its lease, as before).
    A blob the store has already is not written. A temp file is no blob: a crash leaves
    only temp files, which a later save removes once their writer is dead.
    """

    def __init__(self, store: CheckpointStore) -> None:
        store._init_root()  # the temp folder is inside it
        self._store = store
        self._lock = threading.Lock()
        self._futures: dict[str, Any] = {}
        self._closed = False  # no further blob is taken
        self._stopped = False  # no further write is started (a write failed, or abandoned)

    @staticmethod
    def possible(store: CheckpointStore) -> bool:
        """Whether ``store`` can stage: a local folder, with worker threads (none in a forked
        child, nor at the kernel's exit)."""
        local = getattr(store.backend, "local", False) and hasattr(store.backend, "stage")
        return bool(local and THREADS["enabled"])

    def add(self, h: str, data: memoryview, width: int) -> None:
        with self._lock:
            if self._closed or h in self._futures:
                return
            self._futures[h] = _stage_pool().submit(self._stage, h, data, width)

    def _stage(self, h: str, data: memoryview, width: int) -> tuple[Staged, int] | None:
        if self._stopped:
            return None
        try:
            return self._store._stage_blob(h, data, width)
        except BaseException:
            self._stopped = True  # the save fails: start no further write
            raise

    def finish(self) -> dict[str, tuple[Staged, int]]:
        """The blobs staged, once every write is done; the first error of a write is raised
        (a failed fsync fails the save, as it would have in the commit), every temp file
        then removed."""
        with self._lock:
            self._closed = True
        staged: dict[str, tuple[Staged, int]] = {}
        error: BaseException | None = None
        for h, future in self._futures.items():
            try:
                result = future.result()
            except BaseException as e:
                error = error or e
                continue
            if result is not None:
                staged[h] = result
        if error is not None:
            self._store._discard(staged.values())
            raise error
        return staged

    def abandon(self) -> None:
        """Stop, and remove every temp file written."""
        self._stopped = True
        with contextlib.suppress(Exception):  # finish removed them then
            self._store._discard(self.finish().values())


def _unsafe(entries: Iterable[UnsafeEntry], keys: Iterable[str] | None) -> builtins.list[Problem]:
    """``verify``'s problems for links and special files (store-wide ones, and ``keys``' own)."""
    found = []
    wanted = None if keys is None else set(keys)
    for entry in entries:
        parts = entry.path.split("/")
        key = parts[1] if parts[0] == "notebooks" and len(parts) > 1 else ""
        if wanted is not None and key and key not in wanted:
            continue
        stem = parts[3].partition(".")[0] if len(parts) > 3 else ""
        ident = int(stem) if stem.isdigit() and len(stem) < 12 else None
        found.append(Problem(key or "(store)", ident, f"{entry.path}: {entry.why}"))
    return found


def _redacted(obj: Any, secrets: Iterable[str], shapes: bool = True) -> Any:
    """A copy of a JSON-like value with ``secrets`` (and, with ``shapes``, token-shaped
    text) replaced in every string, keys included."""
    secrets = builtins.list(secrets)
    if isinstance(obj, str):
        if shapes:
            return redact(obj, secrets)
        for secret in secrets:
            obj = obj.replace(secret, "[withheld]")
        return obj
    if isinstance(obj, Mapping):
        return {
            _redacted(k, secrets, shapes): _redacted(v, secrets, shapes) for k, v in obj.items()
        }
    if isinstance(obj, (builtins.list, tuple)):
        return [_redacted(v, secrets, shapes) for v in obj]
    return obj


def _recipes(
    recipes: Mapping[str, Mapping[str, Any]] | None,
    skipped: Mapping[str, Any],
    secrets: Iterable[str],
) -> dict[str, Any]:
    """The recipes of the skipped variables. A recipe whose statements spell out a value
    withheld from the checkpoint keeps no statements (running redacted code would be wrong)."""
    out: dict[str, Any] = {}
    if not recipes:
        return out
    secrets = builtins.list(secrets)
    for name in skipped:
        recipe = recipes.get(name)
        if recipe is None:
            continue
        recipe = {
            "steps": [dict(s) for s in recipe.get("steps", ())],
            "reads": builtins.list(recipe.get("reads", ())),
            "note": recipe.get("note"),
        }
        if _redacted(recipe, secrets) != recipe:
            recipe = {"steps": [], "reads": [], "note": "its statements hold a credential"}
        out[name] = recipe
    return out


def _without(snap: Snapshot, names: set[str]) -> Snapshot:
    """``snap`` less the groups that hold any of ``names`` (a snapshot cannot be re-pickled)."""
    groups = [g for g in snap.groups if not set(g.names) & names]
    kept = {n for g in groups for n in g.names}
    types_ = {n: t for n, t in snap.types.items() if n in kept}
    skipped = dict(snap.skipped)
    for g in snap.groups:
        carriers = sorted(set(g.names) & names)
        for n in g.names:
            if carriers and n not in names:
                skipped[n] = {
                    "type": snap.types.get(n, "?"),
                    "reason": f"pickled together with {', '.join(carriers)}, which holds "
                    "the signing key",
                }
    shapes = {n: s for n, s in snap.shapes.items() if n in kept}
    return Snapshot(
        groups, types_, snap.modules, skipped, snap.withheld, snap.rng, snap.secrets, shapes
    )


def _holds_key(key: SigningKey, namespace: Mapping[str, Any], name: str) -> bool:
    """Whether the variable ``name``, pickled on its own, carries the signing key."""
    alone = serialize(namespace, [name], include_credentials=True, with_rng=False)
    return any(
        key.found_in(g.payload) or any(key.found_in(b) for b in g.buffers) for g in alone.groups
    )


def _not_a_file(error: BaseException) -> bool:
    """Whether reading failed because a folder stands where a record should be."""
    kinds = (IsADirectoryError, NotADirectoryError)
    return isinstance(error, kinds) or isinstance(error.__cause__, kinds)


def _writer(data: bytes) -> Callable[[IO[bytes]], None]:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


def _element_width(view: memoryview) -> int:
    """The size of the numbers in the buffer of a NumPy array (2, 4 or 8: see ``blobs``),
    else 1 (bytes, text, pickles, buffers of unknown layout)."""
    try:
        dtype = getattr(view.obj, "dtype", None)
        kind, size = getattr(dtype, "kind", None), int(getattr(dtype, "itemsize", 0))
    except Exception:
        return 1
    if kind == "c":  # complex: two floats
        kind, size = "f", size // 2
    return size if kind in ("i", "u", "f", "M", "m") and size in SHUFFLE_WIDTHS else 1


def _mappable_bytes(groups: Iterable[Group], sizes: Mapping[str, int]) -> int:
    """How much of ``groups``' buffers a lazy restore would map (each buffer of LAZY_MIN on)."""
    totals = (sum(sizes.get(h, 0) for h in parts) for g in groups for parts in g.buffer_pieces())
    return sum(t for t in totals if t >= _pager.LAZY_MIN)


def _allocate(size: int) -> Any:
    """A writable buffer for a restored array, not zero-filled first.

    ``bytearray(n)`` writes n zeros before the data is read over them, a whole extra pass
    over memory; an anonymous map is zeroed by the kernel page by page as it is filled.
    """
    if size < (1 << 20):
        return bytearray(size)
    # MAP_PRIVATE, not mmap's default MAP_SHARED: a forked snapshot child must get
    # copy-on-write pages, not memory the parent keeps changing.
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _flat(view: memoryview) -> memoryview:
    """The same memory as a one-dimensional view of bytes."""
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _chunk_spans(
    buf: memoryview, pieces: builtins.list[memoryview]
) -> builtins.list[tuple[int, int]]:
    """The memory ``(address, size)`` of each of ``buf``'s pieces (see :func:`_chunks`)."""
    start = address_of(_flat(buf))
    return [(start + i * CHUNK_SIZE, piece.nbytes) for i, piece in enumerate(pieces)]


def _chunks(view: memoryview) -> builtins.list[memoryview]:
    """A buffer cut into ``CHUNK_SIZE`` pieces when it is large, else the buffer itself."""
    view = _flat(view)
    if view.nbytes <= CHUNK_MIN:
        return [view]
    return [view[start : start + CHUNK_SIZE] for start in range(0, view.nbytes, CHUNK_SIZE)]


def _compresses(
    data: memoryview, gain: float, budget: int = COMPRESS_SAMPLE, width: int = 1
) -> bool:
    """Whether zstd pays for this buffer, judged on samples from its start, middle and end.

    ``budget`` is the bytes sampled in all; ``width`` > 1: each sample byte-shuffled, as
    it would be stored (the samples then start and end on whole elements).
    """
    if data.nbytes < COMPRESS_MIN:
        return False
    return _sampled_ratio(data, budget, width) < gain


def _sampled_ratio(data: memoryview, budget: int, width: int) -> float:
    """zstd's size over the original's, on samples from the start, middle and end."""
    size = min(budget // 3, data.nbytes) // width * width
    starts = {0, max(0, data.nbytes // 2 - size // 2), max(0, data.nbytes - size)}
    pieces = [data[start : start + size] for start in sorted(s // width * width for s in starts)]
    sample = b"".join(shuffle(p, width) if width > 1 else bytes(p) for p in pieces)
    return len(zstandard.ZstdCompressor(level=1).compress(sample)) / max(1, len(sample))


def _layout(data: memoryview, width: int) -> int:
    """The element width to byte-shuffle by before zstd, or 1 to leave the bytes as they are.

    Shuffling is right for most numbers (neighbours share their high bytes: a smooth
    float64 column shrinks to under 1% instead of 10%), wrong for values that recur whole
    (prices rounded to cents: 19% as they are, 50% shuffled, where zstd's matches of whole
    8-byte values are cut apart). Both are tried on a small sample: the bytes are left as
    they are only when that is clearly smaller, as shuffled data compresses about three
    times faster.
    """
    if width not in SHUFFLE_WIDTHS or data.nbytes < COMPRESS_MIN:
        return 1
    shuffled = _sampled_ratio(data, COMPRESS_PROBE, width)
    return 1 if _sampled_ratio(data, COMPRESS_PROBE, 1) < 0.75 * shuffled else width
