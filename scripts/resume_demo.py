"""Run ``notebooks/crash_and_resume.ipynb`` headless: kill the kernel mid-training, resume, compare.

Three real kernels, one after the other, on a temporary copy of the notebook (its
checkpoints go to ``.nbcheckpoint/`` beside the copy, signed with a temporary key):

1. runs the setup cells and the ``%%checkpoint`` training cell, and is SIGKILLed
   once a checkpoint past ``--kill-at`` of the epochs exists;
2. runs the same cells again: the training cell resumes from the newest checkpoint;
3. runs them with ``--no-resume``: the uninterrupted reference.

It prints what happened, the time the resume saved, and whether the final weights equal
the reference's; the exit status is 1 when they do not.

Usage::

    python scripts/resume_demo.py [--notebook PATH] [--kill-at 0.5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from nbcheckpoint.store import Checkpoint, CheckpointStore

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "crash_and_resume.ipynb"
MAGIC = "%%checkpoint"


class CellFailed(RuntimeError):
    """A notebook cell raised in the kernel."""


@dataclass
class Output:
    """What one cell printed, and how long it took."""

    stdout: str = ""
    error: str | None = None
    seconds: float = 0.0
    expressions: dict[str, Any] = field(default_factory=dict)


KERNEL_NAME = "nbcheckpoint-demo"

# Sent to a kernel: wraps time.sleep to count the calls made from notebook code.
EPOCH_COUNTER = """
import sys, time
_real = time.sleep
_calls = [0]
_ns = get_ipython().user_ns

def sleep(seconds):
    if sys._getframe(1).f_globals is _ns:
        _calls[0] += 1
    return _real(seconds)

sleep.calls = _calls
time.sleep = sleep
"""


def kernel_specs(folder: Path) -> KernelSpecManager:
    """A kernelspec that runs this interpreter (the project's venv), whatever else is installed."""
    spec = folder / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    info = {"argv": argv, "display_name": "Python (nbcheckpoint demo)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(info))
    return KernelSpecManager(kernel_dirs=[str(folder)])


class Kernel:
    """One ipykernel for the notebook copy, started the way jupyter_server starts it."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.km = KernelManager(
            kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs(cwd / "kernels")
        )
        # The kernel's own stderr (startup warnings, a crash) goes to a log, shown on failure.
        self.log = log
        with open(log, "wb") as stderr:
            self.km.start_kernel(env=env, cwd=str(cwd), stderr=stderr)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def submit(self, code: str, expressions: dict[str, str] | None = None) -> str:
        return str(self.kc.execute(code, user_expressions=expressions or {}))

    def wait(self, msg_id: str, timeout: float = 120) -> Output:
        """Collect the cell's output until the kernel is idle again."""
        out = Output()
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=1.0)
            except queue.Empty:
                if not self.km.is_alive():
                    raise CellFailed(
                        f"the kernel died; it printed: {out.stdout}\n"
                        f"its log: {self.log.read_text(errors='replace')[-2000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise CellFailed(f"no answer within {timeout} s") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.stdout += content["text"]
            elif kind == "error":
                out.error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        out.seconds = time.monotonic() - started
        reply = self.reply_to(msg_id, deadline)
        for name, value in (reply.get("user_expressions") or {}).items():
            out.expressions[name] = value.get("data", {}).get("text/plain")
        if reply["status"] != "ok" and out.error is None:
            out.error = f"{reply.get('ename')}: {reply.get('evalue')}"
        if out.error:
            raise CellFailed(out.error + ("\n" + out.stdout if out.stdout else ""))
        return out

    def reply_to(self, msg_id: str, deadline: float) -> dict[str, Any]:
        """The shell reply to ``msg_id``. Others are skipped: on a busy machine
        ``wait_for_ready`` may have sent a second kernel_info request, whose reply would
        otherwise be taken for this one (and its user expressions, none, compared)."""
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CellFailed("the kernel went idle but sent no reply") from None
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return dict(msg["content"])

    def run(self, code: str, expressions: dict[str, str] | None = None) -> Output:
        return self.wait(self.submit(code, expressions))

    def look(self, code: str) -> str:
        """Run ``code`` silently (no history, no cell events: nbcheckpoint does not see it)."""
        msg_id = str(self.kc.execute(code, silent=True, store_history=False))
        return self.wait(msg_id).stdout

    def count_epochs(self) -> None:
        """Count the calls the notebook's own code makes to ``time.sleep``: the training cell
        makes one per epoch (its stand-in for a real model's work). Nothing is added to the
        notebook's variables; ``epochs_run`` reads the count."""
        self.look(f"exec({EPOCH_COUNTER!r}, {{'get_ipython': get_ipython}})")

    def epochs_run(self) -> int:
        return int(self.look("print(__import__('time').sleep.calls[0])").strip())

    def kill(self) -> None:
        """SIGKILL, as the out-of-memory killer or a preempted machine would."""
        os.kill(self.km.provisioner.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while self.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def shutdown(self) -> None:
        self.kc.stop_channels()
        process = getattr(self.km.provisioner, "process", None)
        if process is not None and process.poll() is not None:
            # Dead and reaped: jupyter_client would still signal its process group id,
            # which another process may hold by now. Forget the process instead.
            self.km.provisioner.process = None
        try:
            self.km.shutdown_kernel(now=True)
        except Exception:  # already dead
            pass


@dataclass
class Cells:
    """The notebook's code cells around its ``%%checkpoint`` training cell."""

    setup: list[str]
    train: str
    after: list[str]

    @classmethod
    def read(cls, path: Path) -> Cells:
        nb = nbformat.read(path, as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        marked = [i for i, src in enumerate(code) if src.lstrip().startswith(MAGIC)]
        if not marked:
            raise SystemExit(f"{path}: no {MAGIC} cell to interrupt.")
        i = marked[0]
        return cls(code[:i], code[i], code[i + 1 :])

    def train_without_resume(self) -> str:
        first, _, rest = self.train.lstrip().partition("\n")
        return f"{first} --no-resume\n{rest}"


def epoch_of(ck: Checkpoint) -> int | None:
    """0-based index of the outermost loop at a checkpoint, if it was taken inside one."""
    counters = (ck.body.get("position") or {}).get("counters") or []
    return int(counters[0]) if counters else None


def where(ck: Checkpoint, total: int) -> str:
    epoch = epoch_of(ck)
    return f"epoch {epoch + 1}/{total}" if epoch is not None else "its last safe point"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK, help="notebook to run")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="kill once a checkpoint past this share of the epochs exists (default 0.5)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    cells = Cells.read(args.notebook)
    tmp = Path(tempfile.mkdtemp(prefix="nbcheckpoint-resume-demo-"))
    try:
        return demo(cells, args.notebook, tmp, args.kill_at)
    except CellFailed as e:
        print(f"A cell failed: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def demo(cells: Cells, source: Path, tmp: Path, kill_at: float) -> int:
    notebook = tmp / source.name
    shutil.copy(source, notebook)
    env = {
        **os.environ,
        # jupyter_server tells a kernel its notebook this way; the store goes beside it.
        "JPY_SESSION_NAME": str(notebook),
        # A throwaway signing key: the demo never reads or creates the user's own.
        "NBCHECKPOINT_KEY_FILE": str(tmp / "signing.key"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    env.pop("NBCHECKPOINT_STORE", None)
    env.pop("NBCHECKPOINT_KEY", None)
    os.environ["NBCHECKPOINT_KEY_FILE"] = env["NBCHECKPOINT_KEY_FILE"]
    store_url = str(tmp / ".nbcheckpoint")

    def checkpoints() -> list[Checkpoint]:
        # The copy is the only notebook in this store, whatever key the kernel gave it.
        return CheckpointStore(store_url).list() if os.path.isdir(store_url) else []

    started = time.monotonic()
    print(f"Running {source.name} in a temporary folder ({tmp}).")

    # 1. Train until a checkpoint past kill_at exists, then SIGKILL the kernel.
    k1 = Kernel(tmp, env, tmp / "kernel-1.log")
    try:
        for code in cells.setup:
            k1.run(code)
        k1.submit(cells.train)
        t0, t0_wall = time.monotonic(), time.time()
        total: int | None = None
        while True:
            cks = checkpoints()
            last = cks[-1] if cks else None
            if last is not None and last.status != "running":
                raise SystemExit("The training cell ended before it could be interrupted.")
            epoch = epoch_of(last) if last is not None else None
            if last is not None and epoch is not None:
                lengths = last.body["position"].get("lengths") or [None]
                total = lengths[0] if isinstance(lengths[0], int) else total
                if total and epoch >= kill_at * total:
                    break
            if time.monotonic() - t0 > 180:
                raise SystemExit("No checkpoint past the kill point within 180 s.")
            time.sleep(0.05)
        # A little more training after the checkpoint: work the crash loses.
        time.sleep(0.4)
        killed_at = time.time()
        k1.kill()
        ran = time.monotonic() - t0
        before_kill = checkpoints()[-1]
    finally:
        k1.shutdown()
    assert total is not None
    lost = killed_at - before_kill.created
    # Epochs per second so far, to tell roughly how far training got past the checkpoint.
    done = epoch_of(before_kill) or 0
    rate = done / max(before_kill.created - t0_wall, 1e-9)
    print(
        f"Kernel 1 trained for {ran:.1f} s and was killed with SIGKILL {lost:.1f} s after "
        f"checkpoint #{before_kill.id} ({where(before_kill, total)})."
    )

    # 2. A new kernel runs the same cells: the training cell resumes.
    k2 = Kernel(tmp, env, tmp / "kernel-2.log")
    try:
        setup_out = "".join(k2.run(code).stdout for code in cells.setup)
        k2.count_epochs()
        resumed = k2.run(cells.train)
        resumed_epochs = k2.epochs_run()
        result = run_after(k2, cells)
    finally:
        k2.shutdown()
    announced = next((ln for ln in setup_out.splitlines() if "earlier kernel" in ln), None)
    if announced:
        print(f"Kernel 2 loaded nbcheckpoint: {announced}")
    line = next((ln for ln in resumed.stdout.splitlines() if ln.startswith("Resuming")), None)
    print(f"Kernel 2 re-ran the training cell: {line or 'it did NOT resume.'}")

    # 3. The uninterrupted reference, from scratch.
    k3 = Kernel(tmp, env, tmp / "kernel-3.log")
    try:
        for code in cells.setup:
            k3.run(code)
        k3.count_epochs()
        scratch = k3.run(cells.train_without_resume())
        scratch_epochs = k3.epochs_run()
        reference = run_after(k3, cells)
    finally:
        k3.shutdown()
    print(f"Kernel 3 ran it from scratch with --no-resume: {scratch.seconds:.1f} s.")

    equal = result.expressions == reference.expressions and result.stdout == reference.stdout
    # 1-based, like the positions: the epoch that was running when the kernel died.
    killed_epoch = min(total, done + int(rate * lost) + 1)
    saved = scratch.seconds - resumed.seconds
    print()
    print(result.stdout.rstrip())
    print()
    print(
        f"trained to about epoch {killed_epoch}/{total} then the kernel was killed; "
        + (
            f"the new kernel resumed from checkpoint #{before_kill.id} at "
            f"{where(before_kill, total)} "
            if line
            else "the new kernel did NOT resume "
        )
        + f"and trained {resumed_epochs} epochs instead of {scratch_epochs} from scratch "
        f"({resumed.seconds:.1f} s instead of {scratch.seconds:.1f} s, {saved:.1f} s saved); "
        "final weights equal the uninterrupted run: " + ("yes" if equal else "NO")
    )
    if not equal:
        print(f"resumed:       {result.stdout.strip()} {result.expressions}")
        print(f"uninterrupted: {reference.stdout.strip()} {reference.expressions}")
    print(f"(whole demo: {time.monotonic() - started:.0f} s)")
    return 0 if equal and line else 1


def run_after(k: Kernel, cells: Cells) -> Output:
    """Run the cells after training; the last one's ``digest`` comes back as an expression."""
    out = Output()
    for i, code in enumerate(cells.after):
        last = i == len(cells.after) - 1
        step = k.run(code, {"digest": "digest"} if last else None)
        out.stdout += step.stdout
        out.expressions.update(step.expressions)
    return out


if __name__ == "__main__":
    sys.exit(main())
