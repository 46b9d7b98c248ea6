"""The final checkpoint of a large ``%%checkpoint`` cell is written after the cell returns.

A forked, detached child writes it (issue #14, item 2). In real kernels: the cell returns
before the checkpoint is in the store and says so; whatever the kernel saves or restores
next waits for it (ids stay in order); a kernel SIGKILLed or restarted right after the
cell does not stop it, and a restore in the new kernel waits for it and brings back the
cell's final state, never the older one.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

from .conftest import StoreProbe
from .kernel import Kernel, wait_for

StartKernel = Callable[..., Kernel]

# A million small dicts: about four million memory blocks, over the after-cell threshold,
# and about a second and a half to pickle on the main thread.
BIG_CELL = """\
%%checkpoint --every 3600
rows = []
for i in range(1_000_000):
    rows.append({"i": i, "s": str(i)})
marker = "final"
"""
CHECK = "(len(rows), rows[-1], marker)"
FINAL = (1_000_000, {"i": 999_999, "s": "999999"}, "final")
WRITER = re.compile(r"final checkpoint is being written after the cell \(process (\d+);")


def _writer_pid(text: str) -> int:
    found = WRITER.search(text)
    assert found, f"the cell did not say its final checkpoint is written after it:\n{text}"
    return int(found.group(1))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")


def test_final_checkpoint_lands_after_the_cell_and_later_saves_come_after_it(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k = start_kernel()
    k.run("marker = 'before'\n%checkpoint save").check()
    reply = k.run(BIG_CELL).check()
    pid = _writer_pid(reply.text)
    # The cell returned before its checkpoint was in the store. A save right away waits
    # for it (the writer is held still meanwhile): its id comes after it.
    os.kill(pid, signal.SIGSTOP)
    try:
        assert len(store_probe.list()) == 1
        msg = k.submit("tail = 1\n%checkpoint save")
        time.sleep(1.0)
        assert len(store_probe.list()) == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    saved = k.collect(msg, timeout=120).check()
    assert "waiting for the final checkpoint of the last %%checkpoint cell" in saved.text
    listed = store_probe.list()
    final = [ck for ck in listed if ck.status == "complete"]
    assert len(final) == 1 and final[0].id == 2, [(c.id, c.status) for c in listed]
    assert listed[-1].id == 3 and "tail" in listed[-1].variables
    # The final checkpoint holds the cell's end state.
    k2 = start_kernel()
    k2.run("%checkpoint restore 2").check()
    assert k2.value(CHECK) == FINAL


def test_sigkill_right_after_the_cell_keeps_its_final_checkpoint(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k = start_kernel()
    k.run("marker = 'before'\n%checkpoint save").check()
    pid = _writer_pid(k.run(BIG_CELL).check().text)
    # The writer is held still (a slow disk), and the kernel is killed (the out-of-memory
    # killer) a moment after the cell returned.
    os.kill(pid, signal.SIGSTOP)
    try:
        k.kill()
        k2 = start_kernel()
        msg = k2.submit("%checkpoint restore")
        time.sleep(1.0)
        # Restoring now would bring back #1 ('before'): the restore waits instead.
        assert _running(pid)
        assert len(store_probe.list()) == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    restored = k2.collect(msg, timeout=120).check()
    assert "still being written (process" in restored.text and str(pid) in restored.text
    assert k2.value(CHECK) == FINAL
    listed = store_probe.list()
    assert [ck.id for ck in listed] == [1, 2] and listed[1].status == "complete"


def test_restart_right_after_the_cell_does_not_stop_its_writer(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    # Jupyter's restart kills the kernel's whole process group; the writer left it.
    k = start_kernel()
    pid = _writer_pid(k.run(BIG_CELL).check().text)
    group = k.own_group()
    assert group is not None
    assert os.getpgid(pid) != group
    os.killpg(group, signal.SIGKILL)
    wait_for(lambda: not _running(pid), 120, "the detached writer to finish")
    listed = store_probe.list()
    assert [ck.status for ck in listed] == ["complete"]
    assert listed[0].variables.keys() >= {"rows", "marker"}


def test_a_resumed_cell_waits_for_the_final_checkpoint_of_its_last_run(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    # Re-running the cell right away: the resume plan reads the newest checkpoint, which
    # must be this run's final one ("complete": the cell starts over, nothing to resume).
    k = start_kernel()
    k.run(BIG_CELL).check()
    again = k.run(BIG_CELL).check()
    assert "resum" not in again.stdout.lower()
    wait_for(lambda: len(store_probe.list()) == 2, 120, "two final checkpoints")
    assert [ck.status for ck in store_probe.list()] == ["complete", "complete"]


def test_what_the_final_checkpoint_left_out_is_said_before_the_next_cell(
    start_kernel: StartKernel, store_probe: StoreProbe, tmp_path: object
) -> None:
    k = start_kernel()
    cell = BIG_CELL + "gen = (x for x in range(3))\n"
    k.run(cell).check()
    wait_for(lambda: len(store_probe.list()) == 1, 120, "the final checkpoint")
    # The watcher thread reaps the child a moment after the checkpoint is published.
    deadline = time.monotonic() + 30
    said = ""
    while "gen" not in said and time.monotonic() < deadline:
        said += k.run("pass").check().text
        time.sleep(0.1)
    assert "the final checkpoint #1 of cell" in said and "skipped gen" in said, said
    assert "generator" in said
