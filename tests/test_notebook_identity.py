"""Which notebook a kernel runs when JupyterLab tells it (issue #13): the id in the notebook's
metadata names its checkpoints across renames; the path stays the fallback without a frontend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.testing import globalipapp

from nbcheckpoint.ipython.identity import FRONTEND_NAME, FrontendNotebook, notebook_ref
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.identity import ENV_NOTEBOOK_ID

NB_ID = "7edcb077-69f2-40b9-9f36-99bbe883b9ae"


@pytest.fixture(autouse=True)
def no_env_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_NOTEBOOK_ID, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def test_the_frontends_id_names_the_notebook_and_its_current_path_is_used(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    ns = {
        "__session__": str(tmp_path / "Untitled.ipynb"),  # what the kernel was started as
        FRONTEND_NAME: {"id": NB_ID, "path": "sub/train.ipynb", "root": str(tmp_path)},
    }
    ref = notebook_ref(ns)
    assert ref == NotebookRef(NB_ID, str(tmp_path / "sub" / "train.ipynb"))


def test_without_the_frontend_the_path_names_it(tmp_path: Path) -> None:
    ns = {"__session__": str(tmp_path / "Untitled.ipynb")}
    assert notebook_ref(ns) == NotebookRef.from_path(str(tmp_path / "Untitled.ipynb"))


def test_a_root_missing_on_this_machine_keeps_the_folder_the_kernel_started_in(
    tmp_path: Path,
) -> None:
    # A remote kernel: the server's root is not a folder here; a rename stays in its folder.
    ns = {
        "__session__": str(tmp_path / "Untitled.ipynb"),
        FRONTEND_NAME: {"id": NB_ID, "path": "train.ipynb", "root": "/no/such/root"},
    }
    assert notebook_ref(ns).path == str(tmp_path / "train.ipynb")


def test_explicit_settings_win_over_the_frontend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = {FRONTEND_NAME: {"id": NB_ID, "path": "train.ipynb", "root": str(tmp_path)}}
    assert notebook_ref(ns, notebook_id="team-run").key == "team-run"
    monkeypatch.setenv(ENV_NOTEBOOK_ID, "from-env")
    assert notebook_ref(ns).key == "from-env"


def test_a_key_to_restore_from_and_bad_values(tmp_path: Path) -> None:
    base = {"id": NB_ID, "path": "train.ipynb", "root": str(tmp_path)}
    ns = {FRONTEND_NAME: {**base, "key": "Untitled-0123456789"}}
    assert notebook_ref(ns).key == "Untitled-0123456789"
    # Values that are no store keys (folder names) are ignored, never used as paths.
    ns = {
        "__session__": str(tmp_path / "nb.ipynb"),
        FRONTEND_NAME: {"id": "../../etc", "path": "../x.ipynb", "key": 3},
    }
    assert notebook_ref(ns) == NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    assert FrontendNotebook.from_namespace({FRONTEND_NAME: "not a dict"}) is None


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NBCHECKPOINT_STORE", raising=False)
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.user_ns["__session__"] = str(tmp_path / "Untitled.ipynb")
    shell.run_line_magic("load_ext", "nbcheckpoint")
    yield shell
    shell.run_line_magic("unload_ext", "nbcheckpoint")
    for name in ("__session__", FRONTEND_NAME):
        shell.user_ns.pop(name, None)


def test_checkpoints_follow_a_rename_when_the_frontend_gives_the_id(
    ip: Any, tmp_path: Path
) -> None:
    """The kernel keeps its start-up __session__ (Untitled.ipynb); the extension tells it the
    id and, after the rename, the new path: every checkpoint is under the id."""
    ip.user_ns[FRONTEND_NAME] = {"id": NB_ID, "path": "Untitled.ipynb", "root": str(tmp_path)}
    ip.run_cell("x = 1\n%checkpoint save")
    ip.user_ns[FRONTEND_NAME] = {"id": NB_ID, "path": "train.ipynb", "root": str(tmp_path)}
    ip.run_cell("x = 2\n%checkpoint save")
    store = CheckpointStore(str(tmp_path / ".nbcheckpoint"))
    notebooks = sorted(p.name for p in (tmp_path / ".nbcheckpoint" / "notebooks").iterdir())
    assert notebooks == [NB_ID]
    saved = store.list(NotebookRef.from_key(NB_ID))
    assert [ck.body["notebook"]["path"] for ck in saved] == [
        str(tmp_path / "Untitled.ipynb"),
        str(tmp_path / "train.ipynb"),
    ]
    # The variable the frontend set is not checkpointed.
    assert FRONTEND_NAME not in saved[-1].variables
