"""`make demo`: save a real notebook namespace, SIGKILL the saving process mid-write, then list, verify and restore.

A worker process (this script with ``--worker``) plays the kernel: it runs notebook
cells in a fresh ``__main__`` (NumPy arrays, a DataFrame, a function, a class), saves
checkpoint #1, runs one more cell and starts checkpoint #2. This process kills it
with SIGKILL while a blob of #2 is being written, then lists the store, verifies it,
restores the newest checkpoint in a fresh ``__main__`` and compares every variable
with fingerprints the worker printed before the kill. Exits 1 if anything differs.

Usage::

    python scripts/demo.py            # a few hundred MB, ~10 s
    python scripts/demo.py --small    # tens of MB, for tests
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pandas as pd

try:
    import nbcheckpoint  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbcheckpoint.store import CheckpointStore, NotebookRef

EVENT = "@demo "
KILL_AT = 1 << 20  # kill once a temp file of #2 holds this many bytes: a blob is mid-write
TIMEOUT = 45.0
SIZES = {  # rows of embeddings (x256 float32), signal length, DataFrame rows
    "full": (160_000, 8_000_000, 2_000_000),
    "small": (20_000, 1_000_000, 200_000),
}

# The notebook: cell 1 builds the state saved as #1, cell 2 changes it before #2.
CELL_1 = """
import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
embeddings = rng.standard_normal((EMBED_ROWS, 256), dtype=np.float32)
signal = np.cumsum(rng.standard_normal(SIGNAL_LEN))
trades = pd.DataFrame({
    "price": np.round(100 + np.cumsum(rng.standard_normal(TRADES) * 0.05), 2),
    "qty": rng.integers(1, 1000, TRADES),
    "side": pd.Categorical(rng.choice(["buy", "sell"], TRADES)),
})


def zscore(x):
    return (x - x.mean()) / x.std()


class Experiment:
    def __init__(self, name, lr):
        self.name = name
        self.lr = lr
        self.history = []

    def fit(self, losses):
        self.history.extend(round(v, 6) for v in losses)
        return self

    def describe(self):
        return f"{self.name}: lr={self.lr}, {len(self.history)} steps, last loss {self.history[-1]}"


exp = Experiment("baseline", lr=3e-4).fit([1 / (k + 1) for k in range(50)])
"""
CELL_2 = """
embeddings *= 0.5
signal = signal + rng.standard_normal(signal.size)
exp.fit([0.01] * 10)
"""


# ---------------------------------------------------------------- shared
def install_main() -> types.ModuleType:
    """A fresh, empty ``__main__`` (as a kernel has), installed before dill is imported.

    dill binds ``__main__`` on import and pickles notebook functions' globals by
    reference to it, so this must run first.
    """
    if "dill" in sys.modules:
        raise SystemExit("demo.py must run as a script: dill was imported too early")
    mod = types.ModuleType("__main__", "The notebook's namespace.")
    sys.modules["__main__"] = mod
    return mod


def variable_names(ns: dict[str, Any]) -> list[str]:
    return [
        n for n, v in ns.items() if not n.startswith("__") and not isinstance(v, types.ModuleType)
    ]


def _raw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def fingerprint(value: Any) -> str:
    """A value's identity for comparison across processes: a hash of its data, or what it does."""
    if isinstance(value, np.ndarray):
        h = blake3.blake3(f"{value.dtype.str}{value.shape}".encode())
        h.update(_raw(value))
        return f"{type(value).__name__} {value.dtype} {value.shape}, blake3 {h.hexdigest()[:12]}"
    if isinstance(value, pd.DataFrame):
        h = blake3.blake3(repr([(c, str(t)) for c, t in value.dtypes.items()]).encode())
        h.update(_raw(pd.util.hash_pandas_object(value, index=True).to_numpy()))
        return f"DataFrame {value.shape}, blake3 {h.hexdigest()[:12]}"
    if isinstance(value, np.random.Generator):
        state = json.dumps(value.bit_generator.state, sort_keys=True, default=str)
        return f"Generator, state blake3 {blake3.blake3(state.encode()).hexdigest()[:12]}"
    if isinstance(value, types.FunctionType):
        out = value(np.linspace(-1.0, 1.0, 5))
        return f"function; {value.__name__}(linspace(-1, 1, 5)) = {np.round(out, 4).tolist()}"
    if isinstance(value, type):
        return f"class; new instance: {value('probe', lr=0.1).fit([0.5]).describe()!r}"
    if hasattr(value, "describe"):
        return f"{type(value).__name__} instance: {value.describe()!r}"
    return f"{type(value).__name__} {value!r}"[:200]


def dir_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, f)).st_size
    return total


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------- worker
def emit(event: str, **fields: Any) -> None:
    print(EVENT + json.dumps({"event": event, **fields}), flush=True)


def worker(store_dir: Path, size: str) -> int:
    """The kernel: run cell 1, save #1, run cell 2, start #2 (and get killed during it)."""
    ns = vars(install_main())
    rows, length, trades = SIZES[size]
    ns.update(EMBED_ROWS=rows, SIGNAL_LEN=length, TRADES=trades)
    exec(compile(CELL_1, "<cell 1>", "exec"), ns)
    for name in ("EMBED_ROWS", "SIGNAL_LEN", "TRADES"):
        del ns[name]
    store = CheckpointStore(str(store_dir))
    nb = NotebookRef.from_path(str(store_dir.parent / "analysis.ipynb"))
    names = [n for n in ns if not n.startswith("__")]
    expected = {n: fingerprint(ns[n]) for n in variable_names(ns)}

    start = time.perf_counter()
    ck = store.save(ns, nb, names)
    emit(
        "saved",
        id=ck.id,
        seconds=time.perf_counter() - start,
        bytes=ck.total_bytes,
        on_disk=dir_bytes(store_dir),
        expected=expected,
    )

    exec(compile(CELL_2, "<cell 2>", "exec"), ns)
    emit("saving", id=ck.id + 1, started=time.time())
    ck = store.save(ns, nb, names)
    emit("saved", id=ck.id, seconds=0.0, bytes=ck.total_bytes, on_disk=0, expected={})
    return 0


# ---------------------------------------------------------------- parent
class DemoFailure(Exception):
    pass


class Worker:
    """The child process, with its event lines collected by a reader thread."""

    def __init__(self, store_dir: Path, size: str) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(store_dir),
            "--size",
            size,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(EVENT):
                self.events.put(json.loads(line[len(EVENT) :]))
            else:
                print(f"  worker: {line.rstrip()}", flush=True)

    def wait_for(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    raise DemoFailure(
                        f"the worker exited (code {self.proc.returncode}) before '{kind}'"
                    ) from None
                continue
            if event["event"] == kind:
                return event
        raise DemoFailure(f"no '{kind}' from the worker within {timeout:.0f} s")

    def drain(self) -> list[dict[str, Any]]:
        found = []
        with contextlib.suppress(queue.Empty):
            while True:
                found.append(self.events.get_nowait())
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)


def largest_tmp(tmp_dir: Path) -> int:
    biggest = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                biggest = max(biggest, entry.stat().st_size)
    return biggest


def kill_mid_write(child: Worker, store_dir: Path) -> tuple[float, int]:
    """SIGKILL the worker as soon as a temp file of #2 is being filled; returns (time, its size)."""
    tmp_dir = store_dir / "tmp"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        size = largest_tmp(tmp_dir)
        if size >= KILL_AT:
            os.kill(child.proc.pid, signal.SIGKILL)
            return time.time(), size
        if child.proc.poll() is not None:
            raise DemoFailure(
                f"the worker exited (code {child.proc.returncode}) before the kill: "
                "checkpoint #2 was not interrupted"
            )
        time.sleep(0.0005)
    raise DemoFailure("checkpoint #2 never started writing")


def leftovers(store_dir: Path, store: CheckpointStore) -> tuple[list[int], list[int]]:
    """Sizes of temp files, and of blobs that no manifest names."""
    referenced = set()
    for ck in store.list():
        referenced.update(ck.body["blobs"])
    tmp = (
        [e.stat().st_size for e in os.scandir(store_dir / "tmp")]
        if (store_dir / "tmp").exists()
        else []
    )
    orphans = []
    for folder, _, files in os.walk(store_dir / "blobs"):
        for f in files:
            if os.path.basename(folder) + f not in referenced:
                orphans.append(os.stat(os.path.join(folder, f)).st_size)
    return tmp, orphans


def story(work: Path, size: str) -> int:
    started = time.perf_counter()
    store_dir = work / "store"
    nb = NotebookRef.from_path(str(work / "analysis.ipynb"))
    print(f"nbcheckpoint demo ({size}): store {store_dir}", flush=True)

    child = Worker(store_dir, size)
    try:
        saved = child.wait_for("saved")
        print(
            f"saved #{saved['id']}: {len(saved['expected'])} variables, {mb(saved['bytes'])} "
            f"({mb(saved['on_disk'])} on disk) in {saved['seconds']:.2f} s, by worker pid {child.proc.pid}",
            flush=True,
        )
        killed_at, tmp_size = kill_mid_write(child, store_dir)
    finally:
        child.stop()
    events = child.drain()
    saving = next((e for e in events if e["event"] == "saving"), None)
    into = f"{killed_at - saving['started']:.2f} s " if saving else ""
    print(
        f"killed the writer (SIGKILL) {into}into #2, while a temp file of #2 held {mb(tmp_size)}",
        flush=True,
    )
    if any(e["event"] == "saved" for e in events):
        raise DemoFailure("the worker finished #2 before the kill landed: nothing was interrupted")

    store = CheckpointStore(str(store_dir))
    ids = [ck.id for ck in store.list(nb)]
    tmp, orphans = leftovers(store_dir, store)
    print(
        f"store after the kill: checkpoints {', '.join(f'#{i}' for i in ids) or 'none'}; "
        f"#2 has no manifest; the killed writer left {plural(len(tmp), 'temp file')} "
        f"({mb(sum(tmp))}) and {plural(len(orphans), 'blob')} no checkpoint uses "
        f"({mb(sum(orphans))})",
        flush=True,
    )
    if 2 in ids:
        raise DemoFailure("checkpoint #2 was published although its writer was killed")

    t = time.perf_counter()
    problems = store.verify()
    print(
        f"store verified in {time.perf_counter() - t:.2f} s: {plural(len(ids), 'checkpoint')}, "
        f"{plural(len(problems), 'problem')}",
        flush=True,
    )
    for p in problems:
        print(f"  problem: #{p.ident}: {p.what}")

    # A new kernel restores: fresh store object, fresh namespace.
    ns = vars(sys.modules["__main__"])
    t = time.perf_counter()
    restored = CheckpointStore(str(store_dir)).load(nb)
    took = time.perf_counter() - t
    ns.update({name: importlib.import_module(m) for name, m in restored.modules.items()})
    ns.update(restored.values)
    print(
        f"restored #{restored.checkpoint.id} in {took:.2f} s (signature and every blob hash "
        f"checked before unpickling); imports back: {', '.join(sorted(restored.modules))}",
        flush=True,
    )

    expected: dict[str, str] = saved["expected"]
    equal = 0
    for name, want in expected.items():
        try:
            got = fingerprint(ns[name]) if name in ns else "missing"
        except Exception as e:  # a restored function or class that does not work
            got = f"{type(e).__name__}: {e}"
        ok = got == want
        equal += ok
        print(f"  {name:<11} {got}  {'equal' if ok else 'DIFFERENT, expected ' + want}")
    print(f"{equal}/{len(expected)} variables equal the originals", flush=True)

    report = store.gc(grace=0)
    print(
        f"gc removed the killed writer's leftovers: {plural(report.removed_tmp, 'temp file')}, "
        f"{plural(report.removed_blobs, 'blob')} ({mb(report.freed_bytes)})",
        flush=True,
    )
    ok = (
        restored.checkpoint.id == 1
        and not problems
        and not restored.failed
        and equal == len(expected)
    )
    print(
        f"{'OK' if ok else 'FAILED'}: demo took {time.perf_counter() - started:.1f} s", flush=True
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tens of MB instead of hundreds")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder with the store")
    parser.add_argument("--worker", type=Path, metavar="STORE", help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or ("small" if args.small else "full")
    if args.worker:
        return worker(args.worker, size)

    install_main()
    work = Path(tempfile.mkdtemp(prefix="nbcheckpoint-demo-"))
    # Both processes sign with a throwaway key in the temp folder, never the user's key.
    os.environ.pop("NBCHECKPOINT_KEY", None)
    os.environ["NBCHECKPOINT_KEY_FILE"] = str(work / "signing.key")
    try:
        return story(work, size)
    except DemoFailure as e:
        print(f"FAILED: {e}", flush=True)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
