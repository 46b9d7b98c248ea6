"""Variables whose lazily restored data turned out damaged: taken away before a cell uses them."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, NoReturn

from ..errors import DamagedData
from ..store.pager import Damage


class DamagedVariable:
    """Stands where a variable was whose restored data failed its check.

    Any use raises :class:`DamagedData` saying which checkpoint and blob, and what to
    do; it is never pickled (a save reports it as not saved, with that reason).
    """

    __slots__ = ("_damage", "_name")

    def __init__(self, name: str, damage: Damage) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_damage", damage)

    def _fail(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise DamagedData(self.reason())

    def reason(self) -> str:
        d: Damage = object.__getattribute__(self, "_damage")
        name: str = object.__getattribute__(self, "_name")
        return (
            f"{name} was restored from checkpoint #{d.checkpoint}, whose data for it is "
            f"damaged on disk (blob {d.blob[:12]}: {d.why}). Restore it from another "
            "checkpoint (%checkpoint list) or compute it again."
        )

    def __repr__(self) -> str:
        return f"<{object.__getattribute__(self, '_name')}: damaged checkpoint data, not usable>"

    def __getattr__(self, _attr: str) -> NoReturn:
        self._fail()

    def __reduce_ex__(self, _protocol: Any) -> NoReturn:
        raise TypeError(self.reason())

    __setattr__ = __getitem__ = __setitem__ = __iter__ = __len__ = __call__ = _fail
    __array__ = __add__ = __sub__ = __mul__ = __truediv__ = __eq__ = __bool__ = _fail
    __hash__ = None  # type: ignore[assignment]


def withdraw(
    ns: MutableMapping[str, Any], damage: Damage, restored_ids: dict[str, int]
) -> tuple[list[str], list[str]]:
    """Replace the variables ``damage`` names that still hold what was restored.

    Returns ``(taken, kept)``: the names replaced by a :class:`DamagedVariable`, and those
    left alone because they were given another value since the restore.
    """
    taken, kept = [], []
    for name in damage.names:
        if name in ns and restored_ids.get(name) == id(ns[name]):
            ns[name] = DamagedVariable(name, damage)
            taken.append(name)
        elif name in ns:
            kept.append(name)
    return taken, kept


def describe(damage: Damage, taken: Iterable[str], kept: Iterable[str]) -> str:
    """What the user is told at the next cell."""
    taken, kept = list(taken), list(kept)
    lines = [
        f"nbcheckpoint: part of checkpoint #{damage.checkpoint} is damaged on disk "
        f"(blob {damage.blob[:12]}: {damage.why})."
    ]
    if taken:
        lines.append(
            f"  {', '.join(taken)} now raise an error when used, before any wrong value is read. "
            "Restore them from another checkpoint (%checkpoint list)."
        )
    if kept:
        lines.append(f"  {', '.join(kept)} were given new values since, and are kept.")
    lines.append(
        "  Views made of them since share that memory: reading its damaged part stops the "
        "kernel (SIGBUS) rather than give a wrong value."
    )
    return "\n".join(lines)
