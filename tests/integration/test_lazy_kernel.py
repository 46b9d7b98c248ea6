"""Lazy restore in real kernels: mapped arrays, gc and rm under them, damage, fork snapshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nbcheckpoint.store import CheckpointStore
from nbcheckpoint.store.backends.local import LocalBackend
from nbcheckpoint.store.pager import unavailable
from nbcheckpoint.store.store import CHUNK_SIZE, CODEC_RAW, HEADER_LEN

from .conftest import StoreProbe
from .kernel import Kernel, wait_for

WHY = unavailable(LocalBackend(os.getcwd()))
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        WHY is not None and os.environ.get("CI") != "true",
        reason=f"lazy restore is not available here: {WHY}",
    ),
]

StartKernel = Callable[..., Kernel]

MAKE = """\
import numpy as np
noise = np.random.default_rng(7).random(8 << 20)        # 64 MiB: 16 raw chunks
ramp = np.arange(5 << 20, dtype=np.int64)               # 40 MiB: compressed chunks
label = "run 7"
"""
PER_CHUNK = CHUNK_SIZE // 8


def expected() -> dict[str, np.ndarray]:
    return {
        "noise": np.random.default_rng(7).random(8 << 20),
        "ramp": np.arange(5 << 20, dtype=np.int64),
    }


def rss_mb(kernel: Kernel) -> float:
    with open(f"/proc/{kernel.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def saved_then_killed(start_kernel: StartKernel) -> Kernel:
    """Save the arrays in one kernel and kill it: a new kernel, nothing restored yet."""
    first = start_kernel()
    first.run(MAKE).check()
    first.run("%checkpoint save").check()
    first.kill()
    return start_kernel()


def saved_then_restored(start_kernel: StartKernel) -> tuple[Kernel, str]:
    """Save the arrays in one kernel, kill it, restore in a new one: (kernel, what it said)."""
    kernel = saved_then_killed(start_kernel)
    return kernel, kernel.run("%checkpoint restore").check().stdout


def blob_files(store: Path) -> list[Path]:
    return sorted((store / "blobs").glob("*/*"), key=lambda p: p.stat().st_size)


def test_restore_maps_arrays_and_an_edit_saves_one_chunk(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    kernel = saved_then_killed(start_kernel)
    assert (
        "maps arrays over 1 MB when they add up to 64 MB"
        in kernel.run("%checkpoint config").check().stdout
    )
    # The extension found the earlier kernel's checkpoint and started the pager already.
    pagers = "__import__('nbcheckpoint.store.pager', fromlist=['_']).Pager._pagers.values()"
    assert kernel.value(f"[p.alive() for p in {pagers}]") == [True]
    before = rss_mb(kernel)
    said = kernel.run("%checkpoint restore").check().stdout
    assert "109 MB of arrays are mapped, not read" in said, said
    # Nothing of the 109 MB was read: the kernel grew by far less.
    assert rss_mb(kernel) - before < 20
    want = expected()
    assert kernel.value("float(noise[123456])") == float(want["noise"][123456])
    assert kernel.value("int(ramp.sum())") == int(want["ramp"].sum())
    kernel.run(f"noise[5 * {PER_CHUNK} + 1] = -1.0").check()
    kernel.run("%checkpoint save").check()
    latest = store_probe.list()[-1]
    assert latest.manifest.stats.bytes_new == CHUNK_SIZE
    # The store's chunks are as they were written; the edit is in the new checkpoint only.
    store = CheckpointStore(store_probe.url)
    assert store.verify() == []
    back = store.load(store_probe.ref, latest.id).values["noise"]
    want["noise"][5 * PER_CHUNK + 1] = -1.0
    np.testing.assert_array_equal(back, want["noise"])
    first_ck = store.load(store_probe.ref, 1).values["noise"]
    assert first_ck[5 * PER_CHUNK + 1] != -1.0


def test_gc_and_rm_of_the_store_under_a_restored_kernel(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    kernel, said = saved_then_restored(start_kernel)
    assert "mapped, not read" in said
    store = CheckpointStore(store_probe.url)
    store.delete(store_probe.ref, 1)
    assert store.gc(grace=0).removed_blobs > 0
    shutil.rmtree(Path(store_probe.url) / "blobs")
    want = expected()
    assert kernel.value("float(noise.sum())") == float(want["noise"].sum())
    assert kernel.value("int(ramp[::1000].sum())") == int(want["ramp"][::1000].sum())
    # And the kernel saves its state again into the emptied store.
    kernel.run("%checkpoint save").check()
    back = CheckpointStore(store_probe.url).load(store_probe.ref)
    np.testing.assert_array_equal(back.values["noise"], want["noise"])


def test_a_chunk_damaged_after_the_restore_is_never_read(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    kernel, said = saved_then_restored(start_kernel)
    assert "mapped, not read" in said
    for path in blob_files(Path(store_probe.url)):
        if path.stat().st_size > (1 << 20):
            with open(path, "r+b") as f:
                f.seek(200 << 10)
                f.write(b"\x00junk\x00")
    msg_id = kernel.submit("print('sum', float(noise.sum()))")
    try:
        reply = kernel.collect(msg_id, timeout=60)
    except Exception:  # the kernel stopped (SIGBUS): no reply comes
        reply = None
    if reply is not None and reply.status == "ok":
        raise AssertionError(f"a damaged chunk was read: {reply.text}")
    if reply is not None:
        # The background check found it first: the variable was taken away.
        assert reply.error["ename"] == "DamagedData", reply.error
        assert "checkpoint #1" in reply.error["evalue"]
    else:
        wait_for(kernel.exited, 30, "the kernel to stop")
    assert "sum" not in (reply.stdout if reply else "")
    # The pager set the damaged chunk aside: the next kernel's restore fails at once and
    # says why, instead of mapping it again and stopping on the same read.
    tmp = Path(store_probe.url) / "tmp"
    wait_for(lambda: any(tmp.glob("damaged-*")), 30, "the damaged chunk to be set aside")
    again = start_kernel()
    reply = again.run("%checkpoint restore")
    told = f"{reply.stdout}{reply.stderr}{reply.error}"
    assert "was found damaged when read" in told, told
    assert again.value("'noise' in globals()") is False


def test_damage_found_in_the_background_takes_the_variable_away(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    kernel = saved_then_killed(start_kernel)
    raw = [
        p
        for p in blob_files(Path(store_probe.url))
        if p.stat().st_size > (1 << 20) and p.read_bytes()[HEADER_LEN - 1] == CODEC_RAW
    ]
    with open(raw[-1], "r+b") as f:
        f.seek(HEADER_LEN + 4096)
        f.write(b"\x01\x02\x03\x04")
    assert "mapped, not read" in kernel.run("%checkpoint restore").check().stdout
    told: list[str] = []

    def reported() -> bool:
        told.append(kernel.run("pass").check().stderr)
        return "damaged on disk" in told[-1]

    wait_for(reported, 60, "the report of the damaged chunk")
    text = told[-1]
    assert "checkpoint #1" in text and "noise now raise an error when used" in text
    reply = kernel.run("noise.sum()")
    assert reply.error["ename"] == "DamagedData"
    assert "restored from checkpoint #1" in reply.error["evalue"]
    assert kernel.value("int(ramp[-1])") == (5 << 20) - 1  # the undamaged one is intact
    assert kernel.value("label") == "run 7"


FORK_CELL = """\
%%checkpoint --mode fork --every 0.05
import time
for i in range(40):
    noise[i] = float(i + ramp[i])
    time.sleep(0.05)
"""


def test_fork_snapshots_of_a_lazily_restored_state(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    kernel, said = saved_then_restored(start_kernel)
    assert "mapped, not read" in said
    before = rss_mb(kernel)
    kernel.run(FORK_CELL).check()
    wait_for(lambda: store_probe.list()[-1].status == "complete", 60, "the final checkpoint")
    taken = store_probe.list()[1:]
    assert len(taken) >= 2
    # Each writes the one chunk the loop edits (and the small pickles), never the 109 MB.
    assert all(ck.manifest.stats.bytes_new <= CHUNK_SIZE + (1 << 20) for ck in taken)
    want = expected()
    want["noise"][:40] = 2 * np.arange(40.0)
    back = CheckpointStore(store_probe.url).load(store_probe.ref, taken[-1].id).values
    np.testing.assert_array_equal(back["noise"], want["noise"])
    np.testing.assert_array_equal(back["ramp"], want["ramp"])
    # The snapshot children read what they needed for themselves: the kernel still holds
    # about one chunk of the arrays.
    assert rss_mb(kernel) - before < 40
