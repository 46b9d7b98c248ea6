"""The store benchmark runs end to end at a tiny scale and prints its table (no timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_the_table_and_exits_0(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_store.py"),
            "--scale",
            "0.01",
            "--dir",
            str(work),
            "--repeat",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    header = next(line for line in out.splitlines() if line.startswith("operation"))
    for column in ("ours", "baseline", "ratio", "target", "met?"):
        assert column in header
    # Medians of alternating rounds, each with its range and the per-round ratios.
    assert "medians of 2 alternating rounds" in out
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("first save (fsync'd)"))
    assert "per-round ratio" in lines[first + 1] and "dill " in lines[first + 1], lines[first + 1]
    assert out.count("load average") >= 4, "at start, after each round and at the end"
    for row in (
        "first save (fsync'd)",
        "second save, 1% changed",
        "restore (hashes verified)",
        "written by the second save",
        "on disk after 11 saves, all kept",
    ):
        assert row in out, row
    assert "MISSED" in out or "All targets met." in out
    assert "WARNING" not in out, "a restore brought back different values"
    assert list(work.iterdir()) == [], "the benchmark left its work folder behind"


def test_panel_benchmark_runs_and_prints_each_count() -> None:
    """``bench_panels.py`` at a tiny size: every panel count is measured, it exits 0."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_panels.py"),
            "--checkpoints",
            "5",
            "--rounds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for count in ("0 panels:", "1 panel :", "2 panels:", "5 panels:"):
        assert count in done.stdout, done.stdout
    assert "load average" in done.stdout
