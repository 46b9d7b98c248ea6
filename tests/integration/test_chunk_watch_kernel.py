"""Inline snapshots of a loop read only the chunks written since the last one (issue #14,
item 4), and never save a stale chunk: in a real kernel, a loop edits one element of a
64 MiB array between snapshots; every checkpoint holds the array exactly as it was at its
safe point, and a new kernel restores the last one after the first is killed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from nbcheckpoint.store import CheckpointStore

from .conftest import StoreProbe
from .kernel import Kernel

StartKernel = Callable[..., Kernel]

SETUP = "import numpy as np\nbig = np.random.default_rng(3).random(8 << 20)  # 64 MiB"
LOOP = """\
%%checkpoint --every 0.01 --mode inline
import time
for step in range(40):
    if step % 3 == 0:
        big[(step % 16) * (1 << 19) + 7] = step  # one element, in chunk step % 16
    done = step
    time.sleep(0.03)
"""


def _expected(done: int) -> np.ndarray:
    a = np.random.default_rng(3).random(8 << 20)
    for step in range(0, done + 1, 3):
        a[(step % 16) * (1 << 19) + 7] = step
    return a


def test_every_inline_snapshot_of_a_watched_loop_holds_the_array_as_it_was(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k = start_kernel()
    k.run(SETUP).check()
    k.run(LOOP).check()
    listed = store_probe.list()
    running = [ck for ck in listed if ck.status == "running"]
    assert len(running) >= 4, [(c.id, c.status) for c in listed]
    store = CheckpointStore(store_probe.url)
    for ck in listed:
        values = store.load(store_probe.ref, ck.id).values
        assert np.array_equal(values["big"], _expected(values["done"])), (ck.id, values["done"])
    k.kill()
    k2 = start_kernel()
    k2.run("%checkpoint restore").check()
    assert k2.value("done") == 39
    digest = "__import__('hashlib').sha256(big.tobytes()).hexdigest()"
    assert k2.value(digest) == hashlib.sha256(_expected(39).tobytes()).hexdigest()
