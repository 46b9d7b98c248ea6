"""What the store hands back: checkpoints read, restores done, findings, and saves in progress."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .identity import NotebookRef
from .manifest import Manifest


class ReadOnlyBody(dict[str, Any]):
    """A manifest body that refuses changes; a copy of it (``copy.deepcopy``) is a plain dict."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a checkpoint's manifest body is read-only: change a copy of it")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


@dataclass
class Checkpoint:
    """A checkpoint as read from the store: its manifest, whether its signature verified,
    and, for one that cannot be read, why (``manifest`` is then None).

    Readers use ``manifest`` (typed, checked). ``body`` is the raw manifest body, read-only,
    kept for the code that has not moved to ``manifest`` yet.

    Examples
    --------
    >>> from nbcheckpoint.store.manifest import Manifest, NotebookInfo
    >>> m = Manifest(id=3, notebook=NotebookInfo("k", "k.ipynb"), created=1.0, status="auto")
    >>> ck = Checkpoint(m, True)
    >>> ck.id, ck.status, ck.body["status"]
    (3, 'auto', 'auto')
    >>> bad = Checkpoint.unreadable("k", 4, "the manifest is truncated or damaged")
    >>> bad.id, bad.status, bad.manifest is None
    (4, 'damaged', True)
    """

    manifest: Manifest | None
    verified: bool
    problem: str | None = None
    pinned: bool = False
    status_override: str | None = None
    # For an unreadable one: where it was found, and the format when it is a newer one.
    where: tuple[str, int] | None = None
    newer_format: int | None = None
    raw: Mapping[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def unreadable(
        cls, notebook: str, ident: int, problem: str, newer_format: int | None = None
    ) -> Checkpoint:
        """A checkpoint whose manifest could not be read, listed with the reason."""
        return cls(None, False, problem, where=(notebook, ident), newer_format=newer_format)

    @property
    def id(self) -> int:
        if self.manifest is None:
            return self.where[1] if self.where else 0
        return self.manifest.id

    @property
    def notebook(self) -> str:
        if self.manifest is None:
            return self.where[0] if self.where else ""
        return self.manifest.notebook.key

    @property
    def created(self) -> float:
        return 0.0 if self.manifest is None else self.manifest.created

    @property
    def status(self) -> str:
        """The checkpoint's status; ``damaged`` or ``newer format`` for one that cannot be read."""
        if self.manifest is None:
            return "newer format" if self.newer_format is not None else "damaged"
        return self.status_override or self.manifest.status

    @property
    def total_bytes(self) -> int:
        return 0 if self.manifest is None else self.manifest.total_bytes

    @property
    def new_bytes(self) -> int:
        return 0 if self.manifest is None else self.manifest.new_bytes

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        """Compatibility: the raw variable entries (typed: ``manifest.variables``)."""
        return dict(self.body["variables"])

    @property
    def body(self) -> Mapping[str, Any]:
        """Compatibility, read-only: the manifest body (a stand-in for an unreadable one)."""
        if self.raw is not None:
            return self.raw if isinstance(self.raw, ReadOnlyBody) else ReadOnlyBody(self.raw)
        if self.manifest is not None:
            return ReadOnlyBody(self.manifest.to_dict())
        return ReadOnlyBody(
            {
                "id": self.id,
                "notebook": {"key": self.notebook, "path": self.notebook},
                "created": 0.0,
                "status": self.status,
                "cell": None,
                "position": None,
                "kernel": {},
                "groups": [],
                "variables": {},
                "modules": {},
                "skipped": {},
                "withheld": {},
                "blobs": {},
                "stats": {},
            }
        )


@dataclass
class Restored:
    """What a restore brought back, and what it could not."""

    checkpoint: Checkpoint
    values: dict[str, Any]
    modules: dict[str, str]
    rng: bytes | None
    failed: dict[str, str] = field(default_factory=dict)
    passed_over: dict[int, str] = field(default_factory=dict)
    # Bytes of large buffers mapped, to be read and checked on first use (lazy restore).
    mapped: int = 0


@dataclass
class GcReport:
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept_recent: int = 0
    removed_tmp: int = 0
    removed_checkpoints: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Problem:
    """One finding of ``verify``: what is wrong, and with which checkpoint or blob."""

    notebook: str
    ident: int | None
    what: str


@dataclass
class PendingSave:
    """A checkpoint pickled and addressed, not yet written."""

    notebook: NotebookRef
    body: dict[str, Any]
    data: dict[str, memoryview]
    learned: dict[tuple[int, str], str]
    started: float
    learned_whole: dict[tuple[int, str], tuple[str, ...]] = field(default_factory=dict)
    # Each large buffer's memory ``(address, size)`` and how many of its chunks were new:
    # what a caller watching writes between saves needs (see ``capture.pages.ChunkWatch``).
    buffers: list[tuple[int, int, int]] = field(default_factory=list)
    # New blobs of numeric arrays: the size of their numbers (byte-shuffled when compressed).
    widths: dict[str, int] = field(default_factory=dict)
    # New blobs already written to temp files while pickling (a synchronous save on a local
    # store): ``(Staged, bytes written)`` by address, linked in place by the commit.
    staged: dict[str, Any] = field(default_factory=dict)

    @property
    def new_bytes(self) -> int:
        """Bytes that may need writing (those not known to be in the store)."""
        return sum(v.nbytes for v in self.data.values())

    def detach(self, budget: int) -> bool:
        """Copy the data still pointing at live objects, if it fits in ``budget`` bytes.

        After this the namespace may change freely while a writer thread commits.
        """
        if self.new_bytes > budget:
            return False
        self.data = {h: memoryview(bytes(v)) for h, v in self.data.items()}
        return True
