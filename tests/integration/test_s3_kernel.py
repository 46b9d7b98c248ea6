"""Real kernels checkpointing to S3 (moto on 127.0.0.1): another machine restores and resumes.

"Another machine" is a kernel with its own working folder and its own copy of the project
(the notebook at the same project-relative path, in a different temporary folder), its
own Jupyter data folder, and the signing key passed in ``NBCHECKPOINT_KEY``, as one would
on a second machine; the store and the server are the same.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbcheckpoint.store import Checkpoint, CheckpointStore, NotebookRef, SigningKey

from .conftest import skip_stale_replies
from .kernel import Kernel, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("CI") != "true"
        and (importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None),
        reason="needs nbcheckpoint[s3] and moto[server] (make test installs both; under CI they must be there)",
    ),
]

from s3_server import S3Server, shared_server  # noqa: E402

SETUP = """\
import os
import time


def tick():
    # Counts iterations outside the saved state: a resume cannot restore this file.
    with open(os.environ["NBCK_TICKS"], "ab") as fh:
        fh.write(b".")


total = 0
history = []
"""

LOOP = """\
%%checkpoint --every 0.3
for step in range(N):
    tick()
    total += step
    history.append(step * step)
    time.sleep(0.1)
"""


class Machine:
    """A project checkout, a working folder and a kernel environment of one "machine"."""

    def __init__(self, root: Path, checkout: str, env: dict[str, str]) -> None:
        self.project = root / checkout
        (self.project / "notebooks").mkdir(parents=True)
        (self.project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
        self.notebook = self.project / "notebooks" / "train.ipynb"
        self.notebook.write_text("{}")
        self.ticks = root / "ticks"
        self.env = {
            **env,
            "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
            "NBCHECKPOINT_KEY_FILE": str(root / "jupyter-data" / "unused.key"),
            "NBCK_TICKS": str(self.ticks),
        }

    def ticked(self) -> int:
        return self.ticks.stat().st_size if self.ticks.exists() else 0


def _activate(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)  # for this process's own look at the store
    return server


@pytest.fixture
def kernels() -> Iterator[Callable[[Machine], Kernel]]:
    started: list[Kernel] = []

    def start(machine: Machine) -> Kernel:
        kernel = Kernel(str(machine.notebook), str(machine.project), machine.env)
        started.append(kernel)
        kernel.start(load_ext=False)
        skip_stale_replies(kernel)
        kernel.run("%load_ext nbcheckpoint").check()
        return kernel

    try:
        yield start
    finally:
        for kernel in started:
            kernel.shutdown()


def _progress(checkpoints: list[Checkpoint]) -> int:
    """The loop step of the newest checkpoint taken while the loop ran (0 if none)."""
    running = [c for c in checkpoints if c.status == "running"]
    counters = (running[-1].body.get("position") or {}).get("counters") if running else None
    return int(counters[0]) if counters else 0


def _probe(url: str, key_hex: str, notebook: Path) -> Callable[[], list[Checkpoint]]:
    key = SigningKey(bytes.fromhex(key_hex), "test")
    ref = NotebookRef.from_path(str(notebook))
    return lambda: CheckpointStore(url, key=key).list(ref)


def test_save_restore_and_resume_on_another_machine(
    tmp_path: Path, kernels: Callable[[Machine], Kernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = _activate(shared_server(), monkeypatch)
    url = s3.new_store_url()
    key_hex = secrets.token_hex(32)
    env = {**s3.env(), "NBCHECKPOINT_STORE": url, "NBCHECKPOINT_KEY": key_hex}
    a = Machine(tmp_path / "machine-a", "work/demo", env)
    b = Machine(tmp_path / "machine-b", "elsewhere/demo-clone", env)
    assert NotebookRef.from_path(str(a.notebook)).key == NotebookRef.from_path(str(b.notebook)).key
    listed = _probe(url, key_hex, a.notebook)

    first = kernels(a)
    first.run("weights = list(range(1000))\nnote = 'saved on a'").check()
    first.run("%checkpoint save weights note").check()
    first.run(f"N = 40\n{SETUP}").check()
    running = first.submit(LOOP)
    wait_for(lambda: _progress(listed()) >= 8, 60, "a checkpoint of the loop at step 8 or later")
    first.kill()
    with pytest.raises((RuntimeError, TimeoutError)):
        first.collect(running, timeout=5)
    before = listed()
    assert before[0].body["variables"].keys() >= {"weights", "note"}
    assert before[-1].status == "running"

    # The command line sees the same checkpoints from here, through the same environment.
    cli = subprocess.run(
        [sys.executable, "-m", "nbcheckpoint", "list", "--store", url],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert before[-1].notebook in cli.stdout and f"#{before[-1].id}" in cli.stdout

    second = kernels(b)
    restored = second.run("%checkpoint restore 1").check()
    assert "weights" in restored.text
    assert second.value("(len(weights), note)") == (1000, "saved on a")

    second.run(f"N = 40\n{SETUP}").check()
    resumed = second.run(LOOP, timeout=120).check()
    assert "resum" in resumed.text.lower(), resumed.text
    assert second.value("total") == sum(range(40))
    assert second.value("history") == [i * i for i in range(40)]
    resumed_from = _progress(before)
    assert b.ticked() <= 40 - resumed_from + 1, f"B ran {b.ticked()} of 40 iterations"
    final = listed()[-1]
    assert final.status == "complete" and final.id > before[-1].id
    assert final.body["kernel"]["pid"] != before[-1].body["kernel"]["pid"]


def test_the_store_going_away_mid_cell_warns_once_and_checkpoints_resume(
    tmp_path: Path, kernels: Callable[[Machine], Kernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server of its own, stopped and started again on the same port; moto keeps its
    # objects in this process, so the store comes back with its earlier checkpoints.
    server = _activate(S3Server().start(), monkeypatch)
    try:
        url = server.new_store_url()
        key_hex = secrets.token_hex(32)
        env = {**server.env(), "NBCHECKPOINT_STORE": url, "NBCHECKPOINT_KEY": key_hex}
        machine = Machine(tmp_path, "demo", env)
        listed = _probe(url, key_hex, machine.notebook)
        kernel = kernels(machine)
        kernel.run(f"N = 300\n{SETUP}").check()
        msg = kernel.submit(LOOP)
        wait_for(lambda: len(listed()) >= 1, 60, "a first checkpoint")
        server.stop()
        # The outage lasts until a save has failed (after its retries), however long that
        # takes on a busy machine; then the cell carries on for 20 more iterations.
        kernel.watch(msg, lambda r: "could not save a checkpoint" in r.stderr, 120, "the warning")
        outage_seen = machine.ticked()
        wait_for(lambda: machine.ticked() >= outage_seen + 20, 60, "the cell to carry on")
        server.start()
        back_at = machine.ticked()
        reply = kernel.collect(msg, timeout=120).check()
        assert reply.stderr.count("could not save a checkpoint") == 1, reply
        assert "did not answer" in reply.stderr, reply.stderr
        assert reply.stdout.count("the store works again; checkpoints resumed.") == 1, reply.stdout
        assert kernel.value("total") == sum(range(300))
        after = listed()
        assert after[-1].status == "complete"
        # Checkpoints were taken again after the outage, not only the final one.
        positions = [c.manifest.position for c in after if c.status == "running" and c.manifest]
        assert any(p and p.counters and p.counters[0] >= back_at for p in positions), positions
        assert CheckpointStore(url, key=SigningKey(bytes.fromhex(key_hex), "t")).verify() == []
    finally:
        server.stop()
