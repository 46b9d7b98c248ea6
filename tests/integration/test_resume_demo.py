"""``scripts/resume_demo.py`` end to end: three real kernels, a SIGKILL, a resume, a comparison."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "resume_demo.py"
NOTEBOOK = ROOT / "notebooks" / "crash_and_resume.ipynb"

STORY = re.compile(
    r"trained to about epoch (?P<killed>\d+)/(?P<total>\d+) then the kernel was killed; "
    r"the new kernel resumed from checkpoint #(?P<id>\d+) at epoch (?P<resumed>\d+)/(?P=total) "
    r"and trained (?P<ran>\d+) epochs instead of (?P<scratch>\d+) from scratch "
    r"\([\d.]+ s instead of [\d.]+ s, -?[\d.]+ s saved\); "
    r"final weights equal the uninterrupted run: yes"
)


def test_notebook_is_clean_nbformat_45() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("id") for c in nb.cells)
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum(c.source.startswith("%%checkpoint") for c in code) == 1


def test_resume_demo_kills_resumes_and_matches(subprocess_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=500,  # a hang guard: three kernels on a loaded machine
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "was killed with SIGKILL" in out, out
    assert "Resuming from checkpoint #" in out, out
    story = STORY.search(out)
    assert story is not None, out
    total, killed, resumed = (int(story[k]) for k in ("total", "killed", "resumed"))
    assert 0.5 * total <= resumed <= killed, out
    assert resumed < total, out
    # Epochs counted in each kernel as they ran: the uninterrupted run trained every one; the
    # resumed run only the epoch that held the checkpoint and those after it.
    assert int(story["scratch"]) == total, out
    assert int(story["ran"]) == total - resumed + 1, out
    assert "fingerprint" in out, out
