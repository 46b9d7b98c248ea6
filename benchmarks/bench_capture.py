"""Time what ``%%checkpoint`` and auto mode add to the cells they watch (issue #3), with dill and Kishu beside them.

Two parts, each measured as ratios inside one run:

1. Safe points with nothing due: a tight pure-Python loop (10**7 iterations at
   ``--scale 1``) and a NumPy-heavy loop, each run plain and as
   ``%%checkpoint --every 3600`` in ONE in-process IPython shell, alternating, medians.
2. Auto mode in a REAL kernel (jupyter_client) holding a Kishu-like state (4 x 128 MB
   arrays, a 96 MB DataFrame): the execute round trip of small, read-only and in-place
   cells with ``%checkpoint auto off`` vs ``auto on --min-duration 0``, alternating,
   medians; then the kernel is SIGKILLed and ``%checkpoint restore`` in a fresh kernel
   is timed against ``dill.load_module`` of a ``dill.dump_module`` file of the same state.
   With ``--kishu-python`` (an interpreter where ``kishu`` imports), Kishu is timed on
   the same cells in its own kernel.

Usage::

    python benchmarks/bench_capture.py                   # full size, a few minutes
    python benchmarks/bench_capture.py --scale 0.05      # quick
    python benchmarks/bench_capture.py --kishu-python /tmp/kishu-venv/bin/python
    python benchmarks/bench_capture.py --profile         # cProfile of each auto save

It is a benchmark, not a test: it exits 0 whether or not the targets are met and
prints MISSED for each one that is not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1_000_000
MiB = 1 << 20
HEADER = f"{'operation':<44}{'ours':>11}{'baseline':>11}{'ratio':>10}   {'target':<12}{'met?':>5}"


# ------------------------------------------------------------------ the report
@dataclass
class Row:
    """One line of the table.

    ``kind``: "ratio" (ours / baseline <= target), "added" (ours - baseline <= target),
    "abs" (ours <= target), "share" (baseline / ours >= target: a throughput fraction).
    ``unit``: "s" or "B" for the ours and baseline columns.
    """

    operation: str
    ours: float | None
    baseline: float | None
    kind: str = "ratio"
    target: float | None = None
    unit: str = "s"
    note: str = ""

    @property
    def value(self) -> float | None:
        if self.ours is None:
            return None
        if self.kind == "abs":
            return self.ours
        if self.baseline is None:
            return None
        if self.kind == "added":
            return self.ours - self.baseline
        if self.kind == "share":
            return self.baseline / self.ours if self.ours else None
        return self.ours / self.baseline if self.baseline else None

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.value >= self.target if self.kind == "share" else self.value <= self.target

    def cells(self) -> list[str]:
        value = self.value
        if value is None:
            shown = "-"
        elif self.kind in ("added", "abs"):
            shown = ("+" if self.kind == "added" and value >= 0 else "") + f"{value * 1e3:.1f}ms"
        elif self.kind == "share":
            shown = f"{value:.0%}"
        else:
            shown = f"{value:.3f}x"
        if self.target is None:
            target = "-"
        elif self.kind == "added":
            target = f"<= +{self.target * 1e3:g} ms"
        elif self.kind == "abs":
            target = f"<= {self.target * 1e3:g} ms"
        elif self.kind == "share":
            target = f">= {self.target:.0%}"
        else:
            target = f"<= {self.target:g}x"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        fmt = seconds if self.unit == "s" else megabytes
        return [self.operation, fmt(self.ours), fmt(self.baseline), shown, target, met]


def megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.0f}MB"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.1f}ms" if value < 1 else f"{value:.2f}s"


def print_table(rows: list[Row], say: Callable[[str], None]) -> list[str]:
    """Print the table; returns one line per missed target."""
    say(HEADER)
    missed = []
    for row in rows:
        op, ours, base, value, target, met = row.cells()
        say(f"{op:<44}{ours:>11}{base:>11}{value:>10}   {target:<12}{met:>5}")
        if row.note:
            say(f"    {row.note}")
        if row.met is False:
            missed.append(f"{row.operation}: {value} (target {target})")
    return missed


def finish(missed: list[str], say: Callable[[str], None]) -> None:
    say("")
    if missed:
        say(f"MISSED {len(missed)} target(s):")
        for line in missed:
            say(f"  MISSED: {line}")
    else:
        say("All targets met.")
    say(f"load average at end: {load_average()}")


# ----------------------------------------------------------- the machine
def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def fs_type(path: Path) -> str:
    """The filesystem type holding ``path``, from /proc/mounts (``?`` elsewhere)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    return kind


def work_parent(requested: Path | None) -> Path:
    """Where stores go: the asked folder, else the temp folder unless it is in memory, else here."""
    if requested is not None:
        return requested.resolve()
    tmp = Path(tempfile.gettempdir()).resolve()
    return Path.cwd().resolve() if fs_type(tmp) in {"tmpfs", "ramfs"} else tmp


def source_version() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "nbcheckpoint"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes in nbcheckpoint/" if dirty else "")


def machine_header(name: str, scale: float, root: Path) -> list[str]:
    import numpy as np

    blas = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return [
        f"{name}: scale {scale}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}",
        f"load average at start: {load_average()} (a shared machine: other tests may be running)",
        f"nbcheckpoint at {source_version()}",
        f"work folder: {root} ({fs_type(root)})"
        + (f"; OpenBLAS env {blas}" if blas else "; OpenBLAS env: not set"),
    ]


def compile_package() -> str:
    """Compile nbcheckpoint's bytecode, as ``pip install`` of the wheel does; say so.

    A checkout installed with ``pip install -e .`` has none, and with
    PYTHONDONTWRITEBYTECODE set (as on these machines) every kernel would compile the
    extension from source at ``%load_ext``, while dill and the libraries it is compared
    with come compiled from site-packages: a cost no installed user pays.
    """
    import compileall

    import nbcheckpoint

    folder = Path(nbcheckpoint.__file__).parent
    ok = compileall.compile_dir(str(folder), quiet=1)
    return f"nbcheckpoint's bytecode compiled in {folder} ({'ok' if ok else 'with errors'})"


def isolated_env(root: Path) -> dict[str, str]:
    """Environment for kernels and shells: a throwaway signing key and IPython profile."""
    env = {
        "NBCHECKPOINT_KEY_FILE": str(root / "key" / "signing.key"),
        "IPYTHONDIR": str(root / "ipython"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    return env


# -------------------------------------------------------------- a real kernel
@dataclass
class Reply:
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    seconds: float = 0.0

    def check(self, what: str = "cell") -> Reply:
        if self.status != "ok":
            err = self.error or {}
            raise RuntimeError(
                f"{what} failed: {err.get('ename')}: {err.get('evalue')}\n"
                + "\n".join(err.get("traceback", []))[-3000:]
                + f"\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
            )
        return self


class KernelSession:
    """An ipykernel process started with a given interpreter; runs code and times round trips."""

    def __init__(self, python: str, cwd: Path, env: dict[str, str]) -> None:
        self.python = python
        self.cwd = cwd
        drop = {"NBCHECKPOINT_STORE", "NBCHECKPOINT_KEY", "JPY_SESSION_NAME"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(env)
        self.km: Any = None
        self.kc: Any = None

    def start(self) -> KernelSession:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        # A kernel spec of our own: the "python3" spec would run the client's interpreter.
        specs = self.cwd / ".bench-kernels"
        spec = specs / "bench"
        spec.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "bench", "language": "python"})
        )
        self.km = KernelManager(
            kernel_name="bench", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)])
        )
        self.km.start_kernel(env=self.env, cwd=str(self.cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        return self

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)

    def run(self, code: str, timeout: float = 1800, silent: bool = False) -> Reply:
        """Execute ``code``; ``seconds`` is the round trip from request to execute_reply."""
        reply = Reply()
        start = time.perf_counter()
        # silent: no history, and IPython fires no pre/post_run_cell events for it.
        msg_id = self.kc.execute(code, store_history=not silent, silent=silent)
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=1.0)
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError("the kernel died") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply to {code[:60]!r} in {timeout} s") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                break
        reply.seconds = time.perf_counter() - start
        reply.status = msg["content"]["status"]
        if reply.status != "ok":
            reply.error = msg["content"]
        # Drain this request's output, until the kernel says it is idle.
        while True:
            try:
                out = self.kc.get_iopub_msg(timeout=30)
            except queue.Empty:
                break
            if out.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = out["msg_type"], out["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    reply.stdout += content["text"]
                else:
                    reply.stderr += content["text"]
            elif kind == "error":
                reply.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                break
        return reply

    def value(self, expr: str) -> Any:
        out = self.run(f"import json as _j; print(_j.dumps({expr}))").check(expr)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def kill(self) -> None:
        """SIGKILL, as the out-of-memory killer would."""
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km is not None:
            process = getattr(self.km.provisioner, "process", None)
            if process is not None and process.poll() is not None:
                # Dead and reaped: jupyter_client would still signal its process group id,
                # which another process may hold by now. Forget the process instead.
                self.km.provisioner.process = None
            with contextlib.suppress(Exception):
                self.km.shutdown_kernel(now=True)
        self.km = self.kc = None


@contextlib.contextmanager
def kernel(python: str, cwd: Path, env: dict[str, str]) -> Iterator[KernelSession]:
    session = KernelSession(python, cwd, env)
    try:
        yield session.start()
    finally:
        session.shutdown()


# ------------------------------------------------- part 1: safe-point overhead
PURE_LOOP = """\
_bench_t0 = _bench_time.perf_counter()
_bench_c0 = _bench_time.thread_time()
total = 0
for i in range({n}):
    total += i
_bench_cpu = _bench_time.thread_time() - _bench_c0
_bench_loop = _bench_time.perf_counter() - _bench_t0
"""

WHILE_LOOP = """\
_bench_t0 = _bench_time.perf_counter()
_bench_c0 = _bench_time.thread_time()
total = 0
i = 0
while i < {n}:
    total += i
    i += 1
_bench_cpu = _bench_time.thread_time() - _bench_c0
_bench_loop = _bench_time.perf_counter() - _bench_t0
"""

NUMPY_LOOP = """\
_bench_t0 = _bench_time.perf_counter()
_bench_c0 = _bench_time.thread_time()
for step in range({n}):
    y = np.sqrt(x * 1.0001 + 0.5)
    x += 1e-9
_bench_cpu = _bench_time.thread_time() - _bench_c0
_bench_loop = _bench_time.perf_counter() - _bench_t0
"""


# What the instrumented loop adds, piece by piece, run with exec at module level as a cell runs.
PLAIN_LOOP = "total = 0\nfor i in range(N):\n    total += i\n"
LOOP_VARIANTS = {
    "plain": PLAIN_LOOP,
    "+ due-flag check": "total = 0\nfor i in range(N):\n    if _nbc_due_:\n        sp(1)\n    total += i\n",
    "+ the loop's own iterator and probe": (
        "total = 0\n_it, _p = loop(range(N))\nfor i in _it:\n    total += i\n"
    ),
}


def instrumented_loop() -> dict[str, Any]:
    """What instrument() makes of the plain loop (the rewrite itself, so it stays current).

    With markers (the default in a kernel's main thread) the loop's safepoint is a marker
    line, a NOP that ast.unparse cannot show: the variants are AST modules, not source.
    """
    import ast

    from nbcheckpoint.capture.rewrite import instrument

    return {
        "flag test + iterator (markers off)": instrument(ast.parse(PLAIN_LOOP)).module,
        "marker line + iterator (what a kernel runs)": instrument(
            ast.parse(PLAIN_LOOP), markers=True
        ).module,
    }


def loop_breakdown(scale: float, rounds: int, say: Callable[[str], None]) -> None:
    """Where the pure-loop overhead comes from: each inserted piece alone, medians, one process."""
    from nbcheckpoint.capture.iterate import loop
    from nbcheckpoint.capture.rewrite import DUE_FLAG, LOOP_FUNC, SP_FUNC

    n = max(10_000, int(3_000_000 * scale))
    variants: dict[str, Any] = dict(LOOP_VARIANTS)
    variants.update(instrumented_loop())
    codes = {k: compile(v, "<cell>", "exec") for k, v in variants.items()}
    found: dict[str, list[float]] = {k: [] for k in codes}
    for _ in range(rounds):
        for label, code in codes.items():
            scope = {
                "N": n,
                "_nbc_due_": False,
                "sp": print,
                "loop": loop,
                DUE_FLAG: False,
                SP_FUNC: print,
                LOOP_FUNC: loop,
            }
            start = time.thread_time()
            exec(code, scope)
            found[label].append(time.thread_time() - start)
    base = statistics.median(found["plain"])
    say(
        "  where the pure-loop overhead comes from (module-level exec, main-thread CPU time, "
        + ", ".join(f"{k} {statistics.median(v) / base:.2f}x" for k, v in found.items())
        + ")"
    )


def in_process_shell(root: Path) -> Any:
    """An in-process IPython shell with the extension loaded, its store in ``root``."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbcheckpoint")
    shell.run_line_magic("config", f"Checkpoint.store = {str(root / 'store-shell')!r}")
    shell.run_line_magic("config", f"Checkpoint.notebook = {str(root / 'loops.ipynb')!r}")
    return shell


def run_ok(shell: Any, code: str) -> float:
    """Run a cell in the in-process shell; returns its wall time; raises when it failed."""
    out = io.StringIO()  # the status line would print to this terminal
    with contextlib.redirect_stdout(out):
        start = time.perf_counter()
        result = shell.run_cell(code, store_history=True)
        took = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(f"cell failed: {result.error_before_exec or result.error_in_exec}")
    return took


def spread(values: list[float]) -> str:
    """``[min-max]`` of a list of ratios or times, for the lines beside the medians."""
    return f"[{min(values):.3f}-{max(values):.3f}]"


def median_ms(values: list[float], digits: int = 0) -> str:
    """``median X ms, range A-B ms`` of timings in seconds.

    >>> median_ms([0.0101, 0.0123, 0.0112], 1)
    'median 11.2 ms, range 10.1-12.3 ms'
    """
    ms = [v * 1e3 for v in values]
    return (
        f"median {statistics.median(ms):.{digits}f} ms, "
        f"range {min(ms):.{digits}f}-{max(ms):.{digits}f} ms"
    )


def median_range(values: list[float], fmt: Callable[[float], str] | None = None) -> str:
    """``median (min-max)`` of timings (``seconds`` by default) or of ratios with ``fmt``.

    >>> median_range([2.1, 2.41, 2.23])
    '2.23s (2.10s-2.41s)'
    """
    show = fmt or seconds
    return f"{show(statistics.median(values))} ({show(min(values))}-{show(max(values))})"


def ratio_range(ours: list[float], baseline: list[float]) -> str:
    """The range of per-round ratios ``ours[i] / baseline[i]``, to 3 significant digits.

    >>> ratio_range([0.013, 0.011], [5.79, 4.22])
    '0.00225-0.00261x'
    """
    ratios = [o / b for o, b in zip(ours, baseline) if b]
    # Significant digits, not decimals: a pause against a full dump is a ratio of 0.002.
    return f"{min(ratios):.3g}-{max(ratios):.3g}x" if ratios else "-"


def safepoint_overhead(
    root: Path, scale: float, rounds: int, say: Callable[[str], None]
) -> list[Row]:
    """Loops run plain and as ``%%checkpoint --every 3600`` cells, alternating, in one shell.

    Each round runs both forms back to back (their order alternates), so the ratio of one
    round compares runs under the same load; the table shows the median loop times and the
    note the range of those per-round ratios.
    """
    shell = in_process_shell(root)
    run_ok(shell, "import time as _bench_time\nimport numpy as np\nx = np.ones(1_000_000)")
    n_pure = max(10_000, int(10_000_000 * scale))
    n_numpy = max(10, int(400 * scale))
    rows = []
    for label, template, n, target in (
        (f"pure-Python for loop, {n_pure:,} iterations", PURE_LOOP, n_pure, 1.10),
        (f"pure-Python while loop, {n_pure:,} iterations", WHILE_LOOP, n_pure, 1.10),
        (f"numpy loop, {n_numpy} x 3 ops on 8 MB", NUMPY_LOOP, n_numpy, 1.02),
    ):
        plain = template.format(n=n)
        marked = "%%checkpoint --every 3600\n" + plain
        loop: dict[str, list[float]] = {"plain": [], "checkpoint": []}
        cpu: dict[str, list[float]] = {"plain": [], "checkpoint": []}
        cell: dict[str, list[float]] = {"plain": [], "checkpoint": []}
        run_ok(shell, plain)  # warm up caches and the allocator
        run_ok(shell, marked)
        for r in range(rounds):
            order = ("plain", "checkpoint") if r % 2 == 0 else ("checkpoint", "plain")
            for which in order:
                cell[which].append(run_ok(shell, plain if which == "plain" else marked))
                loop[which].append(shell.user_ns["_bench_loop"])
                cpu[which].append(shell.user_ns["_bench_cpu"])
        ratios = [c / p for c, p in zip(loop["checkpoint"], loop["plain"])]
        cpu_ratios = [c / p for c, p in zip(cpu["checkpoint"], cpu["plain"])]
        say(
            f"  {label}: loop wall s plain {[round(t, 3) for t in loop['plain']]}, "
            f"checkpoint {[round(t, 3) for t in loop['checkpoint']]}; "
            f"ratio per round {spread(ratios)}; load average now {load_average()}"
        )
        say(
            f"  {label}: loop CPU s (main thread) plain {[round(t, 3) for t in cpu['plain']]}, "
            f"checkpoint {[round(t, 3) for t in cpu['checkpoint']]}; "
            f"ratio per round {spread(cpu_ratios)}"
        )
        name = label.split(",")[0]
        # CPU time of the main thread (time.thread_time) is what the safe points cost the
        # loop; wall time on a shared machine also counts the other processes' turns.
        rows.append(
            Row(
                f"{name}: loop CPU time",
                statistics.median(cpu["checkpoint"]),
                statistics.median(cpu["plain"]),
                "ratio",
                target,
                note=f"per-round ratio {spread(cpu_ratios)}, {rounds} alternating rounds; "
                f"plain {spread(cpu['plain'])} s, checkpoint {spread(cpu['checkpoint'])} s",
            )
        )
        rows.append(
            Row(
                f"{name}: loop wall time",
                statistics.median(loop["checkpoint"]),
                statistics.median(loop["plain"]),
                "ratio",
                None,
                note=f"per-round ratio {spread(ratios)}; "
                f"plain {spread(loop['plain'])} s, checkpoint {spread(loop['checkpoint'])} s",
            )
        )
        rows.append(
            Row(
                "  whole cell (+ instrument, final ckpt)",
                statistics.median(cell["checkpoint"]),
                statistics.median(cell["plain"]),
                "ratio",
                None,
            )
        )
    shell.run_line_magic("unload_ext", "nbcheckpoint")
    return rows


def safepoints_per_python(
    pythons: list[str], args: argparse.Namespace, say: Callable[[str], None]
) -> list[Row]:
    """Part 1 under each interpreter (its own venv with nbcheckpoint installed), side by side.

    Each runs this script with ``--skip-kernel`` (its output is shown as it comes) and hands
    its rows back as JSON; the rows come back here prefixed with its Python version.
    """
    rows: list[Row] = []
    script = str(Path(__file__).resolve())
    for python in pythons:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [python, script, "--skip-kernel", "--scale", str(args.scale)]
            cmd += ["--rounds", str(args.rounds), "--rows-json", out.name]
            if args.dir is not None:
                cmd += ["--dir", str(args.dir)]
            say(f"== {python} (load average {load_average()})")
            done = subprocess.run(cmd, text=True, capture_output=True, timeout=3600)
            for line in done.stdout.splitlines():
                say("   " + line)
            if done.returncode != 0:
                say(f"   FAILED ({done.returncode}): {done.stderr[-2000:]}")
                continue
            found = json.loads(Path(out.name).read_text() or "{}")
        version = found.get("python", "?")
        for row in found.get("rows", []):
            if row["operation"].startswith(" "):
                continue  # whole-cell lines: each child's own output has them
            row["operation"] = f"Python {version}: {row['operation']}"
            rows.append(Row(**row))
    return rows


# ------------------------------------------------------------ part 2: auto mode
def state_code(scale: float) -> str:
    """A Kishu-like notebook state: a 1 GiB array, 3 x 128 MB arrays, a 96 MB DataFrame and
    200 small variables."""
    n = max(4096, int(16 * MiB * scale))  # float64: 128 MiB at scale 1
    n_big = max(4096, int(128 * MiB * scale))  # float64: 1 GiB at scale 1
    rows = max(1000, int(1_000_000 * scale))  # 12 float64 columns: 96 MB at scale 1
    return f"""\
import numpy as np
import pandas as pd
rng = np.random.default_rng(0)
a0 = rng.standard_normal({n_big})
a1 = rng.standard_normal({n})
a2 = rng.standard_normal({n})
a3 = rng.standard_normal({n})
df = pd.DataFrame(rng.standard_normal(({rows}, 12)), columns=[f"c{{j}}" for j in range(12)])
notes = {{f"k{{i}}": (i, str(i)) for i in range(1000)}}
counter = 0
for _bench_i in range(200):
    globals()[f"v{{_bench_i}}"] = [_bench_i, str(_bench_i)] if _bench_i % 2 else {{"n": _bench_i}}
del _bench_i
"""


CELLS = {
    "small": "counter += 1\ns = [counter, counter * 2]",
    "read": "m = float(a0.mean())",
    "edit": "a0[12345] += 1.0",
}
TARGETS = {"small": 0.002, "read": 0.020, "edit": 0.150}


def labels(scale: float) -> dict[str, str]:
    """Row names, with the size of the large array at this scale (1 GiB at scale 1)."""
    size = max(4096, int(128 * MiB * scale)) * 8
    shown = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / MiB:,.0f} MiB"
    return {
        "small": "small cell, 200 variables, auto on vs off",
        "read": f"read-only cell over a {shown} array",
        "edit": f"in-place edit of 1 element, {shown} array",
    }


KISHU_REFERENCE = {"small": "~25 ms", "read": "~700 ms", "edit": "3-5 s"}
# Auto mode writes on a thread: this waits for it, and for a save that waited for the
# writer (the kernel's idle callback would send it), a no-op when auto is off or idle.
WAIT = "get_ipython().magics_manager.registry['Checkpoint'].autosaver.settle()"
CHECK = "[float(a0[:1000].sum()), float(a0[12345]), float(a1[:1000].sum()), float(df.iloc[:100].to_numpy().sum()), counter]"

PROFILE_HOOK = """\
import cProfile as _bench_cp, pstats as _bench_ps, io as _bench_io
_bench_m = get_ipython().magics_manager.registry["Checkpoint"]
_bench_orig = type(_bench_m)._auto_save
_bench_profiles = []
def _bench_profiled(result, _m=_bench_m):
    _p = _bench_cp.Profile()
    _p.runcall(_bench_orig, _m, result)
    _s = _bench_io.StringIO()
    _bench_ps.Stats(_p, stream=_s).sort_stats("cumulative").print_stats(14)
    _bench_profiles.append(_s.getvalue())
_bench_m._auto_save = _bench_profiled
"""


def added_ms(times: dict[str, list[float]]) -> str:
    """Median with auto on minus median with auto off, in ms."""
    return f"{(statistics.median(times['on']) - statistics.median(times['off'])) * 1e3:+.1f} ms"


def span_ms(values: list[float]) -> str:
    return f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f} ms"


def count_checkpoints(store: Path, nb: Path, status: str) -> int:
    """How many checkpoints of ``status`` the kernel left (a sanity check that saves happened)."""
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    found = CheckpointStore(str(store)).list(NotebookRef.from_path(str(nb)))
    return sum(1 for ck in found if ck.status == status)


def auto_mode(
    root: Path,
    scale: float,
    rounds: int,
    restore_runs: int,
    profile: bool,
    say: Callable[[str], None],
) -> tuple[list[Row], dict[str, float]]:
    folder = root / "auto"
    folder.mkdir()
    nb = folder / "analysis.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {**isolated_env(root), "JPY_SESSION_NAME": str(nb)}
    dill_file = folder / "session.dill"
    times: dict[str, dict[str, list[float]]] = {k: {"off": [], "on": []} for k in CELLS}
    written: dict[str, dict[str, list[float]]] = {k: {"off": [], "on": []} for k in CELLS}
    info: dict[str, float] = {}
    with kernel(sys.executable, folder, env) as k:
        k.run("%load_ext nbcheckpoint").check("load_ext")
        t = k.run(state_code(scale)).check("building the state").seconds
        say(f"  state built in the kernel in {t:.1f} s")
        if profile:
            k.run(PROFILE_HOOK).check("profile hook")
        # This cell's own auto save is the first one: the whole state.
        # (pickled and written after the reply: until written is what it costs)
        info["first_auto"] = k.run("%checkpoint auto on --min-duration 0").check().seconds
        info["first_auto"] += k.run(WAIT, silent=True).check("waiting for the writer").seconds
        for kind in CELLS:  # warm up each cell once with auto on
            k.run(CELLS[kind]).check(kind)
        for r in range(rounds):
            for kind, code in CELLS.items():
                order = ("off", "on") if r % 2 == 0 else ("on", "off")
                for state in order:
                    k.run(f"%checkpoint auto {state}").check()
                    # Each timed cell saves afresh. Silent: the waiting cell is no cell to
                    # auto mode, so it leaves no scan of its own for the timed cell's start.
                    k.run(WAIT, silent=True).check("waiting for the writer")
                    took = k.run(code).check(kind).seconds
                    waited = k.run(WAIT, silent=True).check("waiting for the writer").seconds
                    times[kind][state].append(took)
                    written[kind][state].append(took + waited)
        k.run("%checkpoint auto off").check()
        info["auto_checkpoints"] = count_checkpoints(folder / ".nbcheckpoint", nb, "auto")
        if profile:
            for text in k.value("_bench_profiles[-3:]"):
                say(text)
            k.run("del _bench_m, _bench_profiled, _bench_orig, _bench_profiles").check()
        expected = k.value(CHECK)
        info["save"] = k.run("%checkpoint save").check("save").seconds
        k.run("%unload_ext nbcheckpoint").check()
        dumped = k.run(
            f"import dill\n_bench_t = __import__('time').perf_counter()\n"
            f"dill.dump_module({str(dill_file)!r})\n"
            f"_bench_t = __import__('time').perf_counter() - _bench_t"
        ).check("dill.dump_module")
        info["dill_dump"] = k.value("_bench_t")
        info["dill_bytes"] = dill_file.stat().st_size
        del dumped
        k.kill()

    restore: dict[str, list[float]] = {"ours": [], "dill": []}
    for r in range(restore_runs):
        for tool in ("ours", "dill") if r % 2 == 0 else ("dill", "ours"):
            with kernel(sys.executable, folder, env) as k:
                k.run("import numpy, pandas, dill").check()  # imports are not what is timed
                if tool == "ours":
                    k.run("%load_ext nbcheckpoint").check()
                    reply = k.run("%checkpoint restore").check("restore")
                else:
                    reply = k.run(f"dill.load_module({str(dill_file)!r})").check("dill.load_module")
                restore[tool].append(reply.seconds)
                got = k.value(CHECK)
                if got != expected:
                    say(f"  WARNING: {tool} restored different values: {got} != {expected}")

    rows = []
    for kind in CELLS:
        rows.append(
            Row(
                labels(scale)[kind],
                statistics.median(times[kind]["on"]),
                statistics.median(times[kind]["off"]),
                "added",
                TARGETS[kind],
            )
        )
        rows.append(
            Row(
                "  until its checkpoint is written",
                statistics.median(written[kind]["on"]),
                statistics.median(written[kind]["off"]),
                "added",
            )
        )
        say(
            f"  {kind}: round trip ms off {[round(t * 1e3, 1) for t in times[kind]['off']]}, "
            f"on {[round(t * 1e3, 1) for t in times[kind]['on']]}; until written, on "
            f"{[round(t * 1e3, 1) for t in written[kind]['on']]}"
        )
        say(
            f"  {kind}: median added {added_ms(times[kind])}, range of on {span_ms(times[kind]['on'])}, "
            f"of off {span_ms(times[kind]['off'])}; load average now {load_average()}"
        )
    rows.append(
        Row(
            "restore after SIGKILL vs dill.load_module",
            statistics.median(restore["ours"]),
            statistics.median(restore["dill"]),
            "ratio",
            1.2,
        )
    )
    say(
        f"  restore s: ours {[round(t, 2) for t in restore['ours']]}, "
        f"dill {[round(t, 2) for t in restore['dill']]}"
    )
    return rows, info


# ------------------------------------------------------------------ Kishu
def kishu_available(python: str) -> str | None:
    """Kishu's version under ``python``, or None."""
    try:
        done = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('kishu'))"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def kishu_mode(
    root: Path, python: str, scale: float, rounds: int, say: Callable[[str], None]
) -> list[Row]:
    """The same cells with Kishu attached, in a kernel of ``python``; baseline: that kernel before."""
    folder = root / "kishu"
    folder.mkdir()
    nb = folder / "analysis.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    env = {
        **isolated_env(root),
        "TEST_NOTEBOOK_PATH": str(nb),  # Kishu's way to know its notebook without a server
        "ENV_KISHU_TEST_MODE": "1",
        "KISHU_PATH_ROOT": str(folder / "kishu-home"),
    }
    times: dict[str, dict[str, list[float]]] = {k: {"off": [], "on": []} for k in CELLS}
    with kernel(python, folder, env) as k:
        k.run(state_code(scale)).check("building the state")
        for kind, code in CELLS.items():
            k.run(code).check(kind)
        for _ in range(rounds):
            for kind, code in CELLS.items():
                times[kind]["off"].append(k.run(code).check(kind).seconds)
        k.run(f"from kishu import init_kishu\ninit_kishu({str(nb)!r})").check("init_kishu")
        first = k.run("pass").check().seconds
        say(f"  Kishu: first commit after init (the whole state) {first:.2f} s")
        for kind, code in CELLS.items():
            k.run(code).check(kind)
        for _ in range(rounds):
            for kind, code in CELLS.items():
                times[kind]["on"].append(k.run(code).check(kind).seconds)
        expected = k.value(CHECK)
        head = k.value("str(_kishu._kishu_graph.head())")
        k.kill()
    restore = None
    with kernel(python, folder, env) as k:
        k.run("import numpy, pandas").check()
        k.run(f"from kishu import init_kishu\ninit_kishu({str(nb)!r})").check("init_kishu")
        reply = k.run(f"_kishu.checkout({head!r})")
        if reply.status == "ok":
            restore = reply.seconds
            if k.value(CHECK) != expected:
                say("  WARNING: Kishu restored different values")
        else:
            say(f"  Kishu checkout after a kill failed: {(reply.error or {}).get('evalue')}")
    rows = [
        Row(
            f"Kishu: {labels(scale)[kind]}",
            statistics.median(t["on"]),
            statistics.median(t["off"]),
            "added",
        )
        for kind, t in times.items()
    ]
    rows.append(Row("Kishu: checkout after SIGKILL (s)", restore, None))
    return rows


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="size of loops and state (1.0 = full)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="alternating runs per measurement")
    parser.add_argument(
        "--restore-runs", type=int, default=5, help="fresh-kernel restores per tool"
    )
    parser.add_argument("--dir", type=Path, default=None, help="folder for stores (not tmpfs)")
    parser.add_argument(
        "--kishu-python",
        default=None,
        help="an interpreter where kishu is installed (default: this one, if it has kishu)",
    )
    parser.add_argument("--skip-kernel", action="store_true", help="only the in-process loops")
    parser.add_argument(
        "--pythons",
        default=None,
        help="comma-separated interpreters (venvs with nbcheckpoint): the safe-point part under each",
    )
    parser.add_argument("--rows-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="cProfile the last auto saves")
    args = parser.parse_args(argv)

    parent = work_parent(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="nbcheckpoint-bench-capture-", dir=parent))
    os.environ.update(isolated_env(root))  # before IPython is imported
    for name in ("NBCHECKPOINT_STORE", "NBCHECKPOINT_KEY"):
        os.environ.pop(name, None)
    try:
        return run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    def say(line: str = "") -> None:
        print(line, flush=True)

    for line in machine_header("nbcheckpoint capture benchmark (issue #3)", args.scale, root):
        say(line)
    rows: list[Row] = []
    if args.pythons:
        say("")
        say(f"safe points with nothing due, per Python, {args.rounds} alternating rounds each:")
        rows = safepoints_per_python(args.pythons.split(","), args, say)
        say("")
        finish(print_table(rows, say), say)
        return 0
    say("")
    say(
        f"1. safe points with nothing due: in-process IPython shell, {args.rounds} alternating runs"
    )
    rows += safepoint_overhead(root, args.scale, args.rounds, say)
    loop_breakdown(args.scale, args.rounds, say)
    if args.rows_json:
        Path(args.rows_json).write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "rows": [dataclasses.asdict(row) for row in rows],
                }
            )
        )
    info: dict[str, float] = {}
    if not args.skip_kernel:
        say("")
        say(
            f"2. auto mode in a real kernel: execute round trips, {args.rounds} alternating runs; "
            f"restore: {args.restore_runs} fresh kernels per tool"
        )
        auto_rows, info = auto_mode(
            root, args.scale, args.rounds, args.restore_runs, args.profile, say
        )
        rows += auto_rows
    kishu_python = args.kishu_python or sys.executable
    kishu_version = kishu_available(kishu_python)
    kishu_rows: list[Row] = []
    if args.skip_kernel:
        kishu_note = "Kishu: skipped (--skip-kernel)"
    elif kishu_version is None:
        kishu_note = f"Kishu: not installed for {kishu_python} (see --kishu-python)"
    else:
        kishu_note = f"Kishu {kishu_version} under {kishu_python}"
        say("")
        say(f"3. {kishu_note}: same cells, baseline = the same kernel before init_kishu")
        try:
            kishu_rows = kishu_mode(root, kishu_python, args.scale, args.rounds, say)
        except Exception as e:  # Kishu is optional: report, do not fail the benchmark
            say(f"  Kishu could not be measured: {type(e).__name__}: {str(e)[:500]}")

    say("")
    missed = print_table(rows + kishu_rows, say)
    say("")
    if info:
        from nbcheckpoint.store.store import DEFAULT_KEEP

        say(
            f"info: first auto save (whole state) {seconds(info['first_auto'])} until written; "
            f"%checkpoint save {seconds(info['save'])}; dill.dump_module {seconds(info['dill_dump'])} "
            f"({info['dill_bytes'] / MB:,.0f} MB file); {info['auto_checkpoints']:.0f} auto checkpoints "
            f"in the store (at least {min(args.rounds * len(CELLS) + 1, DEFAULT_KEEP)} expected: "
            f"one per timed cell, of which retention keeps the newest {DEFAULT_KEEP})"
        )
    say(kishu_note + (f"; reference on this machine: {KISHU_REFERENCE}" if not kishu_rows else ""))
    say("ours = median with nbcheckpoint, baseline = median without; 'added' = ours - baseline")
    finish(missed, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
