"""Pure text helpers shared by the command line, the magics and the panel: sizes, durations, times, tables."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "cell_label",
    "describe_position",
    "human_bytes",
    "parse_duration",
    "parse_size",
    "plural",
    "printable",
    "relative_time",
    "table",
]

_BYTE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")

# Decimal units follow SI (KB = 1000 bytes) so that ``human_bytes`` and ``parse_size``
# agree; the binary KiB/MiB/... forms are there for people who mean powers of 1024.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)

_DURATION_UNITS: dict[str, float] = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}


def human_bytes(n: float) -> str:
    """A byte count for people, in decimal units.

    Examples
    --------
    >>> human_bytes(512)
    '512 B'
    >>> human_bytes(1_234_567)
    '1.2 MB'
    >>> human_bytes(999_999)
    '1.0 MB'
    """
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    if value < 1000:
        return f"{sign}{int(value)} B"
    for unit in _BYTE_UNITS[1:]:
        value /= 1000
        text = f"{value:.1f}" if value < 99.95 else f"{value:.0f}"
        # Rounding can carry into the next unit (999.96 KB): show that as 1.0 MB instead.
        if float(text) < 1000 or unit == _BYTE_UNITS[-1]:
            return f"{sign}{text} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def parse_size(text: str) -> int:
    """Bytes from a size such as ``"10GB"``, ``"500 MiB"`` or ``"2048"`` (case does not matter).

    Raises ``ValueError`` naming ``text`` when it is not a size.

    Examples
    --------
    >>> parse_size("10GB")
    10000000000
    >>> parse_size("1.5 KiB")
    1536
    """
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"{text!r} is not a size: write a number with an optional unit, such as 500MB, 10GB "
            "or 2GiB (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    return round(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Seconds from a duration such as ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"`` or a bare number of seconds.

    Raises ``ValueError`` naming ``text`` when it is not a duration.

    Examples
    --------
    >>> parse_duration("5m")
    300.0
    >>> parse_duration("0.5")
    0.5
    """
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(
            f"{text!r} is not a duration: write a number of seconds, or a number with a unit, "
            "such as 30s, 5m, 1h or 2d"
        )
    return float(match.group(1)) * _DURATION_UNITS[unit]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1.

    Examples
    --------
    >>> plural(1, "variable"), plural(3, "variable"), plural(0, "checkpoint")
    ('1 variable', '3 variables', '0 checkpoints')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


def cell_label(
    execution_count: int | None, first_line: str, cell_id: str | None = None, width: int = 40
) -> str:
    """A cell as a user recognises it across runs: its first line (the run count changes at
    each run, so it only follows), or its id when the first line is empty.

    Examples
    --------
    >>> cell_label(5, "for epoch in range(100):")
    '"for epoch in range(100):" [5]'
    >>> cell_label(None, "", "0f3a9c2e-41d7-4b1e-9c3a-2b7d8e1f0a6c")
    'cell 0f3a9c2e'
    >>> cell_label(7, "")
    'cell [7]'
    """
    first = " ".join(printable(first_line).split())
    if len(first) > width:
        first = first[: width - 1] + "…"
    run = f"[{execution_count}]" if execution_count is not None else ""
    if first:
        return f'"{first}"' + (f" {run}" if run else "")
    if cell_id:
        return f"cell {printable(cell_id)[:8]}" + (f" {run}" if run else "")
    return f"cell {run}".strip() if run else ""


def relative_time(ts: float, now: float | None = None) -> str:
    """How long ago ``ts`` (seconds since the epoch) was, in words.

    Examples
    --------
    >>> relative_time(1000.0, now=1180.0)
    '3 min ago'
    >>> relative_time(1000.0, now=1000.4)
    'just now'
    """
    now = time.time() if now is None else now
    delta = now - ts
    ahead = delta < 0
    delta = abs(delta)
    if delta < 1:
        return "just now"
    if delta < 60:
        amount = f"{int(delta)} s"
    elif delta < 3600:
        amount = f"{int(delta // 60)} min"
    elif delta < 86400:
        amount = f"{int(delta // 3600)} h"
    else:
        days = int(delta // 86400)
        amount = f"{days} day" if days == 1 else f"{days} days"
    # A clock moved backwards (or another machine's clock) can put a checkpoint in the future.
    return f"in {amount}" if ahead else f"{amount} ago"


def printable(text: object) -> str:
    r"""``text`` safe to show on a terminal: control and format characters written as escapes.

    Names, cell lines and reasons come from the store, which someone else may have written:
    an escape sequence in them must not move the cursor, recolour or retitle the terminal,
    and a right-to-left override must not reorder what is shown. A lone surrogate would
    not even print.

    Examples
    --------
    >>> printable("epoch\x1b[2J done")
    'epoch\\x1b[2J done'
    >>> printable("a\u202eb\nc")
    'a\\u202eb\\nc'
    >>> printable("année 😀")
    'année 😀'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if c in named:
        return named[c]
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def describe_position(position: Mapping[str, Any] | None) -> str | None:
    """Where in the cell a checkpoint was taken, as the capture engine described it.

    Examples
    --------
    >>> describe_position({"description": "for epoch at 57/100", "line": 3})
    'for epoch at 57/100'
    >>> describe_position(None) is None
    True
    """
    if not isinstance(position, Mapping):
        return None
    description = position.get("description")
    if isinstance(description, str) and description:
        return description
    return None


def table(
    rows: Sequence[Sequence[object]], headers: Sequence[str], align: str | None = None
) -> str:
    """A plain-text table: a header, a rule of dashes, then one line per row.

    ``align`` holds one letter per column, ``l`` or ``r`` (default: all left).
    ``None`` cells print empty; line breaks inside a cell become spaces, and other control
    characters escapes (see :func:`printable`).

    Examples
    --------
    >>> print(table([[1, "a"], [12, "bc"]], ["id", "name"], align="rl"))
    id  name
    --  ----
     1  a
    12  bc
    """
    ncols = len(headers)
    align = (align or "").ljust(ncols, "l")[:ncols]
    if set(align) - {"l", "r"}:
        raise ValueError(f"align takes the letters l and r, not {align!r}")
    text_rows = [[_cell(c) for c in row] for row in rows]
    for row in text_rows:
        if len(row) != ncols:
            raise ValueError(f"a row has {len(row)} cells but there are {ncols} headers: {row!r}")
    widths = [max([len(h), *(len(r[i]) for r in text_rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in text_rows)
    return "\n".join(out)


def _cell(value: object) -> str:
    if value is None:
        return ""
    return printable(" ".join(str(value).splitlines()))
