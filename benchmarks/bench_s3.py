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

Each round runs both sides, and which goes first alternates; the table shows medians
with their ranges (min-max) and the range of the per-round ratios, and the load average
is printed at the start, after each round and at the end.

Usage::

    python benchmarks/bench_s3.py                  # 256 MiB in 8 arrays, 5 rounds
    python benchmarks/bench_s3.py --size-mb 64 --repeat 2

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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_capture import load_average, median_range, ratio_range  # noqa: E402
from s3_server import S3Server  # noqa: E402

from nbcheckpoint.format import table  # noqa: E402
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey  # noqa: E402

MiB = 1 << 20
# The rows: (label, our timing, the plain s3fs timing it is compared with).
PAIRS = (
    ("save vs put", "save", "put"),
    ("restore vs get", "load", "get"),
    ("unchanged re-save", "resave", "put"),
)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="total size of the arrays")
    parser.add_argument("--arrays", type=int, default=8, help="how many arrays share the size")
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="alternating rounds (the two sides take turns going first); medians and ranges",
    )
    args = parser.parse_args(argv)
    rounds = max(1, args.repeat)

    def say(line: str = "") -> None:
        print(line, flush=True)

    say(
        f"nbcheckpoint S3 benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"load average at start: {load_average()} (a shared machine)"
    )
    rng = np.random.default_rng(0)
    per_array = args.size_mb * MiB // args.arrays // 8
    # Random floats: incompressible, so both sides move the same number of bytes.
    state = {f"a{i}": rng.standard_normal(per_array) for i in range(args.arrays)}
    raw = {name: a.tobytes() for name, a in state.items()}
    total = sum(len(b) for b in raw.values())
    key = SigningKey(secrets.token_bytes(32), "benchmark")
    nb = NotebookRef.from_path(os.path.join(tempfile.gettempdir(), "bench.ipynb"))

    server = S3Server(in_process=False).start()
    times: dict[str, list[float]] = {k: [] for k in ("save", "resave", "load", "put", "get")}
    try:
        with server.activate():
            for r in range(rounds):
                url = server.new_store_url()
                store = CheckpointStore(url, key=key)
                store.save({"warm": 1}, nb)  # connection, probe, signing key, .gitignore
                fs = store.backend.fs  # type: ignore[attr-defined]
                plain = f"{store.backend.root}-plain"  # type: ignore[attr-defined]

                def ours(store: CheckpointStore = store, url: str = url) -> None:
                    times["save"].append(timed(lambda: store.save(state, nb)))
                    times["resave"].append(timed(lambda: store.save(state, nb)))
                    reader = CheckpointStore(url, key=key)
                    times["load"].append(timed(lambda: reader.load(nb, 2)))

                def s3fs_side(fs: Any = fs, plain: str = plain) -> None:
                    def put() -> None:
                        for name, data in raw.items():
                            fs.pipe_file(f"{plain}/{name}", data)

                    def get() -> None:
                        for name in raw:
                            fs.cat_file(f"{plain}/{name}")

                    times["put"].append(timed(put))
                    times["get"].append(timed(get))

                for side in (ours, s3fs_side) if r % 2 == 0 else (s3fs_side, ours):
                    side()
                say(
                    f"  round {r + 1} ({'nbcheckpoint' if r % 2 == 0 else 'plain s3fs'} first): "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                    + f"; load average {load_average()}"
                )
    finally:
        server.stop()

    med = {k: statistics.median(v) for k, v in times.items()}

    def rate(seconds: float) -> str:
        return f"{total / MiB / seconds:,.0f} MiB/s"

    rows = [
        [
            label,
            median_range(times[ours_key]),
            "" if ours_key == "resave" else rate(med[ours_key]),
            median_range(times[base_key]),
            rate(med[base_key]),
            f"{med[ours_key] / med[base_key]:.2f}x",
            ratio_range(times[ours_key], times[base_key]),
        ]
        for label, ours_key, base_key in PAIRS
    ]
    say(
        f"{args.arrays} arrays, {total / MiB:.0f} MiB of random float64, moto on 127.0.0.1; "
        f"medians (min-max) of {rounds} alternating rounds"
    )
    say(
        table(
            rows,
            ["operation", "nbcheckpoint", "rate", "plain s3fs", "rate", "ratio", "per round"],
            align="lrrrrrr",
        )
    )
    say(
        "ratio = median nbcheckpoint time / median plain s3fs time (1.00x: no overhead); "
        "per round = the range of the rounds' own ratios"
    )
    say(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
