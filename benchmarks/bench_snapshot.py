"""Time snapshots taken inside a running loop (issue #5): main-thread pauses, save throughput, bytes on disk.

One in-process IPython shell holds the state (at ``--scale 1``: 16 x 64 MiB NumPy
arrays, half random and half compressible, a 200 MB DataFrame and 100,000 small
Python objects). A ``%%checkpoint`` cell loops over that state in each mode (fork,
inline); the benchmark sets the due flag itself, once per iteration and only when the
previous snapshot has landed, so every snapshot is taken and none is skipped:

* iteration 0: the first snapshot (everything is new);
* iterations 1-3: nothing changed;
* iterations 4-13: 1% of the state changed before each (one array slice, 1% of the objects).

The main-thread pause is the time spent inside ``CellRun.safepoint``. In the same run:
a raw write + fsync of the same bytes to the same disk (alternating with a first
``store.save`` of the state), ``dill.dump_module`` alternating with IPython's ``%store``,
and Kishu when ``--kishu-python`` names an interpreter that has it.

Every measurement runs ``--rounds`` times (5 by default), the compared tools taking turns
going first (the looping cell: fork and inline). The table shows medians over the rounds
(of each round's median over its snapshots, for the pauses) with their ranges (min-max)
and the per-round ratios; the load average is printed at the start, after each round and
at the end. Kishu's first commit happens once per kernel: it is one measurement.

Usage::

    python benchmarks/bench_snapshot.py                # full size, a few minutes
    python benchmarks/bench_snapshot.py --scale 0.05   # quick
    python benchmarks/bench_snapshot.py --profile      # cProfile of the inline pauses

It is a benchmark, not a test: it exits 0 whether or not the targets are met and
prints MISSED for each one that is not.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# A sibling script: kernels, the table, machine facts.
from bench_capture import (
    MB,
    Row,
    finish,
    isolated_env,
    kernel,
    kishu_available,
    load_average,
    machine_header,
    median_range,
    megabytes,
    print_table,
    ratio_range,
    seconds,
    work_parent,
)

GiB = 1 << 30
MiB = 1 << 20
N_ARRAYS = 16
FIRST, UNCHANGED, CHANGED = 1, 3, 10
CHANGE = 0.01
TARGET_FORK_PAUSE = 0.100
TARGET_INLINE_PER_GIB = 0.150
TARGET_THROUGHPUT = 0.70
TARGET_DISK = 1.2
MODES = ("fork", "inline")


# ------------------------------------------------------------------- state
def build_state(ns: dict[str, Any], scale: float, seed: int = 0) -> list[str]:
    """Fill ``ns`` like a long training notebook; returns the variable names."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = max(4096, int(64 * MiB * scale) // 8)
    names = []
    for i in range(N_ARRAYS):
        if i % 2 == 0:
            values = rng.standard_normal(n)  # incompressible
        else:  # cent-rounded prices: zstd gets about 2-3x
            values = np.round(100.0 + np.cumsum(rng.standard_normal(n) * 0.05), 2)
        ns[f"a{i:02d}"] = values
        names.append(f"a{i:02d}")
    rows = max(1000, int(2_500_000 * scale))  # 10 float64 columns: 200 MB at scale 1
    ns["df"] = pd.DataFrame(rng.standard_normal((rows, 10)), columns=[f"x{j}" for j in range(10)])
    n_small = max(1000, int(100_000 * scale))
    ns["objs"] = [
        {"i": i, "name": f"item{i}", "score": float(i) * 0.5, "tags": (i % 7, i % 11)}
        for i in range(n_small)
    ]
    return [*names, "df", "objs"]


def state_bytes(ns: dict[str, Any], names: list[str]) -> int:
    """Bytes of the state's buffers (arrays, DataFrame blocks); small objects not counted."""
    total = 0
    for name in names:
        value = ns[name]
        if hasattr(value, "nbytes"):
            total += int(value.nbytes)
        elif hasattr(value, "memory_usage"):
            total += int(value.memory_usage(deep=False).sum())
    return total


def make_mutator(ns: dict[str, Any], names: list[str]) -> Callable[[int], None]:
    """``step(k)`` changes 1% of the state from iteration 4 on: a slice of one array and 1% of the objects."""
    import numpy as np

    rng = np.random.default_rng(1)
    arrays = [n for n in names if n.startswith("a")]
    live = state_bytes(ns, names)

    def step(k: int) -> None:
        if k < FIRST + UNCHANGED:
            return
        arr = ns[arrays[k % len(arrays)]]
        m = min(arr.size, max(1, int(CHANGE * live) // arr.itemsize))
        start = (k * 7919) % (arr.size - m + 1)
        arr[start : start + m] = rng.standard_normal(m)
        objs = ns["objs"]
        for rec in objs[k % 100 :: 100]:
            rec["score"] += 1.0

    return step


def dir_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, f)).st_size
    return total


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -------------------------------------------------------------- the shell
def make_shell(root: Path) -> Any:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbcheckpoint")
    shell.run_line_magic("config", f"Checkpoint.notebook = {str(root / 'train.ipynb')!r}")
    return shell


def run_cell(shell: Any, code: str) -> float:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        start = time.perf_counter()
        result = shell.run_cell(code, store_history=True)
        took = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(
            f"cell failed: {result.error_before_exec or result.error_in_exec}\n{out.getvalue()[-2000:]}"
        )
    return took


class PauseMeter:
    """Wraps ``CellRun.safepoint`` to time every call on the main thread; optionally profiles them."""

    def __init__(self) -> None:
        from nbcheckpoint.capture.engine import CellRun

        self.cls = CellRun
        self.original = CellRun.safepoint
        self.pauses: list[float] = []
        self.profiles: list[cProfile.Profile] = []
        self.profile = False

    def __enter__(self) -> PauseMeter:
        meter = self

        def timed(run: Any, sp: int | None, *pairs: int | None) -> None:
            start = time.perf_counter()
            try:
                if meter.profile:
                    prof = cProfile.Profile()
                    prof.runcall(meter.original, run, sp, *pairs)
                    meter.profiles.append(prof)
                else:
                    meter.original(run, sp, *pairs)
            finally:
                meter.pauses.append(time.perf_counter() - start)

        self.cls.safepoint = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.safepoint = self.original  # type: ignore[method-assign]


def loop_in_mode(
    shell: Any, root: Path, names: list[str], mode: str, profile: bool, round_: int = 0
) -> tuple[list[float], list[Any], Path, list[cProfile.Profile]]:
    """Run the looping cell in ``mode``; returns the pauses, the checkpoints, the store path and profiles.

    Each round gets a new store folder: the kernel keeps what it knows of a store by its
    URL, so a folder removed and made again would not be a fresh store to it.
    """
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    store = root / f"store-{mode}-{round_}"
    magics = shell.magics_manager.registry["Checkpoint"]
    ns = shell.user_ns

    def due() -> None:
        """Ask for a snapshot at the next safe point, once the previous one has landed."""
        run = magics.current
        deadline = time.monotonic() + 900
        while run is not None and run.writer.busy() and time.monotonic() < deadline:
            time.sleep(0.005)
        ns["_nbc_due_"] = True

    ns["_bench_due"] = due
    steps = FIRST + UNCHANGED + CHANGED
    # A snapshot is taken at the top of the iteration after the one that asked for it,
    # so one more iteration runs, doing nothing, to take the last one.
    cell = (
        f"%%checkpoint {' '.join(names)} --every 3600 --mode {mode} --store {store}\n"
        f"for step in range({steps + 1}):\n"
        f"    if step < {steps}:\n"
        "        _bench_step(step)\n"
        "        _bench_due()\n"
    )
    with PauseMeter() as meter:
        meter.profile = profile
        run_cell(shell, cell)
    magics.open_store()  # waits for the cell's final checkpoint, if a child still writes it
    nb = NotebookRef.from_path(str(root / "train.ipynb"))
    cks = [ck for ck in CheckpointStore(str(store)).list(nb) if ck.status != "complete"]
    return meter.pauses, cks, store, meter.profiles


# ------------------------------------------------------------- baselines
def raw_write(root: Path, ns: dict[str, Any], names: list[str]) -> tuple[float, int]:
    """Write + fsync the bytes a save would write (pickles and buffers), uncompressed, to one file."""
    from nbcheckpoint.store.serializer import serialize

    snap = serialize(ns, names)
    path = root / "raw.bin"
    total = 0
    start = time.perf_counter()
    with open(path, "wb") as f:
        for group in snap.groups:
            f.write(group.payload)
            total += len(group.payload)
            for buf in group.buffers:
                f.write(buf)
                total += buf.nbytes
        f.flush()
        os.fsync(f.fileno())
    took = time.perf_counter() - start
    path.unlink()
    return took, total


def dill_dump(root: Path, ns: dict[str, Any], names: list[str], tag: str) -> tuple[float, int]:
    """``dill.dump_module`` of a module holding exactly the state's variables, then fsync."""
    import dill

    module = types.ModuleType("__main__")
    for name in names:
        setattr(module, name, ns[name])
    path = root / f"session-{tag}.dill"
    start = time.perf_counter()
    dill.dump_module(str(path), module=module)
    fsync_path(path)
    took = time.perf_counter() - start
    size = path.stat().st_size
    path.unlink()
    return took, size


def ipython_store(shell: Any, names: list[str]) -> float:
    """IPython's ``%store`` of every state variable (pickle into the profile's db)."""
    return run_cell(shell, f"%store {' '.join(names)}")


KISHU_STATE = """\
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
n = {n}
for _i in range(16):
    globals()[f"a{{_i:02d}}"] = rng.standard_normal(n) if _i % 2 == 0 else np.round(100.0 + np.cumsum(rng.standard_normal(n) * 0.05), 2)
df = pd.DataFrame(rng.standard_normal(({rows}, 10)), columns=[f"x{{j}}" for j in range(10)])
objs = [{{"i": i, "name": f"item{{i}}", "score": float(i) * 0.5, "tags": (i % 7, i % 11)}} for i in range({n_small})]
"""
KISHU_CHANGE = """\
a03[{start}:{start} + {m}] = rng.standard_normal({m})
for rec in objs[3::100]:
    rec["score"] += 1.0
"""


def kishu_side(
    root: Path, python: str, scale: float, rounds: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Kishu commits after cells, not inside a loop: time its commit after a cell that changed 1%.

    The same cell runs ``rounds`` times before ``init_kishu`` and ``rounds`` times after it;
    the first commit after ``init_kishu`` (the whole state) happens once per kernel.
    """
    import json

    folder = root / "kishu"
    folder.mkdir()
    nb = folder / "train.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {
        **isolated_env(root),
        "TEST_NOTEBOOK_PATH": str(nb),
        "ENV_KISHU_TEST_MODE": "1",
        "KISHU_PATH_ROOT": str(folder / "kishu-home"),
    }
    n = max(4096, int(64 * MiB * scale) // 8)
    code = KISHU_STATE.format(
        n=n, rows=max(1000, int(2_500_000 * scale)), n_small=max(1000, int(100_000 * scale))
    )
    m = max(1, int(CHANGE * (16 * n * 8 + max(1000, int(2_500_000 * scale)) * 80)) // 8)
    change = KISHU_CHANGE.format(start=0, m=min(m, n))
    out: dict[str, Any] = {}
    with kernel(python, folder, env) as k:
        k.run(code).check("building the state")
        plain = [k.run(change).check("change").seconds for _ in range(rounds)]
        k.run(f"from kishu import init_kishu\ninit_kishu({str(nb)!r})").check("init_kishu")
        out["first"] = k.run("pass").check().seconds
        changed = []
        for r in range(rounds):
            changed.append(k.run(change).check("change").seconds)
            say(f"  Kishu: cell after a 1% change, round {r + 1}: load average {load_average()}")
        out["changed"] = statistics.median(changed) - statistics.median(plain)
        out["changed_range"] = [t - statistics.median(plain) for t in changed]
        db = folder / f"{nb.stem}.kishudb"  # Kishu keeps its database beside the notebook
        out["disk"] = dir_bytes(db) if db.is_dir() else (db.stat().st_size if db.exists() else 0)
    say(
        f"  Kishu: first commit {out['first']:.2f} s (one commit: the first after init_kishu); "
        f"commit after a 1% change +{out['changed']:.2f} s, median of {rounds} (cell "
        f"{median_range(changed)} with Kishu vs {median_range(plain)} without)"
    )
    return out


# ------------------------------------------------------------------ main
def top_functions(profiles: list[cProfile.Profile], limit: int = 18) -> str:
    if not profiles:
        return ""
    stats = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        stats.add(prof)
    text = io.StringIO()
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(limit)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="size of the state (1.0 = 1 GiB of arrays)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="folder for stores (not tmpfs)")
    parser.add_argument(
        "--kishu-python",
        default=None,
        help="an interpreter where kishu is installed (default: this one, if it has kishu)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds of every measurement (the compared tools take turns going first)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the snapshot pauses")
    args = parser.parse_args(argv)
    parent = work_parent(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="nbcheckpoint-bench-snapshot-", dir=parent))
    os.environ.update(isolated_env(root))
    for name in ("NBCHECKPOINT_STORE", "NBCHECKPOINT_KEY"):
        os.environ.pop(name, None)
    try:
        return run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    def say(line: str = "") -> None:
        print(line, flush=True)

    for line in machine_header("nbcheckpoint snapshot benchmark (issue #5)", args.scale, root):
        say(line)
    shell = make_shell(root)
    ns = shell.user_ns
    t0 = time.perf_counter()
    names = build_state(ns, args.scale)
    ns["_bench_step"] = make_mutator(ns, names)
    buffers = state_bytes(ns, names)
    say(
        f"state built in {time.perf_counter() - t0:.1f} s: {N_ARRAYS} float64 arrays, "
        f"{megabytes(ns['a00'].nbytes)} each (half random), DataFrame {megabytes(ns['df'].memory_usage().sum())}, "
        f"{len(ns['objs']):,} small dicts; {megabytes(buffers)} of buffers"
    )

    rounds = max(1, args.rounds)
    # 1. Raw disk speed, and a first save in this process, on the same disk: side by side,
    # alternating which goes first, medians of `rounds` each (one run of either varies by
    # tens of percent on a shared machine).
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    nb = NotebookRef.from_path(str(root / "train.ipynb"))
    raw_times: list[float] = []
    save_times: list[float] = []
    raw_bytes = 0
    first_disk = 0
    for round_ in range(rounds):
        for what in ("raw", "save") if round_ % 2 == 0 else ("save", "raw"):
            if what == "raw":
                took, raw_bytes = raw_write(root, ns, names)
                raw_times.append(took)
                continue
            folder = root / f"store-first-{round_}"
            start = time.perf_counter()
            CheckpointStore(str(folder)).save(ns, nb, names)  # a new store: everything new
            save_times.append(time.perf_counter() - start)
            first_disk = dir_bytes(folder)
            shutil.rmtree(folder)
    raw_s = statistics.median(raw_times)
    save_s = statistics.median(save_times)
    shares = [f"{r / s:.0%}" for r, s in zip(raw_times, save_times)]
    from nbcheckpoint.store.serializer import serialize

    start = time.perf_counter()
    serialize(ns, names)  # the part of every save (and of every inline pause) that pickles
    pickle_s = time.perf_counter() - start
    start = time.perf_counter()
    serialize(ns, ["objs"])
    pickle_objs_s = time.perf_counter() - start
    say(
        f"1. raw write + fsync of {megabytes(raw_bytes)}, alternating with store.save of the same "
        f"state into a new store, {rounds} rounds: raw {[round(t, 2) for t in raw_times]} s, "
        f"{median_range(raw_times)} ({raw_bytes / raw_s / MB:,.0f} MB/s); store.save "
        f"{[round(t, 2) for t in save_times]} s, {median_range(save_times)} "
        f"({raw_bytes / save_s / MB:,.0f} MB/s logical, {megabytes(first_disk)} on disk after "
        f"zstd); per round {shares}; load average {load_average()}"
    )
    say(
        f"   of a save, serialize() takes {pickle_s:.2f} s (one run), {pickle_objs_s:.2f} s of it "
        f"for the {len(ns['objs']):,} small objects (C pickler)"
    )

    # 2. The looping cell, in each mode, `rounds` times, the modes taking turns going first.
    say(
        f"2. the looping cell ({FIRST + UNCHANGED + CHANGED} snapshots a pass), fork and inline "
        f"taking turns going first, {rounds} rounds:"
    )
    keys = ("first", "unchanged", "changed", "median", "max", "written_first", "written_changed")
    results: dict[str, dict[str, list[float]]] = {
        mode: {k: [] for k in (*keys, "pauses", "count", "disk", "live")} for mode in MODES
    }
    profiles: dict[str, list[cProfile.Profile]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            pauses, cks, store, profs = loop_in_mode(shell, root, names, mode, args.profile, round_)
            profiles[mode] += profs
            durations = [ck.body["stats"].get("duration", 0.0) for ck in cks]
            res = results[mode]
            for key, values in (
                ("first", pauses[:FIRST]),
                ("unchanged", pauses[FIRST : FIRST + UNCHANGED]),
                ("changed", pauses[FIRST + UNCHANGED :]),
                ("median", pauses),
                ("written_first", durations[:FIRST]),
                ("written_changed", durations[FIRST + UNCHANGED :]),
            ):
                if values:
                    res[key].append(statistics.median(values))
            if pauses:
                res["max"].append(max(pauses))
            res["pauses"] += pauses
            res["count"].append(len(cks))
            res["disk"].append(dir_bytes(store))
            res["live"].append(cks[-1].total_bytes if cks else 0)
            say(
                f"  round {round_ + 1}, {mode}: {len(cks)} snapshots; pauses ms "
                f"{[round(p * 1e3, 1) for p in pauses]}; save durations s "
                f"{[round(d, 2) for d in durations]}; on disk {megabytes(res['disk'][-1])} for "
                f"{megabytes(res['live'][-1])} live"
            )
            shutil.rmtree(store, ignore_errors=True)
        say(f"  round {round_ + 1}: load average {load_average()}")

    # 3. Baselines on the same state, alternating, 1% of it changed before each round.
    shell.run_line_magic("load_ext", "storemagic")
    dill_times: list[float] = []
    store_times: list[float] = []
    dill_size = 0
    for round_ in range(rounds):
        ns["_bench_step"](FIRST + UNCHANGED + CHANGED + round_)  # 1% changed
        for tool in ("dill", "store") if round_ % 2 == 0 else ("store", "dill"):
            if tool == "dill":
                took, dill_size = dill_dump(root, ns, names, str(round_))
                dill_times.append(took)
            else:
                store_times.append(ipython_store(shell, names))
        say(
            f"3. baselines, round {round_ + 1}: dill.dump_module + fsync {dill_times[-1]:.2f} s, "
            f"%store {store_times[-1]:.2f} s; load average {load_average()}"
        )
    store_disk = dir_bytes(Path(shell.profile_dir.location) / "db")
    dill_s = statistics.median(dill_times)
    say(
        f"   dill.dump_module + fsync (the whole state each time): {median_range(dill_times)}, "
        f"{megabytes(dill_size)} file; %store: {median_range(store_times)}, "
        f"{megabytes(store_disk)} (no fsync); medians (min-max) of {rounds} rounds"
    )
    kishu_python = args.kishu_python or sys.executable
    kishu_version = kishu_available(kishu_python)
    kishu: dict[str, Any] = {}
    if kishu_version is not None:
        try:
            kishu = kishu_side(root, kishu_python, args.scale, rounds, say)
        except Exception as e:  # optional: report, do not fail
            say(f"  Kishu could not be measured: {type(e).__name__}: {str(e)[:400]}")

    # 4. The table: medians over the rounds of each round's median (or max), with ranges.
    fork, inline = results["fork"], results["inline"]

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def rng_(values: list[float], fmt: Callable[[float], str] = seconds) -> str:
        return median_range(values, fmt) if values else "-"

    live = med(fork["live"]) or buffers
    gib = live / GiB
    per_gib = [p / gib for p in inline["unchanged"]]
    rows = [
        Row(
            "fork: pause per snapshot, median",
            med(fork["median"]),
            dill_s,
            "abs",
            TARGET_FORK_PAUSE,
            note=f"median of {rounds} rounds' medians {rng_(fork['median'])}; all "
            f"{len(fork['pauses'])} pauses {rng_(fork['pauses'])}; baseline = "
            "dill.dump_module (blocks for all of it)",
        ),
        Row(
            "fork: pause, max over all snapshots",
            max(fork["max"]) if fork["max"] else None,
            dill_s,
            "abs",
            TARGET_FORK_PAUSE,
            note=f"the max of all {len(fork['pauses'])}; each round's max {rng_(fork['max'])}",
        ),
        Row(
            "fork: pause, 1% changed vs dill",
            med(fork["changed"]),
            dill_s,
            "ratio",
            note=f"each round's median over {CHANGED} snapshots {rng_(fork['changed'])}; "
            f"per-round ratio to dill {ratio_range(fork['changed'], dill_times)}",
        ),
        Row(
            "inline: pause, nothing changed, per GiB",
            med(per_gib),
            None,
            "abs",
            TARGET_INLINE_PER_GIB,
            note=f"state {gib:.2f} GiB serialized; each round's median over {UNCHANGED} "
            f"snapshots, per GiB {rng_(per_gib)}",
        ),
        Row(
            "inline: pause, 1% changed (median)",
            med(inline["changed"]),
            dill_s,
            "ratio",
            note=f"each round's median over {CHANGED} snapshots {rng_(inline['changed'])}; "
            f"per-round ratio to dill {ratio_range(inline['changed'], dill_times)}",
        ),
        Row(
            "save throughput: store.save vs raw",
            save_s,
            raw_s,
            "share",
            TARGET_THROUGHPUT,
            note=f"medians of {rounds} alternating runs each; store.save {rng_(save_times)}, "
            f"raw {rng_(raw_times)}; per round {', '.join(shares)}",
        ),
        Row(
            "  fork child, first snapshot vs raw",
            med(fork["written_first"]),
            raw_s,
            "share",
            note=f"{rounds} rounds: {rng_(fork['written_first'])}",
        ),
    ]
    for mode, r in (("fork", fork), ("inline", inline)):
        count = int(statistics.median(r["count"])) if r["count"] else 0
        rows.append(
            Row(
                f"{mode}: on disk after {count} snapshots",
                med(r["disk"]),
                med(r["live"]),
                "ratio",
                TARGET_DISK,
                "B",
                note=f"{rounds} rounds: {rng_(r['disk'], megabytes)}"
                + ("; baseline = the live state (serialized bytes of the last snapshot)")
                * (mode == "fork"),
            )
        )
    say("")
    missed = print_table(rows, say)

    say("")
    say(
        f"Side by side, one workload (pause = main thread blocked; written = until durable); "
        f"medians of {rounds} rounds, ranges below:"
    )
    say(f"{'tool':<26}{'first pause':>12}{'1% pause':>12}{'1% written':>12}{'on disk':>12}")

    def line(
        tool: str,
        a: float | None,
        b: float | None,
        c: float | None,
        d: float | None,
        extra: str = "",
    ) -> None:
        say(f"{tool:<26}{seconds(a):>12}{seconds(b):>12}{seconds(c):>12}{megabytes(d):>12}{extra}")

    for mode, r in (("fork", fork), ("inline", inline)):
        line(
            f"nbcheckpoint {mode}",
            med(r["first"]),
            med(r["changed"]),
            med(r["written_changed"]),
            med(r["disk"]),
            f"  ({int(med(r['count']) or 0)} snapshots a round)",
        )
        say(
            f"    ranges: first pause {rng_(r['first'])}; 1% pause {rng_(r['changed'])}; "
            f"1% written {rng_(r['written_changed'])}"
        )
    line(
        "dill.dump_module",
        dill_s,
        dill_s,
        dill_s,
        dill_size,
        "  (one file, rewritten whole each time)",
    )
    say(f"    range: {rng_(dill_times)}")
    store_s = statistics.median(store_times)
    line("IPython %store", store_s, store_s, store_s, store_disk, "  (no fsync)")
    say(f"    range: {rng_(store_times)}")
    if kishu:
        line(
            f"Kishu {kishu_version}",
            kishu["first"],
            kishu["changed"],
            kishu["changed"],
            kishu["disk"],
            "  (after a cell)",
        )
        say(
            f"    first commit: one; 1% change: median of {rounds}, range "
            f"{seconds(min(kishu['changed_range']))}-{seconds(max(kishu['changed_range']))}"
        )
    else:
        say(
            f"{'Kishu':<26}{'not installed' if kishu_version is None else 'failed':>12}  (see --kishu-python)"
        )
    if args.profile:
        for mode in ("inline", "fork"):
            say("")
            say(f"cProfile of the {mode} pauses (all snapshots):")
            say(top_functions(profiles[mode]))
    finish(missed, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
