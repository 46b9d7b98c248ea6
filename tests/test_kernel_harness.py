"""The kernel harness (tests/integration/kernel.py) signals only processes it knows are its own.

jupyter_client signals a kernel's process group by number whenever its Popen is set, even
after the kernel died and was reaped, when the number may name another process. These tests
put a stand-in kernel (a real process leading its own session, with a forked child in its
group, as a kernel with a forked writer is) behind a real ``KernelManager`` and record every
signal the harness sends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from integration.kernel import Kernel
from jupyter_client import KernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

# Forks a child into its own process group (the kernel's), prints the child's pid, sleeps.
LEADER = (
    "import os, sys, time\n"
    "child = os.fork()\n"
    "if child == 0:\n"
    "    time.sleep(120)\n"
    "    os._exit(0)\n"
    "print(child, flush=True)\n"
    "time.sleep(120)\n"
)


def gone(pid: int) -> bool:
    """No such process, or a zombie (reparented to a PID 1 that may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def stand_in() -> Iterator[tuple[Kernel, subprocess.Popen[bytes], int]]:
    """A harness ``Kernel`` around a session-leading process and its forked child's pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    km = KernelManager()
    provisioner = LocalProvisioner(kernel_id="stand-in", kernel_spec=None, parent=km)
    provisioner.process = process
    provisioner.pgid = os.getpgid(process.pid)
    provisioner.pid = process.pid
    km.provisioner = provisioner
    kernel = Kernel("stand-in.ipynb", os.getcwd())
    kernel.km = km
    try:
        yield kernel, process, child
    finally:
        for pid in (child, process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.poll()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every os.kill / os.killpg from here on, recorded, then passed on."""
    calls: list[tuple[str, int, int]] = []
    kill, killpg = os.kill, os.killpg

    def record_kill(pid: int, signum: int) -> None:
        calls.append(("kill", pid, signum))
        kill(pid, signum)

    def record_killpg(pgid: int, signum: int) -> None:
        calls.append(("killpg", pgid, signum))
        killpg(pgid, signum)

    monkeypatch.setattr(os, "kill", record_kill)
    monkeypatch.setattr(os, "killpg", record_killpg)
    return calls


def test_a_live_kernels_group_is_killed_with_what_it_forked(stand_in: Any, sent: list) -> None:
    kernel, process, child = stand_in
    assert kernel.own_group() == process.pid and not kernel.exited()
    kernel.shutdown()
    assert sent == [("killpg", process.pid, signal.SIGKILL)]
    assert process.returncode is not None  # reaped
    wait_until(lambda: gone(child), "the forked child to die with its group")


def test_a_killed_but_unreaped_kernels_group_is_still_its_own(stand_in: Any, sent: list) -> None:
    kernel, process, child = stand_in
    kernel.kill()  # the kernel alone, as the out-of-memory killer would
    assert kernel.exited() and process.returncode is None  # a zombie: its number stays reserved
    assert kernel.own_group() == process.pid
    assert not gone(child)
    kernel.shutdown()
    assert sent == [
        ("kill", process.pid, signal.SIGKILL),
        ("killpg", process.pid, signal.SIGKILL),
    ]
    wait_until(lambda: gone(child), "the orphaned child to die with its group")


def test_a_reaped_kernels_number_is_never_signalled(stand_in: Any, sent: list) -> None:
    """Once reaped (``km.is_alive()`` reaps), the kernel's pid and group id may name another
    process: nothing is sent to them, neither by the harness nor by jupyter_client."""
    kernel, process, child = stand_in
    os.kill(process.pid, signal.SIGKILL)
    wait_until(lambda: not kernel.km.is_alive(), "the kernel to be reaped")
    assert process.returncode is not None
    sent.clear()
    assert kernel.exited() and kernel.own_group() is None
    kernel.kill()
    kernel.interrupt()
    kernel.shutdown()
    assert sent == []
    assert not gone(child)  # not known to be ours any more: left alone


def test_jupyter_client_alone_would_signal_a_reaped_kernels_group(
    stand_in: Any, sent: list
) -> None:
    """Why the harness does not leave this to ``shutdown_kernel``: the hazard is real.

    (Safe here: the forked child still holds the group, so its number cannot be reused.)
    """
    kernel, process, _child = stand_in
    os.kill(process.pid, signal.SIGKILL)
    wait_until(lambda: not kernel.km.is_alive(), "the kernel to be reaped")
    sent.clear()
    kernel.km.shutdown_kernel(now=True)
    assert ("killpg", process.pid, signal.SIGKILL) in sent
