"""Every notebook in ``notebooks/`` runs top to bottom in a real kernel, in a temporary copy."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbcheckpoint.store import CheckpointStore, NotebookRef

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# A hang guard per cell, not a speed target: the machines running this are shared.
CELL_TIMEOUT = 300


def output_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def check_quickstart(nb: nbformat.NotebookNode, folder: Path) -> None:
    """The quickstart shows what it promises: a status line, a listing, a restore, the settings."""
    out = {c.source.splitlines()[0]: output_text(c) for c in nb.cells if c.cell_type == "code"}
    assert "nbcheckpoint: " in out["%%checkpoint --every 0.2"]
    assert "loss after 40 epochs" in out["%%checkpoint --every 0.2"]
    assert "#1" in out["%checkpoint list"]
    assert "Checkpoint #1" in out["%checkpoint show 1"]
    assert "Restored checkpoint #" in out["%checkpoint restore"]
    assert str(folder / ".nbcheckpoint") in out["%checkpoint config"]


# Checks of specific outputs, for notebooks that have them (any notebook must run without error).
OUTPUT_CHECKS: dict[str, Callable[[nbformat.NotebookNode, Path], None]] = {
    "quickstart.ipynb": check_quickstart,
}


@pytest.mark.parametrize("source", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(source: Path, tmp_path: Path, key_file: Path) -> None:
    # A copy of the whole folder (notebooks may read files beside them), minus old checkpoints,
    # so that the store lands in the temporary folder and the repository stays clean.
    folder = tmp_path / "notebooks"
    shutil.copytree(
        NOTEBOOKS, folder, ignore=shutil.ignore_patterns(".nbcheckpoint", ".ipynb_checkpoints")
    )
    path = folder / source.name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stored = [c.id for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
    assert not stored, f"{source.name} has stored outputs in cells {stored}"

    # jupyter_server tells the kernel its notebook through JPY_SESSION_NAME; nbclient does not.
    env = {
        **os.environ,
        "JPY_SESSION_NAME": str(path),
        "NBCHECKPOINT_KEY_FILE": str(key_file),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    env.pop("NBCHECKPOINT_STORE", None)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    repo_store = NOTEBOOKS / ".nbcheckpoint"
    repo_store_before = repo_store.exists()
    client.execute(env=env)  # raises CellExecutionError, naming the cell, on any error
    # Every code cell ran once, in order, in one kernel.
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), counts

    if any(c.cell_type == "code" and "%%checkpoint" in c.source for c in nb.cells):
        store = CheckpointStore(str(folder / ".nbcheckpoint"))
        assert store.list(NotebookRef.from_path(str(path))), "no checkpoint beside the copy"
    assert repo_store.exists() == repo_store_before, "the run wrote into the repository"
    if source.name in OUTPUT_CHECKS:
        OUTPUT_CHECKS[source.name](nb, folder)
