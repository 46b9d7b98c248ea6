"""The recompute benchmark runs end to end (one round, no Kishu) and finds what the issue asks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recompute_vs_kishu.py"


@pytest.mark.timeout(300)
def test_recompute_benchmark_one_round(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    env = {k: v for k, v in subprocess_env.items() if k != "NBCHECKPOINT_STORE"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1", "--out", str(tmp_path / "out.txt")],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = (tmp_path / "out.txt").read_text()
    line = next(x for x in report.splitlines() if "recomputed [" in x)
    assert "recomputed ['conn', 'gen', 'client', 'log']" in line
    assert "next cells as uninterrupted: True" in line
    assert "its recipe shown before it ran: True" in line
    assert "Kishu: not installed" in report
    # The restore time as a median with its range, and the load average around the rounds.
    assert re.search(r"median \(range\) of 1 rounds: \d+ ms \(\d+ ms-\d+ ms\)", report), report
    assert report.count("load average") >= 3, "at start, after the round and at the end"
