"""Time what the end of a ``%%checkpoint`` cell costs (issue #14, item 2), in a real kernel.

The cell builds a list of a million small dicts (at ``--scale 1``) with ``--every 3600``,
so no checkpoint is due while it runs and the whole cost is the final checkpoint. Three
variants of the same cell run in alternating order, each round from the same state (the
list deleted, the previous final checkpoint landed):

* ``plain``: the cell without ``%%checkpoint``;
* ``after``: ``%%checkpoint --every 3600`` (the default: the final checkpoint is written
  by a forked child after the cell returns, when the state is large);
* ``inline``: ``%%checkpoint --every 3600 --mode inline`` (pickled and written before the
  cell returns, which is what every final checkpoint did before).

For each it prints the execute round trip, the time until the final checkpoint is in the
store, and the round trip of a one-line cell run right after (it competes for the CPU with
the child). Medians and ranges over ``--rounds`` alternating rounds, with the load average.

Usage::

    python benchmarks/bench_cell_end.py               # a minute or two
    python benchmarks/bench_cell_end.py --scale 0.2   # quick

It is a benchmark, not a test: it exits 0 whether or not the target is met and prints
MISSED when it is not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_capture import (
    Row,
    finish,
    isolated_env,
    kernel,
    load_average,
    machine_header,
    median_ms,
    print_table,
    work_parent,
)

BUILD = """\
rows = []
for i in range({n}):
    rows.append({{"i": i, "s": str(i), "x": i * 0.5}})
"""
HEADS = {
    "plain": "",
    "after": "%%checkpoint --every 3600\n",
    "inline": "%%checkpoint --every 3600 --mode inline\n",
}
# Waits for a final checkpoint still being written (opening the store settles it).
SETTLE = "get_ipython().magics_manager.registry['Checkpoint'].open_store()"
RESET = "rows = None\nimport gc as _bench_gc\n_bench_gc.collect()"


def spread(values: list[float]) -> str:
    return median_ms(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = a million dicts")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the store (not tmpfs)")
    args = parser.parse_args(argv)
    n = max(1000, int(1_000_000 * args.scale))

    parent = work_parent(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="nbcheckpoint-bench-cell-end-", dir=parent))
    try:
        return run(root, n, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, n: int, args: argparse.Namespace) -> int:
    def say(line: str = "") -> None:
        print(line, flush=True)

    for line in machine_header(
        "nbcheckpoint end-of-cell benchmark (issue #14.2)", args.scale, root
    ):
        say(line)
    say(f"workload: a list of {n:,} small dicts built in a loop; {args.rounds} alternating rounds")
    nb = root / "analysis.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {**isolated_env(root), "JPY_SESSION_NAME": str(nb)}
    cell = {kind: head + BUILD.format(n=n) for kind, head in HEADS.items()}
    trip: dict[str, list[float]] = {k: [] for k in HEADS}
    landed: dict[str, list[float]] = {k: [] for k in HEADS}
    after: dict[str, list[float]] = {k: [] for k in HEADS}
    kinds = list(HEADS)
    with kernel(sys.executable, root, env) as k:
        k.run("%load_ext nbcheckpoint").check("load_ext")
        for kind in kinds:  # warm up each variant once
            k.run(cell[kind]).check(kind)
            k.run(SETTLE, silent=True).check("settle")
            k.run(RESET, silent=True).check("reset")
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                k.run(SETTLE, silent=True).check("settle")
                k.run(RESET, silent=True).check("reset")
                took = k.run(cell[kind]).check(kind).seconds
                next_cell = k.run("_bench_x = 1").check("next cell").seconds
                waited = k.run(SETTLE, silent=True).check("settle").seconds
                trip[kind].append(took)
                after[kind].append(next_cell)
                landed[kind].append(took + next_cell + waited)
            say(f"  round {r + 1}: load average {load_average()}")
        count = k.value(
            "len(get_ipython().magics_manager.registry['Checkpoint'].open_store()"
            ".list(get_ipython().magics_manager.registry['Checkpoint'].notebook_ref()))"
        )
    say("")
    for kind in kinds:
        say(f"  {kind}: cell round trip {spread(trip[kind])}")
        say(f"  {kind}: until the final checkpoint is in the store {spread(landed[kind])}")
        say(f"  {kind}: the next one-line cell {spread(after[kind])}")
    say(f"  checkpoints in the store at the end: {count}")
    say("")
    median = {
        k: {m: statistics.median(v[k]) for m, v in (("trip", trip), ("landed", landed))}
        for k in kinds
    }
    rows = [
        Row(
            "%%checkpoint --every 3600 cell vs plain",
            median["after"]["trip"],
            median["plain"]["trip"],
            "ratio",
            1.10,
            note="per-round ratios "
            + ", ".join(f"{a / p:.2f}x" for a, p in zip(trip["after"], trip["plain"])),
        ),
        Row(
            "  until its final checkpoint is written",
            median["after"]["landed"],
            median["plain"]["landed"],
            "ratio",
        ),
        Row(
            "the same, final checkpoint inline (before)",
            median["inline"]["trip"],
            median["plain"]["trip"],
            "ratio",
        ),
    ]
    finish(print_table(rows, say), say)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    raise SystemExit(main())
