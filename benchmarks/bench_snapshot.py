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
``store.save`` of the state, five times each, compared by medians), ``dill.dump_module``,
IPython's ``%store``, and Kishu when ``--kishu-python`` names an interpreter that has it.

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
    machine_header,
    megabytes,
    print_table,
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
THROUGHPUT_ROUNDS = 5


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
    shell: Any, root: Path, names: list[str], mode: str, profile: bool
) -> tuple[list[float], list[Any], Path, list[cProfile.Profile]]:
    """Run the looping cell in ``mode``; returns the pauses, the checkpoints, the store path and profiles."""
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    store = root / f"store-{mode}"
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
    root: Path, python: str, scale: float, say: Callable[[str], None]
) -> dict[str, float]:
    """Kishu commits after cells, not inside a loop: time its commit after a cell that changed 1%."""
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
    out: dict[str, float] = {}
    with kernel(python, folder, env) as k:
        k.run(code).check("building the state")
        plain = [k.run(change).check("change").seconds for _ in range(2)]
        k.run(f"from kishu import init_kishu\ninit_kishu({str(nb)!r})").check("init_kishu")
        out["first"] = k.run("pass").check().seconds
        changed = [k.run(change).check("change").seconds for _ in range(2)]
        out["changed"] = statistics.median(changed) - statistics.median(plain)
        db = folder / f"{nb.stem}.kishudb"  # Kishu keeps its database beside the notebook
        out["disk"] = dir_bytes(db) if db.is_dir() else (db.stat().st_size if db.exists() else 0)
    say(
        f"  Kishu: first commit {out['first']:.2f} s; commit after a 1% change +{out['changed']:.2f} s "
        f"(cell {statistics.median(changed):.2f} s vs {statistics.median(plain):.2f} s without Kishu)"
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

    # 1. Raw disk speed, and a first save in this process, on the same disk: side by side,
    # alternating which goes first, medians of THROUGHPUT_ROUNDS each (one run of either
    # varies by tens of percent on a shared machine).
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    nb = NotebookRef.from_path(str(root / "train.ipynb"))
    raw_times: list[float] = []
    save_times: list[float] = []
    raw_bytes = 0
    first_disk = 0
    for round_ in range(THROUGHPUT_ROUNDS):
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
    from nbcheckpoint.store.serializer import serialize

    start = time.perf_counter()
    serialize(ns, names)  # the part of every save (and of every inline pause) that pickles
    pickle_s = time.perf_counter() - start
    start = time.perf_counter()
    serialize(ns, ["objs"])
    pickle_objs_s = time.perf_counter() - start
    say(
        f"raw write + fsync of {megabytes(raw_bytes)}: {[round(t, 2) for t in raw_times]} s, "
        f"median {raw_s:.2f} s ({raw_bytes / raw_s / MB:,.0f} MB/s); store.save of the same "
        f"state into a new store, alternating with it: {[round(t, 2) for t in save_times]} s, "
        f"median {save_s:.2f} s ({raw_bytes / save_s / MB:,.0f} MB/s logical, "
        f"{megabytes(first_disk)} on disk after zstd); per round "
        f"{[f'{r / s:.0%}' for r, s in zip(raw_times, save_times)]}; "
        f"of a save, serialize() takes {pickle_s:.2f} s, {pickle_objs_s:.2f} s of it for the "
        f"{len(ns['objs']):,} small objects (C pickler)"
    )

    # 2. The looping cell in each mode.
    results: dict[str, dict[str, Any]] = {}
    profiles: dict[str, list[cProfile.Profile]] = {}
    for mode in ("fork", "inline"):
        pauses, cks, store, profs = loop_in_mode(shell, root, names, mode, args.profile)
        profiles[mode] = profs
        live = cks[-1].total_bytes if cks else 0
        results[mode] = {
            "pauses": pauses,
            "first": pauses[0] if pauses else None,
            "unchanged": pauses[FIRST : FIRST + UNCHANGED],
            "changed": pauses[FIRST + UNCHANGED :],
            "durations": [ck.body["stats"].get("duration", 0.0) for ck in cks],
            "count": len(cks),
            "disk": dir_bytes(store),
            "live": live,
        }
        r = results[mode]
        say(
            f"{mode}: {len(cks)} snapshots; pauses ms {[round(p * 1e3, 1) for p in pauses]}; "
            f"save durations s {[round(d, 2) for d in r['durations']]}; "
            f"on disk {megabytes(r['disk'])} for {megabytes(live)} live"
        )
        shutil.rmtree(store, ignore_errors=True)

    # 3. Baselines on the same state.
    dill_first, dill_size = dill_dump(root, ns, names, "1")
    ns["_bench_step"](FIRST + UNCHANGED + CHANGED)  # 1% changed
    dill_second, _ = dill_dump(root, ns, names, "2")
    shell.run_line_magic("load_ext", "storemagic")
    store_first = ipython_store(shell, names)
    ns["_bench_step"](FIRST + UNCHANGED + CHANGED + 1)
    store_second = ipython_store(shell, names)
    store_disk = dir_bytes(Path(shell.profile_dir.location) / "db")
    say(
        f"dill.dump_module + fsync: {dill_first:.2f} s, after a 1% change {dill_second:.2f} s, "
        f"{megabytes(dill_size)} file; %store: {store_first:.2f} s, {store_second:.2f} s, "
        f"{megabytes(store_disk)} (no fsync)"
    )
    kishu_python = args.kishu_python or sys.executable
    kishu_version = kishu_available(kishu_python)
    kishu: dict[str, float] = {}
    if kishu_version is not None:
        try:
            kishu = kishu_side(root, kishu_python, args.scale, say)
        except Exception as e:  # optional: report, do not fail
            say(f"  Kishu could not be measured: {type(e).__name__}: {str(e)[:400]}")

    # 4. The table.
    fork, inline = results["fork"], results["inline"]
    gib = (fork["live"] or buffers) / GiB
    fork_changed = statistics.median(fork["changed"]) if fork["changed"] else None
    fork_all = fork["pauses"]
    rows = [
        Row(
            "fork: pause per snapshot, median",
            statistics.median(fork_all) if fork_all else None,
            dill_first,
            "abs",
            TARGET_FORK_PAUSE,
            note=f"max {seconds(max(fork_all) if fork_all else None)}; baseline = dill.dump_module (blocks for all of it)",
        ),
        Row(
            "fork: pause, max over all snapshots",
            max(fork_all) if fork_all else None,
            dill_first,
            "abs",
            TARGET_FORK_PAUSE,
        ),
        Row(
            "fork: pause, 1% changed vs dill",
            fork_changed,
            dill_second,
            "ratio",
        ),
        Row(
            "inline: pause, nothing changed, per GiB",
            statistics.median(inline["unchanged"]) / gib if inline["unchanged"] else None,
            None,
            "abs",
            TARGET_INLINE_PER_GIB,
            note=f"state {fork['live'] / GiB:.2f} GiB serialized; raw pauses ms "
            f"{[round(p * 1e3, 1) for p in inline['unchanged']]}",
        ),
        Row(
            "inline: pause, 1% changed (median)",
            statistics.median(inline["changed"]) if inline["changed"] else None,
            dill_second,
            "ratio",
        ),
        Row(
            "save throughput: store.save vs raw",
            save_s,
            raw_s,
            "share",
            TARGET_THROUGHPUT,
            note=f"medians of {THROUGHPUT_ROUNDS} alternating runs each; saves s "
            f"{[round(t, 2) for t in save_times]}, raw s {[round(t, 2) for t in raw_times]}",
        ),
        Row(
            "  fork child, first snapshot vs raw",
            fork["durations"][0] if fork["durations"] else None,
            raw_s,
            "share",
        ),
        Row(
            f"fork: on disk after {fork['count']} snapshots",
            fork["disk"],
            fork["live"],
            "ratio",
            TARGET_DISK,
            "B",
            note="baseline = the live state (serialized bytes of the last snapshot)",
        ),
        Row(
            f"inline: on disk after {inline['count']} snapshots",
            inline["disk"],
            inline["live"],
            "ratio",
            TARGET_DISK,
            "B",
        ),
    ]
    say("")
    missed = print_table(rows, say)

    say("")
    say("Side by side, one workload (pause = main thread blocked; written = until durable):")
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
        changed_d = r["durations"][FIRST + UNCHANGED :]
        line(
            f"nbcheckpoint {mode}",
            r["first"],
            statistics.median(r["changed"]) if r["changed"] else None,
            statistics.median(changed_d) if changed_d else None,
            r["disk"],
            f"  ({r['count']} snapshots)",
        )
    line(
        "dill.dump_module",
        dill_first,
        dill_second,
        dill_second,
        dill_size,
        "  (one file, rewritten)",
    )
    line("IPython %store", store_first, store_second, store_second, store_disk, "  (no fsync)")
    if kishu:
        line(
            f"Kishu {kishu_version}",
            kishu["first"],
            kishu["changed"],
            kishu["changed"],
            kishu["disk"],
            "  (after a cell)",
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
