"""What an auto save of a one-element edit costs the main thread, with and without asking the
write tracker which chunks were written (issue #17's 1 GiB edit).

One in-process IPython shell holds a 1 GiB float64 array (at ``--scale 1``) and 200 small
variables, with auto mode on. Each round edits one element and waits for the save, once with
the chunk hint (the default: the save reads only the 4 MB chunks written since they were
last hashed) and once without it (every chunk fast-hashed, as before), in alternating order.
It prints the median and range of the time the save holds the main thread (``prepare``: the
scan's pickling and the hashing) and of the time until the checkpoint is written (the writer
thread's write and fsyncs), with the load average.

Usage::

    python benchmarks/bench_edit_hash.py              # 1 GiB, 7 rounds, under a minute
    python benchmarks/bench_edit_hash.py --scale 0.1  # quick

A benchmark, not a test: it exits 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_capture import isolated_env, load_average, machine_header, median_ms, work_parent


def spread(values: list[float]) -> str:
    return median_ms(values, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = a 1 GiB array")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the store (not tmpfs)")
    args = parser.parse_args(argv)
    parent = work_parent(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="nbcheckpoint-bench-edit-", dir=parent))
    os.environ.update(isolated_env(root))
    os.environ["JPY_SESSION_NAME"] = str(root / "analysis.ipynb")
    os.environ.pop("NBCHECKPOINT_STORE", None)
    try:
        return run(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace) -> int:
    from IPython.testing.globalipapp import start_ipython

    from nbcheckpoint.capture.changes import Scanner
    from nbcheckpoint.capture.pages import tracker
    from nbcheckpoint.store.store import CheckpointStore

    for line in machine_header("nbcheckpoint one-element edit benchmark", args.scale, root):
        print(line, flush=True)
    if not tracker().active:
        print(f"write tracking is not available here ({tracker().reason}): nothing to compare")
        return 0
    n = max(1 << 20, int((128 << 20) * args.scale))
    print(f"state: a {n * 8 / (1 << 30):.2f} GiB float64 array and 200 small variables")
    held: dict[str, float] = {}
    real_prepare = CheckpointStore.prepare

    def prepare(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_prepare(self, *a, **kw)
        finally:
            held["prepare"] = held.get("prepare", 0.0) + time.perf_counter() - t

    CheckpointStore.prepare = prepare  # type: ignore[method-assign]
    real_written = Scanner.written_now
    ip = start_ipython()
    ip.run_line_magic("load_ext", "nbcheckpoint")
    ip.run_cell(
        f"import numpy as np\nbig = np.random.default_rng(0).random({n})\n"
        "for _i in range(200):\n    globals()[f'v{_i}'] = [_i, str(_i)]"
    )
    ip.run_cell("%checkpoint auto on --min-duration 0")
    saver = ip.magics_manager.registry["Checkpoint"].autosaver
    saver.settle()
    found: dict[str, dict[str, list[float]]] = {
        k: {"main": [], "written": []} for k in ("hint", "no hint")
    }
    for r in range(args.rounds):
        order = ["hint", "no hint"] if r % 2 == 0 else ["no hint", "hint"]
        for kind in order:
            Scanner.written_now = (  # type: ignore[method-assign]
                real_written if kind == "hint" else (lambda self: {})
            )
            saver.settle()
            held.clear()
            start = time.perf_counter()
            ip.run_cell(f"big[{(r * 7919) % n}] += 1.0")
            saver.settle()
            found[kind]["main"].append(held.get("prepare", 0.0))
            found[kind]["written"].append(time.perf_counter() - start)
        print(f"  round {r + 1}: load average {load_average()}", flush=True)
    print()
    for kind, values in found.items():
        print(f"  {kind}: main thread (scan pickling and hashing) {spread(values['main'])}")
        print(f"  {kind}: cell and save until written {spread(values['written'])}")
    ratio = [a / b for a, b in zip(found["hint"]["main"], found["no hint"]["main"])]
    print(
        f"\nmain-thread time with the hint / without: median "
        f"{statistics.median(ratio):.3f}x (per round {min(ratio):.3f}-{max(ratio):.3f}x)"
    )
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
