"""Fidelity: notebooks shaped like real ones, auto checkpoints, SIGKILL, restore, every variable compared.

Each notebook in ``notebooks/fidelity/`` runs cell by cell in a real kernel under
``%checkpoint auto on --min-duration 0``; the kernel is killed once the last auto checkpoint
has landed, and a new kernel restores it. Every user variable must come back equal, or be
named in the restore's output with a reason: 0 stale, 0 missing without a word.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from .fidelity import run_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks" / "fidelity"

# Cases that fail until the fixes land; strict, so a fix turns them into failures
# and the mark must then be removed.
KNOWN_BROKEN: dict[str, str] = {
    "01_underscore_names.ipynb": (
        "issue #17 item 1: _scale, _offset, _cache, _mean_of are never saved and the restore "
        "does not name them"
    ),
    "02_timed_cells.ipynb": (
        "issue #17 item 2: a cell with %time or %timeit records only the timed statement's "
        "names; z, label and mean come back with their older values"
    ),
    "03_failing_cell.ipynb": (
        "issue #17 item 2: a cell that raised is not auto-saved; attempts, results and status "
        "come back as they were before it"
    ),
    "04_method_appends_to_global.ipynb": (
        "issue #17 item 2: Recorder.record appends to the global events, which the cell does "
        "not name; events comes back empty"
    ),
    "05_globals_assignment.ipynb": (
        "issue #17 item 2: configure() sets threshold and mode through globals(); they come "
        "back with their older values"
    ),
    "07_file_handle.ipynb": (
        "issue #17 item 4: f and src are saved and restored; the restore reopens results.csv "
        "in 'w' mode (0 bytes after) and does not name them"
    ),
}


def cases() -> list[object]:
    out: list[object] = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        reason = KNOWN_BROKEN.get(path.name)
        marks = (
            [pytest.mark.xfail(strict=True, reason=reason, raises=AssertionError)] if reason else []
        )
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


def test_the_notebooks_are_clean_and_enough() -> None:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert len(paths) >= 10
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert len(code) >= 3, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.parametrize("source", cases())
def test_restore_after_sigkill_is_equal_or_says_what_differs(
    source: Path, tmp_path: Path, kernel_env: dict[str, str]
) -> None:
    run = run_notebook(source, tmp_path / "project", kernel_env)
    print(run.summary())
    problems = run.problems()
    assert not problems, (
        f"{run.summary()}\n" + "\n".join(problems) + f"\nrestore printed:\n{run.restore_output}"
    )
