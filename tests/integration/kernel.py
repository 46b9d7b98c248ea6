"""A real IPython kernel for tests: start it for a notebook path, run code, kill or interrupt it."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_client import KernelManager
from jupyter_core.utils import run_sync


@dataclass
class Reply:
    """What one execute request produced."""

    status: str = ""
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str:
        shown = [d.get("text/plain", "") for d in self.displays]
        return "\n".join([self.stdout, self.stderr, *shown, self.result or ""])

    def check(self) -> Reply:
        if self.status != "ok":
            err = self.error or {}
            raise AssertionError(
                f"cell failed: {err.get('ename')}: {err.get('evalue')}\n"
                + "\n".join(err.get("traceback", []))
                + f"\nstdout: {self.stdout}\nstderr: {self.stderr}"
            )
        return self


class Kernel:
    """An ipykernel process for a notebook, as jupyter_server would start it (``JPY_SESSION_NAME``)."""

    def __init__(self, notebook: str, cwd: str, env: dict[str, str] | None = None) -> None:
        self.notebook = notebook
        self.cwd = cwd
        self.env = {
            **os.environ,
            "JPY_SESSION_NAME": notebook,
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **(env or {}),
        }
        self.km: KernelManager | None = None
        self.kc: Any = None
        self._partial: dict[str, Reply] = {}  # outputs read by watch(), not yet collected

    def start(self, load_ext: bool = True) -> Kernel:
        # ipykernel's built-in "python3" spec runs sys.executable: the project's venv.
        # IPC sockets, not TCP: picking free TCP ports races with other processes on a busy
        # machine ("Address already in use", the kernel dies before its first reply).
        self.km = KernelManager(
            kernel_name="python3",
            transport="ipc",
            ip=os.path.join(tempfile.mkdtemp(prefix="nbc-kernel-"), "kernel"),
        )
        self.km.start_kernel(env=self.env, cwd=self.cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        if load_ext:
            self.run("%load_ext nbcheckpoint").check()
        return self

    @property
    def pid(self) -> int:
        assert self.km is not None
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    # Signals go only to processes this kernel is known to own. jupyter_client signals the
    # kernel's process group (its pid: kernels start in a session of their own) whenever its
    # Popen is set, even after the kernel died and was reaped, when that number may belong
    # to another process by now. A kernel that has exited but is not yet reaped (a zombie)
    # keeps its pid and group id reserved, so liveness is checked without reaping.
    def _process(self) -> subprocess.Popen[bytes] | None:
        provisioner = getattr(self.km, "provisioner", None)
        return getattr(provisioner, "process", None)

    def exited(self) -> bool:
        """Whether the kernel process has ended; it is left unreaped (see ``own_group``)."""
        process = self._process()
        if process is None or process.returncode is not None:
            return True
        try:
            found = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by someone else: the pid is no longer ours
            return True
        return found is not None

    def own_group(self) -> int | None:
        """The kernel's process group id while signalling it can reach only this kernel's
        processes (the kernel and what it forked), else None.

        That holds while the kernel, the group's leader, is our child and not yet reaped,
        alive or a zombie: until then the number cannot name another process or group.
        """
        process = self._process()
        if process is None or process.returncode is not None:
            return None
        provisioner = getattr(self.km, "provisioner", None)
        if getattr(provisioner, "pgid", None) != process.pid:
            return None  # not a group this kernel leads
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        return process.pid

    def submit(self, code: str, silent: bool = False) -> str:
        """Send code without waiting; returns the message id.

        ``silent`` requests run without IPython's ``pre_run_cell``/``post_run_cell`` events
        and history, so auto mode does not see them: for a test that only looks.
        """
        return str(self.kc.execute(code, silent=silent, store_history=not silent))

    def watch(
        self, msg_id: str, until: Callable[[Reply], bool], timeout: float = 60, what: str = ""
    ) -> Reply:
        """Read the outputs of ``msg_id`` while it runs, until ``until(outputs so far)`` holds.

        The outputs are kept: a later :meth:`collect` of the same request goes on from them.
        """
        reply = self._partial.setdefault(msg_id, Reply())
        deadline = time.monotonic() + timeout
        while not until(reply):
            if self._read_one(msg_id, reply, deadline):
                raise AssertionError(
                    f"the cell ended before {what or 'the awaited output'}: {reply.text[-2000:]}"
                )
        return reply

    def _read_one(self, msg_id: str, reply: Reply, deadline: float) -> bool:
        """Read iopub messages until one of ``msg_id``'s arrives; fold it into ``reply``.
        Returns True when it was the kernel going idle (the request is done)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply in time; so far: {reply.text[-2000:]}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.exited():
                    raise RuntimeError(f"the kernel died; so far: {reply.text[-2000:]}") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                break
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                reply.stdout += content["text"]
            else:
                reply.stderr += content["text"]
        elif kind == "execute_result":
            reply.result = content["data"].get("text/plain")
        elif kind in ("display_data", "update_display_data"):
            reply.displays.append(content["data"])
        elif kind == "error":
            reply.error = content
        elif kind == "status" and content["execution_state"] == "idle":
            return True
        return False

    def collect(self, msg_id: str, timeout: float = 120) -> Reply:
        """Gather the outputs of ``msg_id`` until the kernel is idle again, and its reply."""
        reply = self._partial.pop(msg_id, None) or Reply()
        deadline = time.monotonic() + timeout
        while not self._read_one(msg_id, reply, deadline):
            pass
        while True:
            # Only the reply to this request: wait_for_ready may have sent a second
            # kernel_info request, whose reply may still be waiting.
            shell = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if shell.get("parent_header", {}).get("msg_id") == msg_id:
                break
        reply.status = shell["content"]["status"]
        reply.execution_count = shell["content"].get("execution_count")
        if reply.status == "error" and reply.error is None:
            reply.error = shell["content"]
        return reply

    def run(self, code: str, timeout: float = 120, silent: bool = False) -> Reply:
        return self.collect(self.submit(code, silent), timeout)

    def value(self, expr: str) -> Any:
        """Evaluate ``expr`` in the kernel and return it, through its repr and ``ast.literal_eval``."""
        import ast

        reply = self.run(f"print(repr({expr}))").check()
        return ast.literal_eval(reply.stdout.strip())

    def kill(self) -> None:
        """SIGKILL the kernel process alone, as the out-of-memory killer or a preempted
        machine would (what it forked lives on until ``shutdown``)."""
        if self.own_group() is None:
            return  # already ended and reaped: its pid may be another process's now
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.05)

    def interrupt(self) -> None:
        assert self.km is not None
        if self.own_group() is not None:
            self.km.interrupt_kernel()

    def shutdown(self) -> None:
        """Kill the kernel's process group if it is still ours (see ``own_group``), reap the
        kernel, and let jupyter_client clean up without signalling anything."""
        if self.kc is not None:
            self.kc.stop_channels()
        km = self.km
        if km is not None:
            group = self.own_group()
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            provisioner = getattr(km, "provisioner", None)
            if self._process() is not None and provisioner is not None:
                # Reap (the pid may be reused from now on) and forget the process, so that
                # shutdown_kernel below sends no signal to its number.
                with contextlib.suppress(Exception):
                    run_sync(provisioner.wait)()
                provisioner.process = None
            try:
                km.shutdown_kernel(now=True)
            except Exception:  # already cleaned up
                pass
        self.km = None
        self.kc = None


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")
