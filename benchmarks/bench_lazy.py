"""Lazy restore against eager restore and dill, at several state sizes (issue #16).

For each size (1, 4 and 8 GiB by default) a kernel builds arrays, half random and half
compressible (a ramp, which the store keeps as zstd chunks), plus 100,000 small dicts; it
saves them with ``%checkpoint save`` and ``dill.dump_module`` and is SIGKILLed. Then
``--rounds`` times (5 by default), taking turns going first, fresh kernels (NumPy already
imported in each) time:

* **lazy**: ``%load_ext nbcheckpoint`` + ``%checkpoint restore`` (mapped arrays), then a
  cell reading every element once (``a.sum()`` of each array);
* **eager**: the same with ``Checkpoint.lazy_restore = False`` (every byte read at restore);
* **dill**: ``import dill`` + ``dill.load_module``.

It prints, with medians and ranges and the load average:

* restore-to-prompt of lazy over dill (target <= 0.1x), and lazy's time at the largest size
  (target <= 1 s);
* lazy restore plus the first full read over the eager restore (target <= 1.1x), and over
  eager restore plus the same read;
* the kernel's resident memory growth right after the lazy restore over the state's size
  (target <= 0.1x).

Needs as much free memory as twice the largest state and disk for three copies of it.
A benchmark, not a test: it exits 0 whether or not targets are met, printing MISSED.

Usage::

    python benchmarks/bench_lazy.py                     # 1, 4 and 8 GiB; long
    python benchmarks/bench_lazy.py --sizes 0.25 --rounds 2   # quick
"""

from __future__ import annotations

import argparse
import json
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
    compile_package,
    isolated_env,
    kernel,
    load_average,
    median_range,
    ratio_range,
)

TARGETS = {"prompt_vs_dill": 0.1, "largest_seconds": 1.0, "total_vs_eager": 1.1, "rss": 0.1}
GIB = 1 << 30
READ = "_nbc_total = sum(float(a.sum()) for a in arrays)"


def state_code(gib: float) -> str:
    n = int(gib * GIB / 8 / 8)  # float64 elements per array, 8 arrays
    return f"""\
import numpy as np
rng = np.random.default_rng(0)
arrays = [rng.random({n}) if i % 2 == 0 else np.arange({n}, dtype=np.float64) for i in range(8)]
records = [{{"id": i, "name": f"row{{i}}", "score": i / 7}} for i in range(100_000)]
"""


CHECK = "[len(arrays), float(arrays[0][12345]), float(arrays[-1][-1]), records[99_999]['name']]"


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def bench_size(gib: float, rounds: int, root: Path, say) -> dict[str, list[float]]:
    folder = root / f"state-{gib:g}"
    folder.mkdir()
    nb = folder / "big.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {**isolated_env(root), "JPY_SESSION_NAME": str(nb)}
    dill_file = folder / "session.dill"
    with kernel(sys.executable, folder, env) as k:
        k.run(state_code(gib)).check("building the state")
        expected = k.value(CHECK)
        k.run("%load_ext nbcheckpoint").check()
        k.run("%checkpoint save").check("save")
        k.run("%unload_ext nbcheckpoint").check()
        k.run(f"import dill\ndill.dump_module({str(dill_file)!r})").check("dill.dump_module")
        k.kill()
    times: dict[str, list[float]] = {k: [] for k in ("lazy", "lazy_read", "eager", "eager_read")}
    times.update(dill=[], rss=[])
    cells = {
        "lazy": "%load_ext nbcheckpoint\n%checkpoint restore",
        "eager": "%load_ext nbcheckpoint\n%config Checkpoint.lazy_restore = False\n"
        "%checkpoint restore",
        "dill": f"import dill\ndill.load_module({str(dill_file)!r})",
    }
    for r in range(rounds):
        order = ["lazy", "eager", "dill"]
        order = order[r % 3 :] + order[: r % 3]
        for tool in order:
            with kernel(sys.executable, folder, env) as k:
                k.run("import numpy").check()
                before = rss_kb(k.pid)
                reply = k.run(cells[tool]).check(tool)
                if "mapped, not read" not in reply.stdout and tool == "lazy":
                    say(f"  WARNING: the lazy restore read everything: {reply.stdout.strip()}")
                times[tool].append(reply.seconds)
                if tool == "lazy":
                    times["rss"].append((rss_kb(k.pid) - before) * 1024 / (gib * GIB))
                if tool != "dill":
                    times[f"{tool}_read"].append(k.run(READ).check("read").seconds)
                got = k.value(CHECK)
                if got != expected:
                    say(f"  WARNING: {tool} restored different values: {got} != {expected}")
        say(
            f"  {gib:g} GiB round {r + 1} ({' > '.join(order)}): lazy {times['lazy'][-1]:.3f} s "
            f"(+read {times['lazy_read'][-1]:.2f} s), eager {times['eager'][-1]:.2f} s "
            f"(+read {times['eager_read'][-1]:.2f} s), dill {times['dill'][-1]:.2f} s; "
            f"load average {load_average()}"
        )
    shutil.rmtree(folder, ignore_errors=True)  # the next size needs the disk
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 8], help="GiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="work in this folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say(
        f"bench_lazy: {', '.join(f'{s:g}' for s in args.sizes)} GiB of arrays + 100k dicts, "
        f"{args.rounds} rounds in turns, Python {sys.version.split()[0]}; "
        f"load average {load_average()}"
    )
    say(compile_package())
    missed = []
    with tempfile.TemporaryDirectory(prefix="nbc-bench-lazy-", dir=args.dir) as tmp:
        results = {gib: bench_size(gib, args.rounds, Path(tmp), say) for gib in args.sizes}
    say("")
    for gib, t in results.items():
        total = [lz + rd for lz, rd in zip(t["lazy"], t["lazy_read"])]
        eager_total = [e + rd for e, rd in zip(t["eager"], t["eager_read"])]
        prompt = statistics.median(x / d for x, d in zip(t["lazy"], t["dill"]))
        vs_eager = statistics.median(x / e for x, e in zip(total, t["eager"]))
        rss = statistics.median(t["rss"])
        checks = [
            (prompt <= TARGETS["prompt_vs_dill"], "prompt_vs_dill"),
            (vs_eager <= TARGETS["total_vs_eager"], "total_vs_eager"),
            (rss <= TARGETS["rss"], "rss"),
        ]
        say(f"{gib:g} GiB:")
        say(f"  lazy restore to prompt:        {median_range(t['lazy'])}")
        say(f"  eager restore:                 {median_range(t['eager'])}")
        say(f"  dill.load_module:              {median_range(t['dill'])}")
        say(f"  lazy restore + first full read: {median_range(total)}")
        say(f"  eager restore + the same read:  {median_range(eager_total)}")
        say(
            f"  prompt, lazy / dill: median {prompt:.3f}x (per round "
            f"{ratio_range(t['lazy'], t['dill'])}); target <= {TARGETS['prompt_vs_dill']}x: "
            f"{'met' if checks[0][0] else 'MISSED'}"
        )
        say(
            f"  lazy + read / eager restore: median {vs_eager:.2f}x (per round "
            f"{ratio_range(total, t['eager'])}); target <= {TARGETS['total_vs_eager']}x: "
            f"{'met' if checks[1][0] else 'MISSED'}"
        )
        say(
            f"  lazy + read / eager + read: median "
            f"{statistics.median(x / e for x, e in zip(total, eager_total)):.2f}x (per round "
            f"{ratio_range(total, eager_total)})"
        )
        say(
            f"  resident growth after lazy restore / state: median {rss:.3f}x "
            f"(range {min(t['rss']):.3f}-{max(t['rss']):.3f}); target <= {TARGETS['rss']}x: "
            f"{'met' if checks[2][0] else 'MISSED'}"
        )
        missed += [f"{gib:g} GiB {name}" for ok, name in checks if not ok]
    largest = max(results)
    fast = statistics.median(results[largest]["lazy"])
    say(
        f"lazy restore at {largest:g} GiB: median {fast:.3f} s; target <= "
        f"{TARGETS['largest_seconds']} s: {'met' if fast <= TARGETS['largest_seconds'] else 'MISSED'}"
    )
    if fast > TARGETS["largest_seconds"]:
        missed.append(f"{largest:g} GiB seconds")
    say(f"missed: {', '.join(missed) or 'none'}; load average at the end: {load_average()}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
