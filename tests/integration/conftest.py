"""Fixtures for real-kernel tests: a notebook folder, an isolated signing key, kernels that always shut down."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbcheckpoint.store import Checkpoint, CheckpointStore, NotebookRef

from .kernel import Kernel, wait_for


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test signing key, shared by the test process and every kernel it starts."""
    path = tmp_path / "key" / "signing.key"
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(path))
    monkeypatch.delenv("NBCHECKPOINT_KEY", raising=False)
    monkeypatch.delenv("NBCHECKPOINT_STORE", raising=False)
    return path


@pytest.fixture
def kernel_env(key_file: Path) -> dict[str, str]:
    """What kernels get on top of the test process's environment."""
    return {"NBCHECKPOINT_KEY_FILE": str(key_file)}


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    """An (empty) notebook file in its own folder; its store is ``.nbcheckpoint/`` beside it."""
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "train.ipynb"
    path.write_text("{}")
    return path


def skip_stale_replies(kernel: Kernel, timeout: float = 30) -> None:
    """Read the shell channel up to the reply of a fresh request.

    On a busy machine ``wait_for_ready`` may send a second kernel_info request, whose
    reply then sits in the shell queue; ``Kernel.collect`` takes the next shell message
    as its reply, so every later reply would be one request behind.
    """
    msg_id = kernel.kc.execute("", silent=True, store_history=False)
    deadline = time.monotonic() + timeout
    while True:
        reply = kernel.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return


@pytest.fixture
def start_kernel(notebook: Path, kernel_env: dict[str, str]) -> Iterator[Callable[..., Kernel]]:
    """Start kernels for the notebook (``start_kernel(load_ext=False)``); all are shut down after the test."""
    started: list[Kernel] = []

    def start(load_ext: bool = True, env: dict[str, str] | None = None) -> Kernel:
        kernel = Kernel(str(notebook), str(notebook.parent), {**kernel_env, **(env or {})})
        started.append(kernel)
        kernel.start(load_ext=False)
        skip_stale_replies(kernel)
        if load_ext:
            kernel.run("%load_ext nbcheckpoint").check()
        return kernel

    try:
        yield start
    finally:
        for kernel in started:
            kernel.shutdown()


class StoreProbe:
    """The test process's view of a notebook's checkpoints, read straight from the store."""

    def __init__(self, url: str, notebook: Path) -> None:
        self.url = url
        self.ref = NotebookRef.from_path(str(notebook))

    def list(self) -> list[Checkpoint]:
        # A fresh store each time: no cached manifests or statuses from an earlier look.
        return CheckpointStore(self.url).list(self.ref)

    def wait_for_count(self, n: int, timeout: float = 30) -> list[Checkpoint]:
        wait_for(lambda: len(self.list()) >= n, timeout, f"{n} checkpoints in {self.url}")
        return self.list()


@pytest.fixture
def store_probe(notebook: Path, key_file: Path) -> StoreProbe:
    """The notebook's default store (``.nbcheckpoint/`` beside it), read from the test process."""
    return StoreProbe(os.path.join(notebook.parent, ".nbcheckpoint"), notebook)
