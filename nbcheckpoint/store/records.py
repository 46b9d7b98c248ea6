"""What the store hands back: checkpoints read, restores done, findings, and saves in progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .identity import NotebookRef


@dataclass
class Checkpoint:
    """A manifest read back from the store, with whether its signature verified."""

    body: dict[str, Any]
    verified: bool
    problem: str | None = None
    pinned: bool = False
    status_override: str | None = None

    @property
    def id(self) -> int:
        return int(self.body["id"])

    @property
    def notebook(self) -> str:
        return str(self.body["notebook"]["key"])

    @property
    def created(self) -> float:
        return float(self.body["created"])

    @property
    def status(self) -> str:
        return self.status_override or str(self.body["status"])

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return dict(self.body["variables"])

    @property
    def total_bytes(self) -> int:
        return int(sum(b["size"] for b in self.body["blobs"].values()))

    @property
    def new_bytes(self) -> int:
        return int(self.body["stats"].get("bytes_new", 0))


@dataclass
class Restored:
    """What a restore brought back, and what it could not."""

    checkpoint: Checkpoint
    values: dict[str, Any]
    modules: dict[str, str]
    rng: bytes | None
    failed: dict[str, str] = field(default_factory=dict)
    passed_over: dict[int, str] = field(default_factory=dict)


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
