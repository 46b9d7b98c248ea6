"""Time what open checkpoint panels cost a running loop at each checkpoint, on the main thread.

A ``%%checkpoint`` loop tells every listener about each checkpoint on the kernel's main
thread (``events.emit``), inside the user's loop. This takes ~200 checkpoints into a
fresh local store with 0, 1, 2 and 5 live panels open and times each ``emit``: the part
of a checkpoint the panels add to the loop. The panels' own work (drawing the rows)
happens on their live thread and is waited for after each round, outside the timing.

Usage::

    python benchmarks/bench_panels.py                  # 200 checkpoints, 5 rounds
    python benchmarks/bench_panels.py --checkpoints 50 --rounds 2

Rounds alternate the order of the panel counts, so a burst of load on the shared machine
hits each count alike; medians and ranges (min-max of the round medians) are printed with
the load average. It exits 0: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbcheckpoint.capture import events
from nbcheckpoint.capture.engine import kernel_identity
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.widgets import CheckpointPanel

try:  # absent before panels drew on a live thread: then there is nothing to wait for
    from nbcheckpoint.widgets import live
except ImportError:  # pragma: no cover
    live = None  # type: ignore[assignment]

COUNTS = (0, 1, 2, 5)


def one_round(panels: int, checkpoints: int) -> list[float]:
    """Seconds spent in ``emit`` per checkpoint with ``panels`` live panels open."""
    kernel = kernel_identity()
    with tempfile.TemporaryDirectory() as root:
        store = CheckpointStore(root)
        nb = NotebookRef.from_path(os.path.join(root, "train.ipynb"))
        opened = [CheckpointPanel(store, nb, namespace={}, live=True) for _ in range(panels)]
        state = {"weights": [0.0] * 1000, "epoch": 0, "config": {"lr": 0.1}}
        cell = {
            "source_hash": "0" * 64,
            "execution_count": 3,
            "first_line": "for epoch in range(200):",
        }
        costs = []
        try:
            for epoch in range(checkpoints):
                state["epoch"] = epoch
                state["weights"][epoch % 1000] = float(epoch)  # type: ignore[index]
                ck = store.save(
                    state,
                    nb,
                    status="running",
                    cell=cell,
                    position={"description": f"for epoch at {epoch}/{checkpoints}"},
                    kernel=kernel,
                )
                start = time.perf_counter()
                events.emit(ck)
                costs.append(time.perf_counter() - start)
            if live is not None:
                live.thread().wait_idle(60.0)
            for panel in opened:
                assert panel.ids[0] == ck.id, "a panel did not show the last checkpoint"
        finally:
            for panel in opened:
                panel.close()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=200, help="checkpoints per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each runs every count)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    medians: dict[int, list[float]] = {n: [] for n in COUNTS}
    for r in range(args.rounds):
        order = COUNTS if r % 2 == 0 else tuple(reversed(COUNTS))
        for n in order:
            medians[n].append(statistics.median(one_round(n, args.checkpoints)))
    load_after = os.getloadavg()

    print(
        f"Main-thread cost of open panels per checkpoint ({args.checkpoints} checkpoints, "
        f"{args.rounds} alternating rounds; median of round medians, range in brackets)"
    )
    print(f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min)")
    for n in COUNTS:
        ms = [m * 1000 for m in medians[n]]
        print(
            f"  {n} panel{'s' if n != 1 else ' '}: {statistics.median(ms):8.3f} ms "
            f"[{min(ms):.3f} - {max(ms):.3f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
