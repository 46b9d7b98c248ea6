"""A checkpoint writer process for crash and concurrency tests.

``writer.py zygote STORE NOTEBOOK SIZE``: imports everything once, then forks a new writer
for each ``spawn`` line on stdin and prints ``pid N``. Each writer saves states in a loop
and prints ``ack ID TAG SEQ`` after ``save`` returns. Killed writers are reaped at once
(SIGCHLD ignored), so their pids read as dead to the store's temp-file cleanup.

``writer.py count STORE NOTEBOOK SIZE N TAG``: waits for a ``go`` line, saves N states,
printing ``ack ID TAG SEQ`` for each, and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
from states import make_state

from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.store import UNLIMITED


def _say(line: str) -> None:
    # One os.write per line: atomic on a pipe, and no stdio buffer is duplicated by fork.
    os.write(1, (line + "\n").encode())


def _save_loop(store_url: str, notebook: str, size: int, tag: int, count: int | None) -> None:
    store = CheckpointStore(store_url)
    nb = NotebookRef.from_path(notebook)
    rng = np.random.default_rng([tag, time.time_ns() % (1 << 32)])
    const = np.random.default_rng(12345).standard_normal(size)  # the same in every writer
    seq = 0
    while count is None or seq < count:
        # Every acknowledged checkpoint must stay: no default retention here.
        ck = store.save(make_state(tag, seq, rng, const, size), nb, keep=UNLIMITED)
        _say(f"ack {ck.id} {tag} {seq}")
        seq += 1


def zygote(store_url: str, notebook: str, size: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _say("ready")
    for line in sys.stdin:
        if line.strip() != "spawn":
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _save_loop(store_url, notebook, size, os.getpid(), None)
            finally:
                os._exit(1)
        _say(f"pid {pid}")


def main() -> None:
    mode, store_url, notebook, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "zygote":
        zygote(store_url, notebook, size)
    elif mode == "count":
        count, tag = int(sys.argv[5]), int(sys.argv[6])
        _say("ready")
        if sys.stdin.readline().strip() == "go":
            _save_loop(store_url, notebook, size, tag, count)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
