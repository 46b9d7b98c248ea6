"""Time the checkpoint store against ``dill.dump_module`` / ``dill.load_module`` on one notebook-sized state.

The state (1 GiB of NumPy arrays, a 100 MB DataFrame, 10,000 small objects at
``--scale 1``) lives in a fresh module installed as ``__main__`` before dill is imported,
as IPython installs a notebook's namespace; both tools save exactly the same
variables of it, in the same run, side by side.

Each of ``--repeat`` rounds (5 by default) runs both tools, taking turns going first: dill
dumps and loads; the store saves into a new store, restores, saves 10 times with 1%
changed before each and restores again. The table shows medians over the rounds with
their ranges (min-max) and the range of the per-round ratios; the load average is printed
at the start, after each round and at the end.

Usage::

    python benchmarks/bench_store.py                 # full size, a few minutes
    python benchmarks/bench_store.py --scale 0.25 --repeat 2   # quicker
    python benchmarks/bench_store.py --profile       # and show where the time goes

It is a benchmark, not a test: it exits 0 whether or not the targets are met and
prints which ones are missed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib
import inspect
import os
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# A sibling script: the table, the load average, machine facts (it imports no dill).
from bench_capture import (
    Row,
    finish,
    load_average,
    machine_header,
    median_range,
    print_table,
    ratio_range,
    work_parent,
)

from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey
from nbcheckpoint.store.serializer import serialize

# The store module itself (the package re-exports only its classes): its THREADS switch.
store_module = importlib.import_module("nbcheckpoint.store.store")

T = TypeVar("T")
MiB = 1 << 20
N_ARRAYS = 16
ARRAY_BYTES = 64 * MiB
DF_ROWS = 1_250_000
N_SMALL = 10_000
CHANGED = 0.01
# Alternating kinds: half the bytes are random (incompressible), half compress 2-3x.
KINDS = ("noise", "prices", "noise", "sensor")
CITIES = ("Lyon", "Paris", "Oslo", "Kyoto", "Lima", "Pune", "Accra", "Perth")
TARGET_FIRST = 0.8
TARGET_SECOND = 0.1
TARGET_SECOND_WRITTEN = 0.02
TARGET_RESTORE = 1.2
TARGET_DISK = 1.2

# Code a user would type in a notebook cell: executed in the state module, so the class
# and function belong to it and both tools must pickle them by value.
CELL = '''
class Measurement:
    """One reading from one site."""

    def __init__(self, i, site, value):
        self.i = i
        self.site = site
        self.value = value
        self.flags = {"ok": i % 13 != 0, "batch": i // 100}

    def __eq__(self, other):
        return type(other).__name__ == "Measurement" and vars(self) == vars(other)

    def corrected(self, offset=0.5):
        return self.value + offset


def city_means(frame):
    return frame.groupby("city")["x0"].mean()
'''


# ---------------------------------------------------------------------- state
def make_values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` float64 values: random noise, cent-rounded prices, or float32-precision readings."""
    if kind == "noise":
        return rng.standard_normal(n)
    if kind == "prices":
        return np.round(100.0 + np.cumsum(rng.standard_normal(n) * 0.05), 2)
    t = np.arange(n) * 1e-3
    return (np.sin(t) + 0.01 * rng.standard_normal(n)).astype(np.float32).astype(np.float64)


def install_main() -> types.ModuleType:
    """Make a fresh, empty ``__main__``, as IPython does for a notebook's namespace.

    dill binds ``__main__`` when it is first imported and pickles functions whose globals
    are that module's dict by reference; this must therefore run before dill is imported.
    """
    if "dill" in sys.modules:
        raise SystemExit(
            "bench_store.py must run as a script: dill was imported before the state module"
        )
    mod = types.ModuleType("__main__", "The benchmark's notebook namespace.")
    sys.modules["__main__"] = mod
    return mod


def build_state(mod: types.ModuleType, scale: float, seed: int = 0) -> None:
    """Fill ``mod`` like a notebook: arrays, a DataFrame, small objects, a class and a function."""
    exec(compile(CELL, "<notebook cell>", "exec"), mod.__dict__)
    mod.np = np
    mod.pd = pd
    rng = np.random.default_rng(seed)
    n = max(1024, int(ARRAY_BYTES * scale) // 8)
    for i in range(N_ARRAYS):
        kind = KINDS[i % len(KINDS)]
        setattr(mod, f"{kind}_{i:02d}", make_values(kind, n, rng))
    rows = max(1000, int(DF_ROWS * scale))
    columns: dict[str, Any] = {"id": np.arange(rows, dtype=np.int64)}
    columns["x0"] = np.round(rng.standard_normal(rows) * 100, 2)
    columns["x1"] = rng.integers(0, 500, rows).astype(np.float64)
    for j in range(2, 9):
        columns[f"x{j}"] = rng.standard_normal(rows)
    # pandas' default string dtype: one Python str per row, as read_csv would give.
    columns["city"] = rng.choice(CITIES, rows)
    mod.df = pd.DataFrame(columns)
    n_small = max(30, int(N_SMALL * scale))
    n_meas, n_events = n_small * 4 // 10, n_small * 3 // 10
    mod.measurements = [
        mod.Measurement(i, CITIES[i % 8], float(rng.normal())) for i in range(n_meas)
    ]
    mod.events = [
        {"t": i, "kind": ("click", "view", "buy")[i % 3], "ids": (i, i + 1)}
        for i in range(n_events)
    ]
    mod.lookup = {f"k{i}": (i, CITIES[i % 8], i * 0.25) for i in range(n_small - n_meas - n_events)}


def state_names(mod: types.ModuleType) -> list[str]:
    return [n for n in vars(mod) if not n.startswith("__")]


def array_names(mod: types.ModuleType) -> list[str]:
    return [n for n in state_names(mod) if n.split("_")[0] in KINDS]


def mutate(mod: types.ModuleType, step: int, change_bytes: int, rng: np.random.Generator) -> str:
    """Rewrite ``change_bytes`` of one array in place, and 1% of the measurements; returns the array's name."""
    names = array_names(mod)
    name = names[(step - 1) % len(names)]
    arr = getattr(mod, name)
    m = min(arr.size, max(1, change_bytes // arr.itemsize))
    start = (step * 7919) % (arr.size - m + 1)
    arr[start : start + m] = make_values(name.split("_")[0], m, rng)
    for rec in mod.measurements[step % 100 :: 100]:
        rec.value += 1.0
    return name


def mismatches(values: dict[str, Any], mod: types.ModuleType) -> list[str]:
    """Names whose restored value differs from the live one (empty when all match)."""
    bad = []
    probe = mod.df.head(1000)
    for name in state_names(mod):
        live, got = getattr(mod, name), values.get(name)
        if isinstance(live, types.ModuleType):
            ok = isinstance(got, types.ModuleType) and got.__name__ == live.__name__
        elif isinstance(live, np.ndarray):
            ok = isinstance(got, np.ndarray) and np.array_equal(live, got)
        elif isinstance(live, pd.DataFrame):
            ok = isinstance(got, pd.DataFrame) and live.equals(got)
        elif isinstance(live, type):
            ok = (
                callable(got)
                and got(1, "Oslo", 2.0).corrected() == live(1, "Oslo", 2.0).corrected()
            )
        elif isinstance(live, types.FunctionType):
            ok = callable(got) and got(probe).equals(live(probe))
        else:
            ok = got == live
        if not ok:
            bad.append(name)
    return bad


# ---------------------------------------------------------------- measuring
def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def dir_bytes(path: Path) -> int:
    """Apparent size of every file below ``path`` (blobs, manifests, temp files)."""
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, f)).st_size
    return total


def dill_save(mod: types.ModuleType, path: Path) -> None:
    """dill's whole-session save, made as durable as a checkpoint: dump, then fsync the file."""
    import dill

    dill.dump_module(str(path), module=mod)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def yes_no(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


# --------------------------------------------------------------- profiling
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("hashing (blake3)", lambda f, n: n == "digest" or "blake3" in n),
    ("fast hash of unchanged buffers (xxh3)", lambda f, n: "xxh3" in n or "xxhash" in f),
    ("allocate restored buffers (_allocate)", lambda f, n: n == "_allocate" or "mmap" in n),
    ("_read_blob own time (small blobs' bytearrays, loop)", lambda f, n: n == "_read_blob"),
    ("read + zstd decompress", lambda f, n: "Decompress" in n),
    ("zstd compress + its writes", lambda f, n: "Zstd" in n or "zstd" in f),
    ("fsync", lambda f, n: "fsync" in n),
    ("write raw blobs", lambda f, n: "write' of '_io" in n),
    ("read raw blobs", lambda f, n: "read" in n and "_io" in n),
    (
        "unpickle",
        lambda f, n: (
            "Unpickler" in n
            or "_pickle.loads" in n
            or any(s in f for s in ("dill", "pickle", "numpy", "pandas"))
        ),
    ),
]


@contextlib.contextmanager
def one_thread() -> Any:
    """The store's worker threads off: cProfile sees only the thread it runs on."""
    was = store_module.THREADS["enabled"]
    store_module.THREADS["enabled"] = False
    try:
        yield
    finally:
        store_module.THREADS["enabled"] = was


def profile_categories(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """Run ``fn`` under cProfile on one thread; total wall time and own time per category.

    C calls count in their caller. The store's worker threads are turned off for it, so
    all of the work is seen; the total is therefore longer than the timed (threaded) runs.
    """
    prof = cProfile.Profile()
    gc.collect()
    start = time.perf_counter()
    with one_thread():
        prof.runcall(fn)
    total = time.perf_counter() - start
    found: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        label = next((lab for lab, rule in CATEGORIES if rule(filename, name)), "other")
        found[label] = found.get(label, 0.0) + tottime
    return total, found


def describe(total: float, found: dict[str, float]) -> str:
    parts = [(k, v) for k, v in sorted(found.items(), key=lambda kv: -kv[1]) if v >= 0.005]
    return f"{total:.2f} s = " + (
        ", ".join(f"{k} {v:.2f}" for k, v in parts) or "nothing over 5 ms"
    )


def pickling_by_variable(mod: types.ModuleType, top: int = 4) -> str:
    names = [n for n in state_names(mod) if not isinstance(getattr(mod, n), types.ModuleType)]
    times = []
    for name in names:
        t, _ = timed(lambda n=name: serialize(vars(mod), [n], with_rng=False))
        times.append((t, name))
    times.sort(reverse=True)
    rest = sum(t for t, _ in times[top:])
    return (
        ", ".join(f"{n} {t:.2f}" for t, n in times[:top])
        + f", the other {len(times) - top} {rest:.2f}"
    )


def run_profile(
    mod: types.ModuleType,
    root: Path,
    key: SigningKey,
    nb: NotebookRef,
    change: int,
    rng: np.random.Generator,
    store: CheckpointStore,
) -> list[str]:
    """Where a first save, an incremental save and a restore spend their time."""
    ns, names = vars(mod), state_names(mod)
    lines = [
        "",
        "Where the time goes (--profile: cProfile own time in s; a C call counts in its caller;",
        "the store's worker threads are off while profiling, so every step runs on one thread",
        "and the totals exceed the timed runs above; pickling is timed without the profiler)",
    ]
    t_ser, snap = timed(lambda: serialize(ns, names))
    lines.append(
        f"  serialize (C pickler, dill only for the notebook's class and function): {t_ser:.2f} s; "
        f"by variable: {pickling_by_variable(mod)}"
    )
    fresh = CheckpointStore(str(root / "profile"), key=key)
    lines.append(
        "  first save, store.save(snapshot=...) after serializing: "
        + describe(*profile_categories(lambda: fresh.save(ns, nb, names, snapshot=snap)))
    )
    mutate(mod, 10_000, change, rng)
    t_ser, snap = timed(lambda: serialize(ns, names))
    lines.append(
        f"  incremental save: serialize {t_ser:.2f} s (every variable is pickled again), then "
        + describe(*profile_categories(lambda: store.save(ns, nb, names, snapshot=snap)))
    )
    lines.append(
        "  restore (load, verify every hash, unpickle): "
        + describe(*profile_categories(lambda: CheckpointStore(store.url, key=key).load(nb)))
    )
    shutil.rmtree(root / "profile", ignore_errors=True)
    return lines


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="size of the state; 1.0 = 1 GiB of arrays"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder to work in (a temp folder is made inside and removed); "
        "default: the temp folder unless it is tmpfs, else the working folder",
    )
    parser.add_argument(
        "--saves", type=int, default=10, help="incremental saves with 1%% changed each"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="alternating rounds (dill and the store take turns going first); medians and ranges",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then show where save and restore time goes"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    state = install_main()

    parent = work_parent(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="nbcheckpoint-bench-", dir=parent))
    # Never touch the user's signing key: a throwaway key, and a key file inside the work folder.
    os.environ["NBCHECKPOINT_KEY_FILE"] = str(root / "signing.key")
    key = SigningKey(secrets.token_bytes(32), "benchmark")
    try:
        return run(args, root, key, state)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path, key: SigningKey, mod: types.ModuleType) -> int:
    import dill  # only now: see install_main

    def say(line: str = "") -> None:
        print(line, flush=True)

    for line in machine_header("nbcheckpoint store benchmark", args.scale, root):
        say(line)
    t_build, _ = timed(lambda: build_state(mod, args.scale))
    ns, names = vars(mod), state_names(mod)
    nb = NotebookRef.from_path(str(root / "analysis.ipynb"))
    rng = np.random.default_rng(1)
    dill_path = root / "session.pkl"
    arrays = array_names(mod)
    array_bytes = sum(getattr(mod, n).nbytes for n in arrays)
    rounds = max(1, args.repeat)
    n_saves = args.saves + 1
    hints = args.saves > 0 and "changed" in inspect.signature(CheckpointStore.save).parameters
    say(
        f"dill {dill.__version__}, pandas {pd.__version__}; page cache not dropped (needs root "
        "and /proc/sys/vm/drop_caches): both restores read files that were just written"
    )
    say(
        f"state (built in {t_build:.1f} s): {len(arrays)} float64 arrays x "
        f"{fmt_mb(array_bytes / len(arrays))} (half random, half compressible), DataFrame "
        f"{len(mod.df):,} rows ({fmt_mb(mod.df.memory_usage(deep=True).sum())} in memory, "
        f"a str column), {len(mod.measurements) + len(mod.events) + len(mod.lookup):,} small "
        "objects, a class, a function"
    )
    say(
        f"{rounds} alternating rounds (dill first in odd-numbered rounds, the store first in "
        f"even-numbered ones). dill: dump_module + fsync, then load_module. The store, in a new "
        f"store each round: first save, restore, {args.saves} saves with 1% changed before each, "
        "restore of the last" + (", one more save told what changed" if hints else "")
    )

    t: dict[str, list[float]] = {
        k: []
        for k in ("dill_save", "dill_load", "first", "load", "second", "hinted", "later", "last")
    }
    b: dict[str, list[float]] = {
        k: [] for k in ("first", "second", "second_new", "hinted", "later", "disk", "disk_of")
    }
    store: CheckpointStore | None = None
    live = change = 0
    step = 0
    for r in range(rounds):
        for tool in ("dill", "ours") if r % 2 == 0 else ("ours", "dill"):
            if tool == "dill":
                with contextlib.suppress(FileNotFoundError):
                    dill_path.unlink()
                took, _ = timed(lambda: dill_save(mod, dill_path))
                t["dill_save"].append(took)
                # dill.load_module into a scratch __main__: the live state stays for the saves.
                took, loaded = timed(lambda: dill.load_module_asdict(str(dill_path)))
                t["dill_load"].append(took)
                if r == 0 and (bad := mismatches(loaded, mod)):
                    say(f"WARNING: dill.load_module restored different values for {bad}")
                del loaded
                continue
            if store is not None:
                shutil.rmtree(store.url, ignore_errors=True)
            # Kept for the later saves, as a kernel keeps its store (and its caches).
            store = CheckpointStore(str(root / f"store-{r}"), key=key)
            url = store.url
            took, ck = timed(lambda s=store: s.save(ns, nb, names))
            t["first"].append(took)
            b["first"].append(dir_bytes(Path(url)))
            if not live:
                live, change = ck.total_bytes, int(CHANGED * ck.total_bytes)
            # Restore from a fresh store object, as a new kernel would.
            took, restored = timed(lambda u=url: CheckpointStore(u, key=key).load(nb))
            t["load"].append(took)
            if r == 0 and (
                bad := mismatches({**restored.values, **_modules(restored.modules)}, mod)
            ):
                say(f"WARNING: the store restored different values for {bad}")
            del restored
            # Plain saves, as `%checkpoint save` and the in-cell writer do: every variable
            # is pickled again.
            for i in range(args.saves):
                step += 1
                mutate(mod, step, change, rng)
                before = dir_bytes(Path(url))
                took, ck = timed(lambda s=store: s.save(ns, nb, names))
                grew = dir_bytes(Path(url)) - before
                t["later"].append(took)
                b["later"].append(grew)
                if i == 0:
                    t["second"].append(took)
                    b["second"].append(grew)
                    b["second_new"].append(ck.new_bytes)
            b["disk"].append(dir_bytes(Path(url)))
            b["disk_of"].append(ck.total_bytes)
            took, restored = timed(lambda u=url: CheckpointStore(u, key=key).load(nb))
            t["last"].append(took)
            values = {**restored.values, **_modules(restored.modules)}
            if r == 0 and (bad := mismatches(values, mod)):
                say(f"WARNING: the store restored different values for {bad} after the saves")
            del restored, values
            if hints:  # one more, told which names changed, as auto mode does after a cell
                step += 1
                hint = [mutate(mod, step, change, rng), "measurements"]
                before = dir_bytes(Path(url))
                took, _ = timed(
                    lambda s=store, c=ck, h=hint: s.save(ns, nb, names, base=c, changed=h)
                )
                t["hinted"].append(took)
                b["hinted"].append(dir_bytes(Path(url)) - before)
        say(
            f"  round {r + 1}: first save {t['first'][-1]:.2f} s vs dill {t['dill_save'][-1]:.2f} s; "
            f"restore {t['load'][-1]:.2f} s vs dill {t['dill_load'][-1]:.2f} s"
            + (f"; second save {t['second'][-1]:.2f} s" if t["second"] else "")
            + f"; load average {load_average()}"
        )
    assert store is not None
    dill_file = dill_path.stat().st_size

    def note(ours: str, base: str) -> str:
        return (
            f"ours {median_range(t[ours])}, dill {median_range(t[base])}; "
            f"per-round ratio {ratio_range(t[ours], t[base])}"
        )

    med = {k: statistics.median(v) for k, v in t.items() if v}
    rows = [
        Row(
            "first save (fsync'd)",
            med["first"],
            med["dill_save"],
            "ratio",
            TARGET_FIRST,
            note=note("first", "dill_save"),
        )
    ]
    if t["second"]:
        rows.append(
            Row(
                "second save, 1% changed",
                med["second"],
                med["dill_save"],
                "ratio",
                TARGET_SECOND,
                note=note("second", "dill_save"),
            )
        )
        if t["hinted"]:
            rows.append(
                Row(
                    "  same, told what changed",
                    med["hinted"],
                    med["dill_save"],
                    "ratio",
                    TARGET_SECOND,
                    note=f"after save {n_saves}; " + note("hinted", "dill_save"),
                )
            )
        rows.append(
            Row(
                f"saves 2-{n_saves}, median",
                med["later"],
                med["dill_save"],
                "ratio",
                note=f"{len(t['later'])} saves ({args.saves} a round): {median_range(t['later'])}",
            )
        )
    rows.append(
        Row(
            "restore (hashes verified)",
            med["load"],
            med["dill_load"],
            "ratio",
            TARGET_RESTORE,
            note=note("load", "dill_load"),
        )
    )
    rows.append(
        Row(
            f"restore after {n_saves} saves",
            med["last"],
            med["dill_load"],
            "ratio",
            note=note("last", "dill_load"),
        )
    )

    say()
    say(
        f"state: {fmt_mb(live)} serialized (pickles + buffers, uncompressed); dill.dump_module "
        f"file: {fmt_mb(dill_file)}; 1% change = {fmt_mb(change)} rewritten in one array + 1% "
        f"of the measurements; ours and baseline (dill) are medians of {rounds} alternating "
        "rounds, the ranges (min-max) below each row"
    )
    say()
    missed = print_table(rows, say)

    say()
    say(
        f"{'bytes (median of ' + str(rounds) + ' rounds)':<42}{'measured':>13}{'of state':>10}"
        f"   {'target':<9}{'met?':>5}   range"
    )
    byte_rows: list[tuple[str, list[float], float, str, float | None]] = []
    if b["second"]:
        byte_rows.append(
            ("written by the second save", b["second"], live, "<= 2%", TARGET_SECOND_WRITTEN)
        )
        byte_rows.append(
            ("  new data, uncompressed (changed chunks)", b["second_new"], live, "-", None)
        )
        if b["hinted"]:
            byte_rows.append(("  same, told what changed", b["hinted"], live, "-", None))
        byte_rows.append((f"written per save, saves 2-{n_saves}", b["later"], live, "-", None))
    byte_rows.append(("written by the first save (compressed)", b["first"], live, "-", None))
    byte_rows.append(
        (
            f"on disk after {n_saves} saves, all kept",
            b["disk"],
            statistics.median(b["disk_of"]),
            "<= 1.2x",
            TARGET_DISK,
        )
    )
    for label, values, of, target, limit in byte_rows:
        n = statistics.median(values)
        frac = n / of
        met = None if limit is None else frac <= limit
        shown = f"{frac:.2f}x" if target.endswith("x") else f"{frac:.1%}"
        say(
            f"{label:<42}{fmt_mb(n):>13}{shown:>10}   {target:<9}{yes_no(met):>5}   "
            f"{fmt_mb(min(values))} - {fmt_mb(max(values))}"
        )
        if met is False:
            missed.append(f"{label.strip()}: {shown} of the state (target {target})")

    say()
    say(
        "Notes: buffers over 8 MB are stored in 4 MB chunks, so a save writes only the "
        "chunks a change touched (smaller buffers are one blob, written again whole); dill "
        "rewrites the whole file on every save."
    )
    finish(missed, say)

    if args.profile:
        for line in run_profile(mod, root, key, nb, change, rng, store):
            say(line)
    return 0


def _modules(modules: dict[str, str]) -> dict[str, Any]:
    return {name: sys.modules.get(target) for name, target in modules.items()}


if __name__ == "__main__":
    sys.exit(main())
