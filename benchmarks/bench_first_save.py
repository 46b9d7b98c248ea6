"""The first save against pickle and a raw write, at several state sizes (issue #14, item 3).

For each size (0.3, 1.2 and 5 GiB by default) the state is what a data notebook holds:
float64 arrays (half random, half a compressible ramp), a DataFrame with a string column
(about a tenth of the state) and 100,000 small objects (dicts of str, int and float). Then
``--rounds`` times (5 by default), the three taking turns going first:

* **store**: ``CheckpointStore.save`` of every variable into a new, empty store (everything is
  new: chunked, hashed, compressed where it pays, written, fsync'd);
* **pickle**: ``pickle.dump(protocol=5)`` of the same variables to one file, then fsync;
* **raw**: the bytes a save writes (the pickles and the buffers, uncompressed), written to
  one file and fsync'd: the disk's own speed for this state, pickling not included.

It prints, with medians, ranges and the load average: store over pickle (target <= 1.3x)
and the store's throughput as a share of the raw write's (target >= 80%). In-process, no
kernel: this is the store's own speed. A benchmark, not a test: it exits 0 either way and
prints MISSED for a target not met.

Usage::

    python benchmarks/bench_first_save.py                        # 0.3, 1.2 and 5 GiB
    python benchmarks/bench_first_save.py --sizes 0.1 --rounds 2 # quick
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_capture import fs_type, load_average, median_range, ratio_range
from bench_snapshot import raw_write

TARGETS = {"vs_pickle": 1.3, "share_of_raw": 0.8}
GIB = 1 << 30


def build_state(gib: float, seed: int = 0) -> dict[str, Any]:
    """Arrays (90%), a DataFrame with a string column (10%) and 100,000 small dicts."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_arrays = 8
    per_array = int(gib * GIB * 0.9 / n_arrays / 8)
    state: dict[str, Any] = {}
    for i in range(n_arrays):
        if i % 2 == 0:
            state[f"a{i}"] = rng.random(per_array)
        else:
            state[f"a{i}"] = np.arange(per_array, dtype=np.float64)
    rows = max(1_000, int(gib * GIB * 0.1 / 40))  # ~40 bytes a row: float, int, short str
    state["frame"] = pd.DataFrame(
        {
            "x": rng.random(rows),
            "k": rng.integers(0, 1_000, rows),
            "city": rng.choice(["Lyon", "Oslo", "Lima", "Pune"], rows),
        }
    )
    state["records"] = [{"id": i, "name": f"r{i}", "score": i / 7} for i in range(100_000)]
    return state


def fsync_file(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def pickle_dump(root: Path, state: dict[str, Any]) -> float:
    path = root / "state.pkl"
    start = time.perf_counter()
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=5)
        fsync_file(f)
    took = time.perf_counter() - start
    path.unlink()
    return took


def store_save(root: Path, state: dict[str, Any]) -> tuple[float, int]:
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    folder = root / "store"
    nb = NotebookRef.from_path(str(root / "analysis.ipynb"))
    start = time.perf_counter()
    CheckpointStore(str(folder)).save(state, nb, list(state))
    took = time.perf_counter() - start
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return took, on_disk


def bench_size(gib: float, rounds: int, root: Path, say: Any) -> dict[str, list[float]]:
    started = time.perf_counter()
    state = build_state(gib)
    say(f"{gib:g} GiB: state built in {time.perf_counter() - started:.1f} s")
    times: dict[str, list[float]] = {"store": [], "pickle": [], "raw": []}
    raw_bytes = disk = 0
    for r in range(rounds):
        order = ["store", "pickle", "raw"]
        order = order[r % 3 :] + order[: r % 3]
        for what in order:
            gc.collect()
            if what == "store":
                took, disk = store_save(root, state)
            elif what == "pickle":
                took = pickle_dump(root, state)
            else:
                took, raw_bytes = raw_write(root, state, list(state))
            times[what].append(took)
        say(
            f"  round {r + 1} ({' > '.join(order)}): store {times['store'][-1]:.2f} s, pickle "
            f"{times['pickle'][-1]:.2f} s, raw {times['raw'][-1]:.2f} s; "
            f"load average {load_average()}"
        )
    say(
        f"  {raw_bytes / 1e9:.2f} GB written raw; the store wrote {disk / 1e9:.2f} GB "
        "(compressible chunks in zstd)"
    )
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.3, 1.2, 5], help="GiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="work in this folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nbc-bench-first-", dir=args.dir) as tmp:
        root = Path(tmp)
        say(
            f"bench_first_save: {', '.join(f'{s:g}' for s in args.sizes)} GiB, {args.rounds} "
            f"rounds in turns, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, on "
            f"{fs_type(root)}; load average {load_average()}"
        )
        results = {gib: bench_size(gib, args.rounds, root, say) for gib in args.sizes}
    say("")
    for gib, t in results.items():
        vs_pickle = statistics.median(s / p for s, p in zip(t["store"], t["pickle"]))
        share = statistics.median(r / s for r, s in zip(t["raw"], t["store"]))
        shares = [r / s for r, s in zip(t["raw"], t["store"])]
        met_pickle = vs_pickle <= TARGETS["vs_pickle"]
        met_share = share >= TARGETS["share_of_raw"]
        say(f"{gib:g} GiB:")
        say(f"  store.save (new store):  {median_range(t['store'])}")
        say(f"  pickle.dump + fsync:     {median_range(t['pickle'])}")
        say(f"  raw write + fsync:       {median_range(t['raw'])}")
        say(
            f"  store / pickle: median {vs_pickle:.2f}x (per round "
            f"{ratio_range(t['store'], t['pickle'])}); target <= {TARGETS['vs_pickle']}x: "
            f"{'met' if met_pickle else 'MISSED'}"
        )
        say(
            f"  store's throughput / raw write's: median {share:.0%} (per round "
            f"{min(shares):.0%}-{max(shares):.0%}); target >= {TARGETS['share_of_raw']:.0%}: "
            f"{'met' if met_share else 'MISSED'}"
        )
        missed += [f"{gib:g} GiB vs pickle"] * (not met_pickle)
        missed += [f"{gib:g} GiB share of raw"] * (not met_share)
    say(f"missed: {', '.join(missed) or 'none'}; load average at the end: {load_average()}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
