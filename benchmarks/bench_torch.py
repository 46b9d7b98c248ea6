"""Time the store against ``torch.save``/``torch.load`` on a PyTorch model and its optimizer.

Issue #14, item 1. The state (at ``--scale 1``) is an MLP of about 206 MB of float32
parameters with Adam's two moments after one step: 617 MB in all, as in the issue. In
each of ``--rounds`` rounds (5 by default; the two tools take turns going first):

* ``torch.save({"model": model.state_dict(), "opt": opt.state_dict()})`` into a file,
  then fsync, and ``torch.load`` of it;
* ``store.save({"model": model, "opt": opt})`` into a new store (the store fsyncs what it
  writes), and a restore from a new ``CheckpointStore`` object (the objects themselves come
  back: the module, the optimizer holding the module's parameters), read whole, then lazy
  (tensors mapped, as ``%checkpoint restore`` does); each tool's restore is also timed
  until every element was read once;
* one layer changed in place, and the store's save again: the bytes it writes, against
  that layer's size;
* the peak of the process's resident memory above where it was, during each save (sampled
  every 2 ms on a thread).

Each round measures two states of the same model: right after ``opt.step()``, where each
parameter still holds its gradient (the store saves the objects as they are, gradients
included, 822 MB; the state dicts leave them out), and after ``opt.zero_grad()``, where
both tools save the same 617 MB of tensors.

Both read and write through the page cache, warm. Medians and ranges over the rounds
and the range of per-round ratios, with the load average.

Usage::

    python benchmarks/bench_torch.py               # a minute or two
    python benchmarks/bench_torch.py --scale 0.1   # quick

It is a benchmark, not a test: it exits 0 whether or not the targets are met and prints
MISSED for those that are not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_capture import load_average, median_range

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """The highest resident size seen while the block runs, above the size at its start."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakMemory:
        self.start = rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def build(scale: float) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(0)
    width = max(64, int(4096 * scale**0.5) // 64 * 64)
    model = torch.nn.Sequential(
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 256),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(32, width)).square().mean().backward()
    opt.step()
    return model, opt


def torch_round(model: Any, opt: Any, root: Path) -> dict[str, float]:
    import torch

    path = root / "state.pt"
    with PeakMemory() as memory:
        start = time.perf_counter()
        with open(path, "wb") as f:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
        saved = time.perf_counter() - start
    start = time.perf_counter()
    back = torch.load(path)
    loaded = time.perf_counter() - start
    read_all([*back["model"].values(), *_opt_tensors(back["opt"]["state"])])
    read = time.perf_counter() - start
    assert torch.equal(back["model"]["6.weight"], model[6].weight)
    del back
    size = float(path.stat().st_size)
    path.unlink()
    return {
        "save": saved,
        "load": loaded,
        "lazy": loaded,
        "read": read,
        "bytes": size,
        "memory": memory.extra,
    }


def _opt_tensors(state: Any) -> list[Any]:
    return [t for s in state.values() for t in s.values() if hasattr(t, "nbytes")]


def read_all(tensors: list[Any]) -> float:
    """Every element read once (what the first use after a restore does)."""
    return sum(float(t.detach().float().sum()) for t in tensors)


def store_round(model: Any, opt: Any, root: Path) -> dict[str, float]:
    import torch

    from nbcheckpoint.store import CheckpointStore, NotebookRef

    url = str(root / "store")
    store = CheckpointStore(url)
    nb = NotebookRef.from_path(str(root / "bench.ipynb"))
    with PeakMemory() as memory:
        start = time.perf_counter()
        first = store.save({"model": model, "opt": opt}, nb)
        saved = time.perf_counter() - start
    start = time.perf_counter()
    back = CheckpointStore(url).load(nb).values
    loaded = time.perf_counter() - start
    assert torch.equal(back["model"][6].weight, model[6].weight)
    del back
    # What %checkpoint restore does: tensors mapped, not read. The pager is started ahead,
    # as the extension does when it finds a checkpoint from an earlier kernel.
    fresh = CheckpointStore(url)
    fresh.prepare_lazy(fresh.list(nb)[-1])
    start = time.perf_counter()
    back = fresh.load(nb, lazy=True).values
    lazy = time.perf_counter() - start
    read_all([*back["model"].parameters(), *_opt_tensors(back["opt"].state)])
    read = time.perf_counter() - start
    assert torch.equal(back["model"][6].weight, model[6].weight)
    del back
    layer = model[4].weight
    with torch.no_grad():
        layer.add_(1e-3)  # one layer changed in place
    second = store.save({"model": model, "opt": opt}, nb)
    with torch.no_grad():
        layer.sub_(1e-3)
    shutil.rmtree(url)
    return {
        "save": saved,
        "load": loaded,
        "lazy": lazy,
        "read": read,
        "bytes": float(first.body["stats"].get("bytes_new", 0)),
        "memory": memory.extra,
        "resave": second.new_bytes / layer.nbytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 617 MB of state")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--dir", type=Path, help="work in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_torch: PyTorch is not installed (pip install torch==2.13.0)")
        return 0
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    model, opt = build(args.scale)
    size = sum(t.nbytes for t in model.state_dict().values())
    size += sum(t.nbytes for s in opt.state.values() for t in s.values())
    say(
        f"bench_torch: torch {torch.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {size / 1e6:.0f} MB of tensors "
        f"(model {sum(p.nbytes for p in model.parameters()) / 1e6:.0f} MB + Adam state), "
        f"{args.rounds} rounds, load average {load_average()}"
    )
    # Two states of the same model, each round: right after ``opt.step()``, each parameter
    # still holds its gradient (the store saves the objects as they are, gradients included;
    # the state dicts leave them out: 33% more bytes for the store), and after
    # ``opt.zero_grad()`` (PyTorch's default sets them to None): both tools then save the
    # same tensors.
    states = {"after step": "gradients held", "after zero_grad": "no gradients"}
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        state: {"torch": [], "store": []} for state in states
    }
    params = list(model.parameters())
    grads = [p.grad for p in params]
    with tempfile.TemporaryDirectory(prefix="nbc-bench-torch-", dir=args.dir) as tmp:
        root = Path(tmp)
        for i in range(args.rounds):
            order = ["torch", "store"] if i % 2 == 0 else ["store", "torch"]
            for state in states:
                for p, g in zip(params, grads):
                    p.grad = g if state == "after step" else None
                for tool in order:
                    run = torch_round if tool == "torch" else store_round
                    results[state][tool].append(run(model, opt, root))
                t, s = results[state]["torch"][-1], results[state]["store"][-1]
                say(
                    f"  round {i + 1} {state} ({' first, '.join(order)} second): save "
                    f"{s['save']:.2f}s vs {t['save']:.2f}s, load {s['load']:.2f}s (lazy "
                    f"{s['lazy']:.2f}s, with a full read {s['read']:.2f}s) vs {t['load']:.2f}s "
                    f"(with a full read {t['read']:.2f}s); load average {load_average()}"
                )
        for p, g in zip(params, grads):
            p.grad = g

    def times(x: float) -> str:
        return f"{x:.2f}x"

    def mb(x: float) -> str:
        return f"{x / 1e6:.0f} MB"

    model_bytes = sum(p.nbytes for p in model.parameters())
    targets: list[tuple[str, float, float]] = []
    for state, what in states.items():
        got = results[state]

        def column(
            tool: str, key: str, got: dict[str, list[dict[str, float]]] = got
        ) -> list[float]:
            return [r[key] for r in got[tool]]

        def ratios(key: str, got: dict[str, list[dict[str, float]]] = got) -> list[float]:
            return [s[key] / t[key] for s, t in zip(got["store"], got["torch"])]

        say("")
        say(
            f"{state} ({what}): the store saved {mb(statistics.median(column('store', 'bytes')))} "
            f"(the module and optimizer as they are), torch.save "
            f"{mb(statistics.median(column('torch', 'bytes')))} (the two state dicts)"
        )
        say(f"{'':34}{'nbcheckpoint':>28}{'torch.save/load':>28}{'ratio':>22}")
        for key, label in [
            ("save", "save (+fsync)"),
            ("load", "restore, read whole / torch.load"),
            ("lazy", "restore, lazy / torch.load"),
            ("read", "same, then every element read"),
        ]:
            say(
                f"{label:34}{median_range(column('store', key)):>28}"
                f"{median_range(column('torch', key)):>28}{median_range(ratios(key), times):>22}"
            )
        say(
            f"{'peak extra memory during save':34}"
            f"{median_range(column('store', 'memory'), mb):>28}"
            f"{median_range(column('torch', 'memory'), mb):>28}"
            f"{median_range([m / model_bytes for m in column('store', 'memory')], times):>22}"
            "  (ours / the model)"
        )
        say(
            f"{'re-save after one layer changed':34}"
            f"{median_range(column('store', 'resave'), times):>28}{'':>28}"
            "  (bytes written / that layer's bytes)"
        )
        targets += [
            (f"{state}: save <= 1.0x torch.save+fsync", statistics.median(ratios("save")), 1.0),
            (
                f"{state}: restore (lazy, as %checkpoint restore) <= 1.0x torch.load",
                statistics.median(ratios("lazy")),
                1.0,
            ),
            (
                f"{state}: restore read whole (lazy restore off) <= 1.0x torch.load",
                statistics.median(ratios("load")),
                1.0,
            ),
            (
                f"{state}: re-save after one layer <= 1.2x that layer",
                statistics.median(column("store", "resave")),
                1.2,
            ),
            (
                f"{state}: peak extra memory during save <= 0.1x the model",
                statistics.median(column("store", "memory")) / model_bytes,
                0.1,
            ),
        ]
    say("")
    for name, value, limit in targets:
        say(f"{'met' if value <= limit else 'MISSED'}: {name} (median {value:.2f}x)")
    say(f"load average at the end: {load_average()}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
