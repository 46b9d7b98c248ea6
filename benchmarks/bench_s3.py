"""Time a checkpoint save and restore over S3 against plain s3fs moving the same bytes.

A local S3 API server (moto, in a child process so that it does not share this process's
GIL) stands in for S3; it is reached only through the standard AWS environment. Each
repetition uses a fresh store prefix, so every save uploads everything (no dedup):

- save:    ``CheckpointStore.save`` of the arrays (pickle, BLAKE3, blobs, signed manifest)
           vs ``fs.pipe_file`` of each array's bytes (a PUT, or a concurrent multipart
           upload above 100 MB);
- restore: ``CheckpointStore.load`` (verifies the signature and every blob hash, unpickles)
           vs ``fs.cat_file`` of each object;
- re-save: the same state saved again, unchanged (recognised by the fast hash: no upload).

Usage::

    python benchmarks/bench_s3.py                  # 256 MiB in 8 arrays, 3 repetitions
    python benchmarks/bench_s3.py --size-mb 64 --repeat 1

moto is much slower than S3 (it is a Python server); compare the ratios, not the rates.
It is a benchmark, not a test: it exits 0 and prints a table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the moto helper lives with the tests

from s3_server import S3Server  # noqa: E402

from nbcheckpoint.format import table  # noqa: E402
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey  # noqa: E402

MiB = 1 << 20


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_average() -> str:
    """The load averages: other work on a shared machine skews timings."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="total size of the arrays")
    parser.add_argument("--arrays", type=int, default=8, help="how many arrays share the size")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are shown")
    args = parser.parse_args(argv)
    load_at_start = load_average()

    rng = np.random.default_rng(0)
    per_array = args.size_mb * MiB // args.arrays // 8
    # Random floats: incompressible, so both sides move the same number of bytes.
    state = {f"a{i}": rng.standard_normal(per_array) for i in range(args.arrays)}
    raw = {name: a.tobytes() for name, a in state.items()}
    total = sum(len(b) for b in raw.values())
    key = SigningKey(secrets.token_bytes(32), "benchmark")
    nb = NotebookRef.from_path(os.path.join(tempfile.gettempdir(), "bench.ipynb"))

    server = S3Server(in_process=False).start()
    times: dict[str, list[float]] = {k: [] for k in ("save", "put", "load", "get", "resave")}
    try:
        with server.activate():
            for _ in range(args.repeat):
                url = server.new_store_url()
                store = CheckpointStore(url, key=key)
                store.save({"warm": 1}, nb)  # connection, probe, signing key, .gitignore
                times["save"].append(timed(lambda s=store: s.save(state, nb)))
                times["resave"].append(timed(lambda s=store: s.save(state, nb)))
                reader = CheckpointStore(url, key=key)
                times["load"].append(timed(lambda r=reader: r.load(nb, 2)))

                fs = store.backend.fs  # type: ignore[attr-defined]
                plain = f"{store.backend.root}-plain"  # type: ignore[attr-defined]

                def put(fs: Any = fs, plain: str = plain) -> None:
                    for name, data in raw.items():
                        fs.pipe_file(f"{plain}/{name}", data)

                def get(fs: Any = fs, plain: str = plain) -> None:
                    for name in raw:
                        fs.cat_file(f"{plain}/{name}")

                times["put"].append(timed(put))
                times["get"].append(timed(get))
    finally:
        server.stop()

    med = {k: statistics.median(v) for k, v in times.items()}

    def rate(seconds: float) -> str:
        return f"{total / MiB / seconds:,.0f} MiB/s"

    rows = [
        ["save vs put", f"{med['save']:.2f}", rate(med["save"]), f"{med['put']:.2f}",
         rate(med["put"]), f"{med['save'] / med['put']:.2f}x"],
        ["restore vs get", f"{med['load']:.2f}", rate(med["load"]), f"{med['get']:.2f}",
         rate(med["get"]), f"{med['load'] / med['get']:.2f}x"],
        ["unchanged re-save", f"{med['resave']:.2f}", "", f"{med['put']:.2f}", "",
         f"{med['resave'] / med['put']:.2f}x"],
    ]  # fmt: skip
    print(
        f"{args.arrays} arrays, {total / MiB:.0f} MiB of random float64, moto on 127.0.0.1, "
        f"median of {args.repeat}; {os.cpu_count()} CPUs; load average {load_at_start} at start"
    )
    print(
        table(
            rows,
            ["operation", "nbcheckpoint s", "rate", "plain s3fs s", "rate", "ratio"],
            align="lrrrrr",
        )
    )
    print("ratio = nbcheckpoint time / plain s3fs time (1.00x: no overhead)")
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
