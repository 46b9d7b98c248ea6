"""One exception tree for nbcheckpoint; each error builds its message from what it names."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every error nbcheckpoint raises on purpose."""


class StoreError(CheckpointError):
    """The store could not be read or written."""


class StoreWriteError(StoreError):
    """A save failed; the checkpoint was abandoned and earlier ones are intact."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"Could not write checkpoint data to {path}: {reason}. "
            "The checkpoint was abandoned; earlier checkpoints are intact."
        )


class StoreEntryRefused(StoreError):
    """A store entry is not read: a link, a special file, or larger than such a record may be.

    Readers treat it like any damaged record: the checkpoint it belongs to is one bad
    checkpoint, and ``nbcheckpoint verify`` names it.
    """

    def __init__(self, path: str, reason: str, where: str = "") -> None:
        self.path = path
        self.reason = reason
        place = f" in the store {where}" if where else ""
        super().__init__(f"Refused to read {path}{place}: {reason}.")


class CheckpointNotFound(CheckpointError):
    """No checkpoint has the requested id."""

    def __init__(
        self, ident: object, notebook: str | None = None, known: list[int] | None = None
    ) -> None:
        self.ident = ident
        where = f" for notebook {notebook}" if notebook else ""
        hint = ""
        if known:
            shown = ", ".join(f"#{k}" for k in known[-5:])
            hint = f" Known checkpoints: {shown}."
        elif known is not None:
            hint = " There are no checkpoints yet."
        super().__init__(f"No checkpoint #{ident}{where}.{hint}")


class AmbiguousCheckpoint(CheckpointError):
    """An id matches checkpoints of several notebooks."""

    def __init__(self, ident: object, notebooks: list[str]) -> None:
        self.ident = ident
        self.notebooks = notebooks
        super().__init__(
            f"Checkpoint #{ident} exists for several notebooks ({', '.join(notebooks)}); "
            "name one with --notebook."
        )


class VerificationError(CheckpointError):
    """A checkpoint failed its signature or integrity check; nothing was unpickled."""

    def __init__(self, ident: object, reason: str) -> None:
        self.ident = ident
        self.reason = reason
        super().__init__(f"Checkpoint #{ident} failed verification: {reason}.")


class UntrustedCheckpoint(VerificationError):
    """The signature is missing or was made with another key."""

    def __init__(self, ident: object, reason: str) -> None:
        super().__init__(ident, reason)
        self.args = (
            f"Checkpoint #{ident} is not trusted: {reason}. Nothing was loaded. "
            "To restore it here, give this kernel the signing key of the machine that saved "
            "it, then restart the kernel: copy that machine's key file (`%checkpoint config` "
            "there shows where it is; by default nbcheckpoint/signing.key in its Jupyter data "
            "folder) to this machine and set NBCHECKPOINT_KEY_FILE=/path/to/that/file, or set "
            "NBCHECKPOINT_KEY to the hex string inside it. "
            "If you know where it came from and trust it, restore it anyway with "
            "`%checkpoint restore --trust` (trust=True in Python).",
        )


class MalformedManifest(VerificationError):
    """A manifest (or a checkpoint's status record) holds something this store never writes."""

    def __init__(self, ident: object, problem: str) -> None:
        super().__init__(ident, f"the manifest content is malformed ({problem})")
        self.problem = problem


class NewerFormat(VerificationError):
    """A manifest written by a newer nbcheckpoint, in a format this one cannot read."""

    def __init__(self, ident: object, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            ident,
            f"it was written by a newer nbcheckpoint (format {found}; this one reads up to "
            f"{known}): upgrade nbcheckpoint to read it",
        )
        self.args = (
            f"Checkpoint #{ident} was written by a newer nbcheckpoint (format {found}): "
            "upgrade nbcheckpoint to read it (pip install -U nbcheckpoint). It was left as it is.",
        )


class NoUsableCheckpoint(CheckpointError):
    """No checkpoint of a notebook verified."""

    def __init__(self, notebook: str, skipped: dict[int, str]) -> None:
        self.notebook = notebook
        self.skipped = skipped
        if skipped:
            why = "; ".join(f"#{k}: {v}" for k, v in sorted(skipped.items(), reverse=True)[:5])
            msg = f"No checkpoint of {notebook} could be restored ({why})."
        else:
            msg = f"There are no checkpoints for {notebook} yet."
        super().__init__(msg)


class RestoreError(CheckpointError):
    """A verified checkpoint could not be loaded into Python objects."""

    def __init__(self, names: list[str], reason: str) -> None:
        self.names = names
        super().__init__(f"Could not restore {', '.join(names)}: {reason}")


class ConfigError(CheckpointError):
    """A setting has a value nbcheckpoint cannot use."""


class DamagedData(CheckpointError, AttributeError):
    """A variable whose lazily restored data failed its check was used.

    Also an ``AttributeError``, so ``getattr(x, "shape", None)`` and ``hasattr`` in
    display code answer quietly instead of failing.
    """
