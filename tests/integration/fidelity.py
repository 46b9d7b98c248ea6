"""Run a notebook in a real kernel under auto checkpoints, SIGKILL it, restore, compare every variable.

What a run does, for one notebook copied into a temporary folder:

1. a kernel loads nbcheckpoint, turns on ``%checkpoint auto on --min-duration 0`` and runs
   the notebook's code cells one by one (cells tagged ``raises-exception`` must fail, the
   others must not). After each cell it runs ``fidelity_step = N`` and waits until an auto
   checkpoint from that cell or a later one is in the store: a person's pace, where every
   save has landed before the next cell runs, so that what is saved does not depend on how
   busy the machine is;
2. a silent request fingerprints every user variable (``fingerprint.py``), and the kernel
   is SIGKILLed;
3. a new kernel loads nbcheckpoint and runs ``%checkpoint restore``; the same fingerprint
   is taken there.

A variable passes when its fingerprint is equal, or when the restore's output names it on a
line of its own (not the ``Restored checkpoint ...`` summary, which only lists what came
back): that line is the printed reason. The notebook's metadata may ask for more
(``"fidelity": {"files": [...], "reported": [...]}``): files that the restore must leave
byte for byte as they were, and names that the restore must name.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from nbcheckpoint.store import CheckpointStore, NotebookRef

from .kernel import Kernel, wait_for

FINGERPRINT_SOURCE = (Path(__file__).parent / "fingerprint.py").read_text()
STEP = "fidelity_step"
RAISES = "raises-exception"
# Seconds to wait for a step's auto checkpoint before running an empty cell (``pass``),
# which starts a save that is waiting for the writer; then wait again. Each such nudge is
# counted, and the test fails on any: a save that waited for the writer lands on its own.
PATIENCE = 60.0
MAX_NUDGES = 5


@dataclass
class Verdict:
    """How one variable came back."""

    name: str
    outcome: str  # equal | reported | stale | missing | unexpected
    before: Any = None
    after: Any = None


@dataclass
class Run:
    """Everything one kill-and-restore run of a notebook observed."""

    notebook: str
    before: dict[str, Any]
    after: dict[str, Any]
    aliases_before: list[list[str]]
    aliases_after: list[list[str]]
    restore_output: str
    files_before: dict[str, bytes]
    files_after: dict[str, bytes | None]
    must_report: list[str]
    nudges: int = 0
    verdicts: list[Verdict] = field(default_factory=list)

    def named_with_reason(self, name: str) -> bool:
        """``name`` appears as a word on a restore line other than the summary of what came back."""
        word = re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")
        return any(
            word.search(line)
            for line in self.restore_output.splitlines()
            if line.strip() and not line.lstrip().startswith("Restored checkpoint")
        )

    def judge(self) -> list[Verdict]:
        verdicts = []
        for name, before in sorted(self.before.items()):
            after = self.after.get(name)
            if name in self.after and after == before:
                outcome = "equal"
            elif self.named_with_reason(name):
                outcome = "reported"
            else:
                outcome = "stale" if name in self.after else "missing"
            verdicts.append(Verdict(name, outcome, before, after))
        for name in sorted(set(self.after) - set(self.before)):
            # Back after a restore though the notebook no longer had it (a deleted name).
            outcome = "reported" if self.named_with_reason(name) else "unexpected"
            verdicts.append(Verdict(name, outcome, None, self.after[name]))
        self.verdicts = verdicts
        return verdicts

    def count(self, outcome: str) -> int:
        return sum(v.outcome == outcome for v in self.verdicts)

    def problems(self) -> list[str]:
        """Every way this run broke the promise, in words; empty when it kept it."""
        out = []
        for v in self.verdicts:
            if v.outcome in ("stale", "missing", "unexpected"):
                out.append(
                    f"{v.name}: {v.outcome}, not named in the restore's output\n"
                    f"    before: {short(v.before)}\n    after:  {short(v.after)}"
                )
        broken = self.broken_aliases()
        if broken:
            out.append(f"names that shared one object no longer do: {broken}")
        for name in self.must_report:
            if not self.named_with_reason(name):
                out.append(f"{name}: the restore's output does not name it")
        for path, data in self.files_before.items():
            now = self.files_after.get(path)
            if now != data:
                what = "deleted" if now is None else f"{len(data)} -> {len(now)} bytes"
                out.append(f"{path}: changed by the restore ({what})")
        return out

    def broken_aliases(self) -> list[list[str]]:
        """Alias groups from before the kill that the restore split, among names both sides have
        and the restore did not name (``name:where`` for tensors inside a variable)."""
        after = {tuple(g) for g in self.aliases_after}
        broken = []
        for group in self.aliases_before:
            kept = [
                n
                for n in group
                if (name := n.partition(":")[0]) in self.after and not self.named_with_reason(name)
            ]
            if len(kept) > 1 and not any(set(kept) <= set(g) for g in after):
                broken.append(kept)
        return broken

    def summary(self) -> str:
        return (
            f"{self.notebook}: {len(self.before)} variables, {self.count('equal')} equal, "
            f"{self.count('reported')} reported, {self.count('stale')} stale, "
            f"{self.count('missing')} missing without a printed reason, "
            f"{self.count('unexpected')} unexpected"
            + (f"; {self.nudges} auto saves needed a nudge to land" if self.nudges else "")
        )


def short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def fingerprint(kernel: Kernel) -> dict[str, Any]:
    """Fingerprints of the kernel's user variables, by a silent request that changes nothing."""
    code = f"exec({FINGERPRINT_SOURCE!r}, {{'__name__': '__main__'}})"
    reply = kernel.run(code, silent=True).check()
    return dict(json.loads(reply.stdout.strip().splitlines()[-1]))


def code_cells(path: Path) -> list[tuple[str, bool]]:
    """(source, expected to raise) for each code cell."""
    nb = nbformat.read(path, as_version=4)
    return [
        (c.source, RAISES in c.get("metadata", {}).get("tags", []))
        for c in nb.cells
        if c.cell_type == "code"
    ]


def settle(kernel: Kernel, store: CheckpointStore, ref: NotebookRef, step: int) -> int:
    """Run ``fidelity_step = step`` and wait until an auto checkpoint from it (or a later cell)
    is in the store; returns the number of nudges it took."""
    count = kernel.run(f"{STEP} = {step}").check().execution_count
    assert count is not None

    def landed() -> bool:
        return any(
            (ck.body.get("cell") or {}).get("execution_count", -1) >= count
            for ck in store.list(ref)
        )

    nudges = 0
    while True:
        try:
            wait_for(landed, PATIENCE, f"the auto checkpoint of cell [{count}]")
            return nudges
        except TimeoutError:
            if nudges == MAX_NUDGES:
                raise
            kernel.run("pass").check()
            nudges += 1


def run_notebook(source: Path, folder: Path, env: dict[str, str], timeout: float = 300) -> Run:
    """Copy ``source`` into ``folder``, run it under auto checkpoints, kill, restore; see the module doc."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / source.name
    shutil.copy(source, path)
    meta = nbformat.read(path, as_version=4).metadata.get("fidelity", {})
    store = CheckpointStore(str(folder / ".nbcheckpoint"))
    ref = NotebookRef.from_path(str(path))

    nudges = 0
    k1 = Kernel(str(path), str(folder), env)
    try:
        k1.start(load_ext=True)
        k1.run("%checkpoint auto on --min-duration 0").check()
        for step, (code, raises) in enumerate(code_cells(path), 1):
            reply = k1.run(code, timeout=timeout)
            if raises:
                assert reply.status == "error", f"this cell was expected to raise:\n{code}"
            else:
                reply.check()
            nudges += settle(k1, store, ref, step)
        # The last step's checkpoint has landed: it holds the notebook's final state, as far
        # as auto mode knows it.
        before = fingerprint(k1)
        files_before = {name: (folder / name).read_bytes() for name in meta.get("files", [])}
        k1.kill()
    finally:
        k1.shutdown()

    k2 = Kernel(str(path), str(folder), env)
    try:
        k2.start(load_ext=True)
        restored = k2.run("%checkpoint restore", timeout=timeout).check()
        after = fingerprint(k2)
    finally:
        k2.shutdown()
    files_after = {
        name: (folder / name).read_bytes() if (folder / name).exists() else None
        for name in files_before
    }
    run = Run(
        notebook=source.name,
        before=before["variables"],
        after=after["variables"],
        aliases_before=before["aliases"],
        aliases_after=after["aliases"],
        restore_output=restored.stdout + restored.stderr,
        files_before=files_before,
        files_after=files_after,
        must_report=list(meta.get("reported", [])),
        nudges=nudges,
    )
    run.judge()
    return run
