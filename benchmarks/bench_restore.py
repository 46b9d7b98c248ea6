"""Restore a notebook-shaped state in a fresh kernel: nbcheckpoint against dill (issue #14, item 5).

The synthetic states of the other benchmarks are a few large arrays. A real notebook's state
is mostly small things: DataFrames of mixed columns, a groupby and a pivot, 50,000 records
as dicts with a lookup table over them, a Counter, a least-squares fit and a notebook class
around it, lambdas and helper functions, nested configuration and result dicts, and
matplotlib figures (it refuses to run without matplotlib: ``pip install -e ".[bench]"``).

The state is built once in a kernel, saved by ``%checkpoint save`` and by
``dill.dump_module``, and the kernel is SIGKILLed. Then ``--rounds`` times (5 by default),
taking turns going first, a fresh kernel (with NumPy and pandas already imported, in both)
times what a user runs after a crash:

* ``%load_ext nbcheckpoint`` then ``%checkpoint restore``, in one cell (the extension's own
  import cost is counted);
* ``import dill`` then ``dill.load_module(path)``, in one cell.

Each restored state is checked against the values before the kill. Medians, ranges and the
per-round ratios are printed with the load average.

Usage::

    python benchmarks/bench_restore.py               # a minute or two
    python benchmarks/bench_restore.py --scale 0.1   # quick

It is a benchmark, not a test: it exits 0 whether or not the target is met and prints
MISSED when it is not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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
    compile_package,
    isolated_env,
    kernel,
    load_average,
    median_range,
    ratio_range,
)

TARGET = 0.8


def state_code(scale: float) -> str:
    n = max(2_000, int(200_000 * scale))
    people = max(1_000, int(50_000 * scale))
    rows = max(500, int(20_000 * scale))
    return f"""\
import collections, datetime, math, re
import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
sales = pd.DataFrame({{
    "date": pd.date_range("2020-01-01", periods={n}, freq="min"),
    "store": rng.choice(["north", "south", "east", "west"], {n}),
    "item": [f"item-{{i % 500}}" for i in range({n})],
    "qty": rng.integers(1, 20, {n}),
    "price": rng.gamma(2.0, 10.0, {n}).round(2),
}})
sales["revenue"] = sales.qty * sales.price
by_store = sales.groupby("store").agg(total=("revenue", "sum"), mean_qty=("qty", "mean"))
daily = sales.pivot_table(index=sales.date.dt.date, columns="store", values="revenue", aggfunc="sum")
records = [
    {{"id": i, "name": f"user{{i}}", "tags": ["a", "b", "c"][: i % 4], "score": (i % 97) / 7}}
    for i in range({people})
]
lookup = {{r["name"]: r for r in records}}
word_counts = collections.Counter(t for r in records for t in r["tags"])
X = rng.standard_normal(({rows}, 50))
y = X @ rng.standard_normal(50) + rng.standard_normal({rows})
coef, *_ = np.linalg.lstsq(X, y, rcond=None)


def clean(text):
    return re.sub(r"\\W+", " ", text).strip().lower()


class LinearModel:
    def __init__(self, coef):
        self.coef = coef

    def predict(self, X):
        return X @ self.coef


model = LinearModel(coef)
scalers = [lambda x, k=k: x * k for k in range(20)]
config = {{
    "run": datetime.datetime(2024, 1, 1, 12, 30),
    "params": {{"alpha": 0.1, "layers": [64, 32], "dropout": None}},
    "paths": [f"/data/part-{{i:04d}}.csv" for i in range(100)],
}}
results = {{
    f"exp{{i}}": {{"loss": [math.exp(-j / 10) for j in range(100)], "ok": i % 2 == 0}}
    for i in range(200)
}}
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures = []
    for store_name in ["north", "south", "east", "west"]:
        fig, ax = plt.subplots()
        ax.plot(daily[store_name].to_numpy()[:200])
        ax.set_title(store_name)
        figures.append(fig)
    plt.close("all")
except ImportError:
    figures = "matplotlib is not installed"
"""


CHECK = (
    "[len(records), lookup['user7']['score'], float(sales.revenue.sum()), "
    "float(daily.to_numpy()[:3].sum()), float(model.predict(X[:3]).sum()), scalers[3](2), "
    "clean('Hello, World!'), len(results), word_counts['a'], config['paths'][5], "
    "figures if isinstance(figures, str) else [f.axes[0].get_title() for f in figures]]"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="work in this folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:
        # Without figures the state, and so the ratio, is another one: runs would not compare.
        print(
            "bench_restore needs matplotlib (its state holds four figures): "
            'pip install -e ".[bench]"',
            file=sys.stderr,
        )
        return 2
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="nbc-bench-restore-", dir=args.dir) as tmp:
        root = Path(tmp)
        folder = root / "project"
        folder.mkdir()
        nb = folder / "analysis.ipynb"
        nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        env = {**isolated_env(root), "JPY_SESSION_NAME": str(nb)}
        dill_file = folder / "session.dill"
        say(
            f"bench_restore: scale {args.scale}, {args.rounds} alternating rounds, "
            f"Python {sys.version.split()[0]}; load average {load_average()}"
        )
        say(compile_package())
        with kernel(sys.executable, folder, env) as k:
            built = k.run(state_code(args.scale)).check("building the state").seconds
            expected = k.value(CHECK)
            names = k.value(
                "sorted(n for n in globals() if not n.startswith('_') and n not in "
                "('In', 'Out', 'get_ipython', 'exit', 'quit', 'open'))"
            )
            k.run("%load_ext nbcheckpoint").check("load_ext")
            saved = k.run("%checkpoint save").check("save")
            k.run("%unload_ext nbcheckpoint").check()
            k.run(f"import dill\ndill.dump_module({str(dill_file)!r})").check("dill.dump_module")
            k.kill()
        figures = "no figures" if isinstance(expected[-1], str) else "4 matplotlib figures"
        say(
            f"state: {len(names)} variables ({figures}), built in {built:.1f} s; "
            f"dill file {dill_file.stat().st_size / 1e6:.1f} MB; "
            f"%checkpoint save said: {saved.stdout.strip().splitlines()[-1][:160]}"
        )
        times: dict[str, list[float]] = {"ours": [], "dill": []}
        cells = {
            "ours": "%load_ext nbcheckpoint\n%checkpoint restore",
            "dill": f"import dill\ndill.load_module({str(dill_file)!r})",
        }
        for r in range(args.rounds):
            order = ("ours", "dill") if r % 2 == 0 else ("dill", "ours")
            for tool in order:
                with kernel(sys.executable, folder, env) as k:
                    k.run("import numpy, pandas").check()  # the state's libraries, in both
                    reply = k.run(cells[tool]).check(tool)
                    times[tool].append(reply.seconds)
                    got = k.value(CHECK)
                    if got != expected:
                        say(f"  WARNING: {tool} restored different values: {got} != {expected}")
            say(
                f"  round {r + 1} ({order[0]} first): nbcheckpoint {times['ours'][-1]:.3f} s, "
                f"dill {times['dill'][-1]:.3f} s; load average {load_average()}"
            )
        ratios = [o / d for o, d in zip(times["ours"], times["dill"])]
        median = statistics.median(ratios)
        say("")
        say(f"%load_ext + %checkpoint restore: {median_range(times['ours'])}")
        say(f"import dill + dill.load_module:  {median_range(times['dill'])}")
        say(
            f"ratio: median {median:.2f}x (per round {ratio_range(times['ours'], times['dill'])}); "
            f"target <= {TARGET}x: {'met' if median <= TARGET else 'MISSED'}"
        )
        say(f"load average at the end: {load_average()}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
