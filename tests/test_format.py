"""Unit tests of the pure text helpers in nbcheckpoint.format."""

from __future__ import annotations

import pytest

from nbcheckpoint.format import (
    describe_position,
    human_bytes,
    parse_duration,
    parse_size,
    relative_time,
    table,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (1_234_567, "1.2 MB"),
        (13_869, "13.9 KB"),
        (140_000, "140 KB"),
        (999_999, "1.0 MB"),
        (10**9 * 10, "10.0 GB"),
        (5 * 10**15, "5.0 PB"),
        (10**18, "1000 PB"),
        (-2048, "-2.0 KB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("10GB", 10 * 10**9),
        ("10gb", 10 * 10**9),
        ("10 GB", 10 * 10**9),
        ("1.5KiB", 1536),
        ("2 mib", 2 * 2**20),
        ("1TiB", 2**40),
        ("1tb", 10**12),
        ("512", 512),
        ("512B", 512),
        ("0.5MB", 500_000),
        (".5 kb", 500),
        ("3G", 3 * 10**9),
    ],
)
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "GB", "10XB", "-5GB", "1,5GB", "ten", "10 G B", "1e3"])
def test_parse_size_rejects_and_names_the_text(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a size") as info:
        parse_size(bad)
    assert repr(bad) in str(info.value)


def test_parse_size_round_trips_human_bytes() -> None:
    assert parse_size(human_bytes(2_500_000)) == 2_500_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("5 min", 300.0),
        ("1h", 3600.0),
        ("1H", 3600.0),
        ("2d", 172_800.0),
        ("0.5", 0.5),
        ("90", 90.0),
        ("1.5h", 5400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5x", "-3s", "1h30m"])
def test_parse_duration_rejects_and_names_the_text(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (0.2, "just now"),
        (42, "42 s ago"),
        (180, "3 min ago"),
        (3 * 3600 + 5, "3 h ago"),
        (86_400 * 1.5, "1 day ago"),
        (86_400 * 9, "9 days ago"),
        (-120, "in 2 min"),
    ],
)
def test_relative_time(ago: float, text: str) -> None:
    assert relative_time(10_000_000.0 - ago, now=10_000_000.0) == text


def test_relative_time_defaults_to_now() -> None:
    import time

    assert relative_time(time.time() - 3600 * 2 - 1) == "2 h ago"


def test_describe_position() -> None:
    assert (
        describe_position({"description": "for epoch at 57/100", "line": 4})
        == "for epoch at 57/100"
    )
    assert describe_position({"line": 4}) is None
    assert describe_position({"description": ""}) is None
    assert describe_position(None) is None
    assert describe_position("not a dict") is None  # type: ignore[arg-type]


def test_table_aligns_columns() -> None:
    out = table([[1, "alpha", None], [123, "b\nc", 4.5]], ["id", "name", "x"], align="rl")
    assert out.splitlines() == [
        " id  name   x",
        "---  -----  ---",
        "  1  alpha",
        "123  b c    4.5",
    ]


def test_table_without_rows_prints_headers() -> None:
    assert table([], ["a", "bb"]) == "a  bb\n-  --"


def test_table_rejects_ragged_rows_and_bad_alignment() -> None:
    with pytest.raises(ValueError, match="2 cells but there are 3 headers"):
        table([[1, 2]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="align"):
        table([[1]], ["a"], align="c")
