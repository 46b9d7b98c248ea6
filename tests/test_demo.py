"""`make demo` for real: the writer is SIGKILLed mid-save, the store verifies and #1 restores intact."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_kills_the_writer_and_restores_checkpoint_1(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--small"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(work)},
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^saved #1: 7 variables, [\d.,]+ MB .* in [\d.]+ s", out, re.M)
    assert re.search(r"^killed the writer \(SIGKILL\) [\d.]+ s into #2", out, re.M)
    assert "store after the kill: checkpoints #1; #2 has no manifest" in out
    assert re.search(r"^store verified in [\d.]+ s: 1 checkpoint, 0 problems$", out, re.M)
    assert re.search(r"^restored #1 in [\d.]+ s", out, re.M)
    assert "7/7 variables equal the originals" in out
    assert out.rstrip().splitlines()[-1].startswith("OK: demo took")
    assert list(work.iterdir()) == [], "the demo left its temp store behind"
