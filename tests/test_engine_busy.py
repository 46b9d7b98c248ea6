"""A checkpoint due while the writer still writes the previous one is delayed, not dropped.

The timer makes it due again BUSY_RETRY seconds later (instead of a whole --every), so it is
taken at the first safe point after the writer is done, and the status line says how often
checkpoints were really taken when that is much less often than asked.
"""

from __future__ import annotations

import ast
import time
from types import SimpleNamespace
from typing import Any

from nbcheckpoint.capture.engine import BUSY_RETRY, CellInfo, CellRun, Options
from nbcheckpoint.capture.rewrite import instrument
from nbcheckpoint.store import CheckpointStore, NotebookRef


class FakeWriter:
    mode = "inline"

    def __init__(self) -> None:
        self.is_busy = True
        self.jobs: list[Any] = []

    def busy(self) -> bool:
        return self.is_busy

    def submit(self, job: Any) -> None:
        self.jobs.append(job)

    def poll(self) -> list[Any]:
        return []

    def drain(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        return None


class Quiet:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def status(self, text: str) -> None:
        self.lines.append(text)

    info = warn = status


def _run(tmp_path: Any, every: float) -> tuple[CellRun, FakeWriter]:
    plan = instrument(ast.parse("x = 1")).plan
    run = CellRun(
        {"x": 1},
        CheckpointStore(str(tmp_path / "store")),
        NotebookRef.from_path(str(tmp_path / "nb.ipynb")),
        plan,
        CellInfo("0" * 64, 1, "x = 1"),
        Options(every=every),
        Quiet(),
    )
    writer = FakeWriter()
    run.writer = writer
    return run, writer


def test_a_due_checkpoint_the_busy_writer_refused_is_due_again_shortly(tmp_path):
    run, writer = _run(tmp_path, every=30.0)
    before = time.monotonic()
    run.safepoint(None)
    after = time.monotonic()
    assert writer.jobs == [] and run.skipped_busy == 1
    # The timer waits until _last + every: BUSY_RETRY after the safe point, not 30 s.
    due = run._last + run.options.every
    assert before + BUSY_RETRY <= due <= after + BUSY_RETRY
    writer.is_busy = False
    before = time.monotonic()
    run.safepoint(None)
    assert len(writer.jobs) == 1
    assert run._last + run.options.every >= before + 30.0


def test_an_interval_shorter_than_the_retry_stays_as_asked(tmp_path):
    run, _ = _run(tmp_path, every=0.05)
    run.safepoint(None)
    after = time.monotonic()
    assert run._last + 0.05 <= after + 0.05  # due again after at most --every


def test_the_status_line_says_the_interval_really_kept(tmp_path):
    run, _ = _run(tmp_path, every=1.0)
    run.skipped_busy = 4
    taken = [SimpleNamespace(created=t, manifest=None, id=i) for i, t in enumerate([0, 3.5, 7.0])]
    run.taken = taken  # type: ignore[assignment]
    ck = SimpleNamespace(created=7.0, manifest=None, id=3, total_bytes=10)
    line = run.status_line(ck)  # type: ignore[arg-type]
    assert "one every 3.5 s: each waited for the previous one to be written (--every 1 s)" in line
    run.taken = taken[:1]  # type: ignore[assignment]
    assert "one every" not in run.status_line(ck)  # type: ignore[arg-type]


def test_the_status_line_gives_a_short_interval_in_milliseconds(tmp_path):
    run, _ = _run(tmp_path, every=0.01)
    run.skipped_busy = 2
    run.taken = [
        SimpleNamespace(created=t, manifest=None, id=i) for i, t in enumerate([0, 0.03, 0.06])
    ]  # type: ignore[assignment]
    ck = SimpleNamespace(created=0.06, manifest=None, id=2, total_bytes=10)
    assert "one every 30 ms: each waited" in run.status_line(ck)  # type: ignore[arg-type]


def test_the_status_line_gives_the_recent_interval_not_one_stretched_by_the_first_write(
    tmp_path,
):
    run, _ = _run(tmp_path, every=1.0)
    run.skipped_busy = 30
    times = [0, 40, 42, 44, 46, 48, 50]  # the first, whole write took 40 s
    run.taken = [SimpleNamespace(created=t, manifest=None, id=i) for i, t in enumerate(times)]  # type: ignore[assignment]
    ck = SimpleNamespace(created=50, manifest=None, id=6, total_bytes=10)
    assert "one every 2.0 s: each waited" in run.status_line(ck)  # type: ignore[arg-type]
