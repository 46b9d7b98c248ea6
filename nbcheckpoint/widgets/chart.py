"""A tiny inline SVG chart of state size and snapshot duration over a checkpoint history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from ..format import human_bytes

WIDTH = 420
ROW_HEIGHT = 34
LABEL_WIDTH = 160
PAD = 4
SIZE_COLOR = "#1f77b4"
TIME_COLOR = "#e07b00"


@dataclass(frozen=True)
class Point:
    """One checkpoint on the chart."""

    ident: int
    total_bytes: int
    duration: float  # seconds the snapshot took


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _series(
    points: Sequence[Point],
    values: Sequence[float],
    top: int,
    label: str,
    color: str,
    fmt: Callable[[float], str],
) -> list[str]:
    """One sparkline row: the label with the latest and largest value, then the line."""
    peak = max(values) if values else 0.0
    x0, x1 = LABEL_WIDTH, WIDTH - PAD
    y0, y1 = top + ROW_HEIGHT - PAD, top + PAD
    n = len(values)

    def x(i: int) -> float:
        return x0 + (x1 - x0) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return y0 - (y0 - y1) * (v / peak if peak > 0 else 0.0)

    latest = fmt(values[-1]) if values else "-"
    parts = [
        f'<text x="0" y="{top + 14}" fill="{color}" font-weight="600">{escape(label)}</text>',
        f'<text x="0" y="{top + 28}" fill="currentColor" opacity="0.7">'
        f"now {escape(latest)} · max {escape(fmt(peak))}</text>",
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="currentColor" opacity="0.2"/>',
    ]
    if n > 1:
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>'
        )
    for i, (point, v) in enumerate(zip(points, values)):
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.2" fill="{color}">'
            f"<title>#{point.ident}: {escape(fmt(v))}</title></circle>"
        )
    return parts


def history_svg(points: Sequence[Point]) -> str:
    """Two sparklines, state size and snapshot duration, oldest checkpoint on the left.

    Returns an empty string when there is nothing to draw. Hovering a dot shows its
    checkpoint and value (an SVG ``<title>``, no script).

    Examples
    --------
    >>> svg = history_svg([Point(1, 1000, 0.01), Point(2, 3000, 0.02)])
    >>> svg.startswith("<svg") and "3.0 KB" in svg
    True
    >>> history_svg([])
    ''
    """
    if not points:
        return ""
    sizes = [float(p.total_bytes) for p in points]
    durations = [float(p.duration) for p in points]
    height = 2 * ROW_HEIGHT + PAD
    body = [
        *_series(points, sizes, 0, "state size", SIZE_COLOR, lambda v: human_bytes(int(v))),
        *_series(points, durations, ROW_HEIGHT, "snapshot time", TIME_COLOR, _seconds),
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11" '
        f'role="img" aria-label="state size and snapshot time of each checkpoint">'
        + "".join(body)
        + "</svg>"
    )
