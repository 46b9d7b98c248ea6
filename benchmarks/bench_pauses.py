"""Pauses at scale (issue #14 item 4): snapshots inside a running loop over a 10 GiB state.

One in-process IPython shell holds the state of ``bench_snapshot.py`` at ``--scale 8``
(16 x 512 MiB NumPy arrays, half random and half compressible, a 1.6 GB DataFrame and
800,000 small dicts: about 10 GiB). Each round measures, the three taking turns going
first:

* **bare fork**: ``os.fork()`` of this process, the child exiting at once; the parent's
  blocked time is the floor any fork snapshot pays (page tables copied);
* **fork mode, ``--every 1``**: a ``%%checkpoint --mode fork --every 1`` loop runs for
  ``--seconds`` while it changes 1 MiB of one array and 1% of the dicts every 50 ms. The
  timer decides when snapshots are due, as for a user. The first snapshot's child writes
  the whole state and takes far longer than a second: the snapshots due meanwhile must be
  taken as soon as it finishes (measured: the wait between one snapshot landing and the
  next being taken) and the status line must give the effective interval;
* **inline mode**: a ``%%checkpoint --mode inline`` loop takes a first snapshot and then
  five with nothing changed, each asked for once the previous one has landed; the pause
  per GiB of unchanged state is the target. The second snapshot hashes every buffer (the
  write tracker starts watching the chunks the first one saved); from the third on, a
  snapshot hashes only chunks written since the one before (none here). The table gives
  the second apart and judges the target on the third and later.

A pause is the main thread's time inside ``CellRun.safepoint`` for a call that started a
snapshot (calls that found the writer still busy, and so only asked again shortly, are
counted apart). Figures are medians over ``--rounds`` (5) rounds of each round's median,
with ranges and the load average after every round.

Usage::

    python benchmarks/bench_pauses.py               # 10 GiB, about 15 minutes, needs ~24 GB RAM
    python benchmarks/bench_pauses.py --scale 0.5   # quick

It is a benchmark, not a test: it exits 0 whether or not the targets are met and
prints MISSED for each one that is not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
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

from bench_capture import (
    Row,
    finish,
    isolated_env,
    load_average,
    machine_header,
    median_range,
    megabytes,
    print_table,
    seconds,
    work_parent,
)
from bench_snapshot import GiB, MiB, build_state, make_shell, raw_write, state_bytes

TARGET_FORK_PAUSE = 0.050
TARGET_INLINE_PER_GIB = 0.100
EVERY = 1.0
TARGET_LATE = 0.5  # "taken as soon as it finishes": a busy retry (0.1 s) and a loop step
UNCHANGED = 5


class Meter:
    """Times ``CellRun.safepoint`` calls, telling those that started a snapshot from busy retries.

    Also keeps the last status line each run composed (what the user sees under the cell).
    """

    def __init__(self) -> None:
        from nbcheckpoint.capture.engine import CellRun

        self.cls = CellRun
        self.original = (CellRun.safepoint, CellRun.status_line)
        self.taken: list[float] = []
        self.retries: list[float] = []
        self.status = ""

    def __enter__(self) -> Meter:
        meter = self
        safepoint, status_line = self.original

        def timed(run: Any, sp: int | None, *pairs: int | None) -> None:
            busy = run.skipped_busy
            start = time.perf_counter()
            try:
                safepoint(run, sp, *pairs)
            finally:
                took = time.perf_counter() - start
                (meter.retries if run.skipped_busy != busy else meter.taken).append(took)

        def status(run: Any, ck: Any) -> str:
            meter.status = status_line(run, ck)
            return meter.status

        self.cls.safepoint = timed  # type: ignore[method-assign]
        self.cls.status_line = status  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.safepoint, self.cls.status_line = self.original  # type: ignore[method-assign]


def run_cell(shell: Any, code: str) -> float:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        start = time.perf_counter()
        result = shell.run_cell(code, store_history=True)
        took = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(
            f"cell failed: {result.error_before_exec or result.error_in_exec}\n{out.getvalue()[-2000:]}"
        )
    return took


def checkpoints(root: Path, store: Path) -> list[Any]:
    """The snapshots the loop took, oldest first.

    The cell's final checkpoint has no position in the loop and is left out; when nothing
    changed after the last snapshot, that snapshot is marked complete instead, and stays.
    """
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    nb = NotebookRef.from_path(str(root / "train.ipynb"))
    cks = CheckpointStore(str(store)).list(nb)
    return sorted((ck for ck in cks if ck.body.get("position")), key=lambda ck: ck.id)


def bare_forks(count: int = 5) -> list[float]:
    """The parent's blocked time in ``os.fork()`` with the whole state mapped."""
    pauses = []
    for _ in range(count):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        pauses.append(time.perf_counter() - start)
        os.waitpid(pid, 0)
    return pauses


def make_toucher(ns: dict[str, Any], names: list[str]) -> Any:
    """Changes 1 MiB of one array (in turn) and 1% of the small dicts: a training step's writes."""
    import numpy as np

    arrays = [n for n in names if n.startswith("a")]
    rng = np.random.default_rng(2)
    counter = [0]

    def touch() -> None:
        k = counter[0] = counter[0] + 1
        arr = ns[arrays[k % len(arrays)]]
        m = min(arr.size, MiB // arr.itemsize)
        start = (k * 7919 * 4096) % (arr.size - m + 1)
        arr[start : start + m] = rng.standard_normal(m)
        for rec in ns["objs"][k % 100 :: 100]:
            rec["score"] += 1.0

    return touch


def fork_loop(shell: Any, root: Path, names: list[str], length: float, tag: str) -> dict[str, Any]:
    """A ``--mode fork --every 1`` loop of ``length`` seconds; its pauses, catch-up waits and status."""
    store = root / f"store-fork-{tag}"
    magics = shell.magics_manager.registry["Checkpoint"]
    cell = (
        f"%%checkpoint {' '.join(names)} --every {EVERY:g} --mode fork --store {store}\n"
        f"_bench_end = _bench_clock() + {length}\n"
        "while _bench_clock() < _bench_end:\n"
        "    _bench_touch()\n"
        "    _bench_sleep(0.05)\n"
    )
    with Meter() as meter:
        wall = run_cell(shell, cell)
    magics.open_store()  # waits for the cell's final checkpoint, if a child still writes it
    cks = checkpoints(root, store)
    # How late each snapshot came: due --every after the previous one was taken, or as
    # soon as the previous one landed if its writing took longer than that.
    waits = []
    for before, after in itertools.pairwise(cks):
        landed = before.created + float(before.body["stats"].get("duration", 0.0))
        waits.append(max(0.0, after.created - max(landed, before.created + EVERY)))
    durations = [float(ck.body["stats"].get("duration", 0.0)) for ck in cks]
    shutil.rmtree(store, ignore_errors=True)
    return {
        "wall": wall,
        "pauses": meter.taken,
        "retries": meter.retries,
        "count": len(cks),
        "late": waits,
        "durations": durations,
        "status": meter.status,
    }


def inline_loop(shell: Any, root: Path, names: list[str], tag: str) -> list[float]:
    """A first inline snapshot, then ``UNCHANGED`` with nothing changed; the pauses."""
    store = root / f"store-inline-{tag}"
    magics = shell.magics_manager.registry["Checkpoint"]
    ns = shell.user_ns

    def due() -> None:
        run = magics.current
        deadline = time.monotonic() + 900
        while run is not None and run.writer.busy() and time.monotonic() < deadline:
            time.sleep(0.005)
        ns["_nbc_due_"] = True

    ns["_bench_due"] = due
    steps = 1 + UNCHANGED
    cell = (
        f"%%checkpoint {' '.join(names)} --every 3600 --mode inline --store {store}\n"
        f"for step in range({steps + 1}):\n"
        f"    if step < {steps}:\n"
        "        _bench_due()\n"
    )
    with Meter() as meter:
        run_cell(shell, cell)
    magics.open_store()
    shutil.rmtree(store, ignore_errors=True)
    return meter.taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=8.0, help="8 = about 10 GiB")
    parser.add_argument(
        "--seconds",
        type=float,
        default=90.0,
        help="length of the fork loop (long enough for the first child's write and more)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--dir", type=Path, default=None, help="folder for stores (not tmpfs)")
    args = parser.parse_args(argv)
    parent = work_parent(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="nbcheckpoint-bench-pauses-", dir=parent))
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

    for line in machine_header("nbcheckpoint pauses at scale (issue #14 item 4)", args.scale, root):
        say(line)
    shell = make_shell(root)
    # A 10 GB state is over the store's default cap (10 GB): retention would keep only the
    # newest checkpoint, and the loop's snapshots could not be counted afterwards.
    shell.run_line_magic("config", "Checkpoint.max_size = '0'")
    ns = shell.user_ns
    t0 = time.perf_counter()
    names = build_state(ns, args.scale)
    ns["_bench_touch"] = make_toucher(ns, names)
    ns["_bench_clock"] = time.monotonic
    ns["_bench_sleep"] = time.sleep
    buffers = state_bytes(ns, names)
    gib = buffers / GiB
    say(
        f"state built in {time.perf_counter() - t0:.0f} s: {megabytes(buffers)} of buffers "
        f"({gib:.2f} GiB) and {len(ns['objs']):,} small dicts"
    )
    took, raw_bytes = raw_write(root, ns, names)
    say(
        f"raw write + fsync of the same {megabytes(raw_bytes)} (one run, the disk's pace): "
        f"{took:.1f} s, {raw_bytes / took / 1e6:,.0f} MB/s; load average {load_average()}"
    )
    rounds = max(1, args.rounds)
    parts = ("bare", "fork", "inline")
    bare: list[float] = []
    fork_first: list[float] = []
    fork_later: list[float] = []
    fork_max: list[float] = []
    fork_all: list[float] = []
    waits: list[float] = []
    counts: list[tuple[int, int, float]] = []
    statuses: list[str] = []
    inline_first: list[float] = []
    inline_second: list[float] = []
    inline_per_gib: list[float] = []
    for round_ in range(rounds):
        for part in parts if round_ % 2 == 0 else parts[::-1]:
            tag = str(round_)
            if part == "bare":
                pauses = bare_forks()
                bare.append(statistics.median(pauses))
                say(f"  round {round_ + 1}, bare fork: ms {[round(p * 1e3, 1) for p in pauses]}")
            elif part == "fork":
                res = fork_loop(shell, root, names, args.seconds, tag)
                pauses = res["pauses"]
                if pauses:
                    fork_first.append(pauses[0])
                    fork_all.extend(pauses[1:])
                    fork_max.append(max(pauses[1:] or pauses))
                if len(pauses) > 1:
                    fork_later.append(statistics.median(pauses[1:]))
                waits.extend(res["late"])
                counts.append((res["count"], int(res["wall"] / EVERY), res["wall"]))
                statuses.append(res["status"])
                say(
                    f"  round {round_ + 1}, fork --every {EVERY:g}: {res['count']} snapshots in "
                    f"{res['wall']:.1f} s; pauses ms {[round(p * 1e3, 1) for p in pauses]}; "
                    f"{len(res['retries'])} busy retries (median "
                    f"{seconds(statistics.median(res['retries'])) if res['retries'] else '-'}); "
                    f"written in s {[round(d, 2) for d in res['durations']]}; late by s "
                    f"{[round(w, 2) for w in res['late']]}"
                )
                say(f"    status line: {res['status']}")
            else:
                pauses = inline_loop(shell, root, names, tag)
                inline_first.append(pauses[0])
                if len(pauses) > 1:
                    inline_second.append(pauses[1] / gib)
                watched = pauses[2:]
                if watched:
                    inline_per_gib.append(statistics.median(watched) / gib)
                say(
                    f"  round {round_ + 1}, inline: pauses ms {[round(p * 1e3, 1) for p in pauses]} "
                    "(first, then nothing changed)"
                )
        say(f"  round {round_ + 1}: load average {load_average()}")

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def span(values: list[float]) -> str:
        return median_range(values, seconds) if values else "none"

    bare_s = med(bare)
    taken = sum(c for c, _, _ in counts)
    due = sum(d for _, d, _ in counts)
    rows = [
        Row(
            "fork: pause per snapshot after the first",
            med(fork_later),
            bare_s,
            "abs",
            TARGET_FORK_PAUSE,
            note=f"median of {len(fork_later)} rounds' medians {span(fork_later)}; "
            f"all {len(fork_all)} pauses {span(fork_all)}; baseline = a bare "
            f"os.fork() of the same process {span(bare)}",
        ),
        Row(
            "fork: pause, max after the first",
            max(fork_max) if fork_max else None,
            bare_s,
            "abs",
            TARGET_FORK_PAUSE,
            note=f"each round's max {span(fork_max)}",
        ),
        Row(
            "fork: first pause (the whole state new)",
            med(fork_first),
            bare_s,
            "ratio",
            note=f"{span(fork_first)}",
        ),
        Row(
            "fork: snapshot late, median",
            med(waits),
            None,
            "abs",
            TARGET_LATE,
            note=f"late = taken after max(previous + --every, previous landed); {len(waits)} "
            f"snapshots {span(waits)}, max "
            f"{seconds(max(waits) if waits else None)}. {taken} snapshots "
            f"taken over {sum(w for _, _, w in counts):.0f} s of loops where {due} were due at "
            f"--every {EVERY:g} (each waits while the previous one is written)",
        ),
        Row(
            "inline: pause, nothing changed, per GiB",
            med(inline_per_gib),
            None,
            "abs",
            TARGET_INLINE_PER_GIB,
            note=f"{gib:.2f} GiB of buffers; each round's median over the "
            f"{UNCHANGED - 1} snapshots after the second, per GiB {span(inline_per_gib)}; "
            f"first inline pause {span(inline_first)}",
        ),
        Row(
            "inline: second pause (every buffer hashed), per GiB",
            med(inline_second),
            None,
            "abs",
            note=f"nothing changed, but the write tracker only starts watching here "
            f"{span(inline_second)}",
        ),
    ]
    say("")
    missed = print_table(rows, say)
    say("")
    say("status lines at the end of the fork loops (what the user read under the cell):")
    for line in statuses:
        say(f"  {line}")
    says_interval = sum("one every" in s for s in statuses)
    say(f"  {says_interval} of {len(statuses)} give the effective interval")
    finish(missed, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
