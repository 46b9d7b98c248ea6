"""The capture and snapshot benchmarks run end to end at a tiny scale and print their tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
HEADER = "operation"


def _run(script: str, *args: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NBCHECKPOINT_STORE",)}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--scale", "0.005", "--dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, (
        f"{script} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _table_header(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(HEADER)]


@pytest.mark.timeout(150)
def test_bench_capture_tiny(tmp_path: Path) -> None:
    out = _run("bench_capture.py", "--rounds", "1", "--restore-runs", "1", tmp_path=tmp_path)
    header = _table_header(out)
    assert header and all(
        col in header[0] for col in ("ours", "baseline", "ratio", "target", "met?")
    )
    assert "load average at start" in out
    assert "safe points with nothing due" in out and "restore after SIGKILL" in out
    assert "MISSED" in out or "All targets met." in out


@pytest.mark.timeout(150)
def test_bench_snapshot_tiny(tmp_path: Path) -> None:
    out = _run("bench_snapshot.py", "--rounds", "2", tmp_path=tmp_path)
    header = _table_header(out)
    assert header and all(
        col in header[0] for col in ("ours", "baseline", "ratio", "target", "met?")
    )
    assert "load average at start" in out
    # Every figure is a median over alternating rounds with its range (min-max).
    assert re.search(r"median of 2 rounds' medians [\d.]+ms \([\d.]+ms-[\d.]+ms\)", out), out
    assert "round 2: load average" in out and "medians of 2 rounds, ranges below" in out
    assert re.search(r"dill.dump_module \+ fsync .*: [\d.]+ms \([\d.]+ms-[\d.]+ms\)", out), out
    for tool in ("nbcheckpoint fork", "nbcheckpoint inline", "dill.dump_module", "IPython %store"):
        assert tool in out
    assert "MISSED" in out or "All targets met." in out
