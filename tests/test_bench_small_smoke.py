"""The end-of-cell, one-element-edit and PyTorch benchmarks run end to end at a tiny scale.

No timing is asserted (the machines are shared): only that each prints its medians and
ranges for every variant it compares, with the load average.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, tmp_path: Path) -> str:
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--dir", str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_cell_end_benchmark_compares_the_three_variants(tmp_path: Path) -> None:
    out = _run("bench_cell_end.py", "--scale", "0.01", "--rounds", "1", tmp_path=tmp_path)
    for kind in ("plain", "after", "inline"):
        assert f"{kind}: cell round trip median" in out
        assert f"{kind}: until the final checkpoint is in the store median" in out
    assert "%%checkpoint --every 3600 cell vs plain" in out
    assert "load average at end" in out
    # Three variants, a warm-up and one round each, all final checkpoints but the plain ones.
    assert "checkpoints in the store at the end: 4" in out


def test_edit_hash_benchmark_compares_with_and_without_the_hint(tmp_path: Path) -> None:
    out = _run("bench_edit_hash.py", "--scale", "0.02", "--rounds", "2", tmp_path=tmp_path)
    if "write tracking is not available here" in out:
        pytest.skip(out.splitlines()[-1])  # the script says why: nothing to compare
    for kind in ("hint", "no hint"):
        assert f"{kind}: main thread (scan pickling and hashing) median" in out
    assert "main-thread time with the hint / without: median" in out
    assert "load average at end" in out


def test_torch_benchmark_compares_with_torch_save_and_load(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="PyTorch is installed for the tests on Python 3.11 only")
    out = _run("bench_torch.py", "--scale", "0.01", "--rounds", "2", tmp_path=tmp_path)
    for state in ("after step", "after zero_grad"):
        assert f"round 2 {state} (store first, torch second)" in out
        assert f"{state}: save <= 1.0x torch.save+fsync" in out
    # After zero_grad both tools save the same tensors (the store saved 822 MB against 617
    # at scale 1 after a step: the gradients).
    sizes = re.findall(r"the store saved (\d+) MB .*torch.save (\d+) MB", out)
    assert len(sizes) == 2 and sizes[1][0] == sizes[1][1] and int(sizes[0][0]) > int(sizes[0][1])
    for row in (
        "save (+fsync)",
        "restore, read whole / torch.load",
        "restore, lazy / torch.load",
        "same, then every element read",
        "re-save after one layer changed",
    ):
        assert row in out
    assert "re-save after one layer <= 1.2x that layer" in out
    assert "load average at the end" in out


def test_first_save_benchmark_compares_store_pickle_and_raw(tmp_path: Path) -> None:
    out = _run("bench_first_save.py", "--sizes", "0.02", "--rounds", "2", tmp_path=tmp_path)
    for what in ("store.save (new store):", "pickle.dump + fsync:", "raw write + fsync:"):
        assert what in out
    assert "store / pickle: median" in out and "target <= 1.3x" in out
    assert "store's throughput / raw write's: median" in out and "target >= 80%" in out
    assert "round 2 (pickle > raw > store)" in out  # the three take turns going first
    assert "load average at the end" in out
