"""Which processes are saving a notebook's checkpoint right now, read from an untrusted store.

A restore of the latest checkpoint waits for them (a forked writer of a kernel that just
died). The leases folder is the store's, so anyone who can write the store can put
anything there: nothing in it may crash the reader, block it, or make it wait for a
process that is not a live writer of this machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbcheckpoint.store import CheckpointStore, NotebookRef

NB = NotebookRef.from_path("/tmp/savers.ipynb")


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A live process of this machine that is not the test process."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    s = CheckpointStore(str(tmp_path / "store"))
    s.save({"x": 1}, NB)
    return s


def _lease(store: CheckpointStore, pid: int, body: object, host: str | None = None) -> Path:
    folder = Path(store.url, "leases")
    folder.mkdir(exist_ok=True)
    path = folder / f"{host or socket.gethostname()}-{pid}-{uuid.uuid4().hex}.save"
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    return path


def test_a_live_writer_of_this_notebook_is_found(store, live_pid):
    _lease(store, live_pid, {"notebook": NB.key, "blobs": []})
    assert store.savers(NB, 600) == [live_pid]
    assert store.savers("another-key", 600) == []


def test_leases_that_name_no_live_writer_here_are_ignored(store, live_pid):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lease(store, dead.pid, {"notebook": NB.key, "blobs": []})
    _lease(store, live_pid, {"notebook": NB.key, "blobs": []}, host="elsewhere")
    _lease(store, os.getpid(), {"notebook": NB.key, "blobs": []})  # our own: settled apart
    _lease(store, live_pid, {"notebook": NB.key, "blobs": [], "published": True})
    old = _lease(store, live_pid, {"notebook": NB.key, "blobs": []})
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert store.savers(NB, 600) == []


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe junk",
        b"[" * 100_000,  # deeply nested
        b'"just a string"',
        b'{"notebook": ["not", "a", "key"]}',
        b"{" + b" " * (17 << 20) + b"}",  # larger than the cap: not read whole
    ],
    ids=["junk", "nested", "string", "wrong-type", "huge"],
)
def test_malformed_leases_are_no_writer_and_crash_nothing(store, live_pid, body):
    _lease(store, live_pid, body)
    assert store.savers(NB, 600) == []


def test_links_and_special_files_in_the_leases_folder_are_not_followed(store, live_pid, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"notebook": NB.key, "blobs": []}))
    folder = Path(store.url, "leases")
    folder.mkdir(exist_ok=True)
    host = socket.gethostname()
    os.symlink(outside, folder / f"{host}-{live_pid}-{uuid.uuid4().hex}.save")
    os.mkfifo(folder / f"{host}-{live_pid}-{uuid.uuid4().hex}.save")  # a read would block
    assert store.savers(NB, 600) == []
    assert outside.read_text()  # untouched


def test_a_linked_leases_folder_is_not_followed(store, live_pid, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    host = socket.gethostname()
    (elsewhere / f"{host}-{live_pid}-{uuid.uuid4().hex}.save").write_text(
        json.dumps({"notebook": NB.key, "blobs": []})
    )
    folder = Path(store.url, "leases")
    if folder.exists():
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()
    os.symlink(elsewhere, folder)
    assert store.savers(NB, 600) == []
