"""Shared fixtures: an isolated signing key for every test, and store URLs for each backend."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint.store import CheckpointStore, NotebookRef

# Python 3.14 removes pickling of itertools objects (3.12 and 3.13 warn). The serializer
# turns a failed pickle into a skipped variable, so ``-W error`` alone would not show that
# something pickled one: any such warning fails the session, naming the tests.
_ITERTOOLS_PICKLED: list[str] = []


def pytest_warning_recorded(warning_message: Any, when: str, nodeid: str, location: Any) -> None:
    if "support will be removed from itertools" in str(warning_message.message):
        _ITERTOOLS_PICKLED.append(nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _ITERTOOLS_PICKLED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ITERTOOLS_PICKLED:
        names = ", ".join(sorted(set(_ITERTOOLS_PICKLED)))
        terminalreporter.write_line(
            f"FAILED: itertools objects were pickled (Python 3.14 cannot) in: {names}", red=True
        )


@pytest.fixture(autouse=True)
def _isolated_signing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the signing key at a per-test file, so no test reads or creates the user's real key."""
    key_file = tmp_path / "signing-key" / "signing.key"
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(key_file))
    monkeypatch.delenv("NBCHECKPOINT_KEY", raising=False)
    monkeypatch.delenv("NBCHECKPOINT_STORE", raising=False)
    return key_file


@pytest.fixture(autouse=True)
def _no_restore_heard_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a new kernel: no notebook has had its variables restored in it yet."""
    from nbcheckpoint.capture import events

    monkeypatch.setattr(events, "_restored", set())


def _purge_memory_root(root: str) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    # MemoryFileSystem keeps one process-wide dict: drop only this test's paths.
    for path in [p for p in MemoryFileSystem.store if p == root or p.startswith(root + "/")]:
        MemoryFileSystem.store.pop(path, None)
    MemoryFileSystem.pseudo_dirs[:] = [
        d for d in MemoryFileSystem.pseudo_dirs if not (d == root or d.startswith(root + "/"))
    ]


@pytest.fixture
def memory_store_url() -> Iterator[str]:
    """A unique, empty root in fsspec's process-wide memory filesystem, removed afterwards."""
    root = f"/nbcheckpoint-test-{uuid.uuid4().hex}"
    try:
        yield f"memory://{root}"
    finally:
        _purge_memory_root(root)


@pytest.fixture
def local_store_url(tmp_path: Path) -> str:
    """A store in a local folder, for tests about files, modes and processes."""
    return str(tmp_path / "store")


@pytest.fixture(params=["local", "memory"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty store root on each backend: a local folder, then fsspec's memory filesystem."""
    name = "local_store_url" if request.param == "local" else "memory_store_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def store(store_url: str) -> CheckpointStore:
    return CheckpointStore(store_url)


@pytest.fixture
def nb(tmp_path: Path) -> NotebookRef:
    return NotebookRef.from_path(str(tmp_path / "analysis.ipynb"))


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for helper processes: this checkout importable, the test's key file inherited."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """IPython's testing shell with the extension loaded, for a notebook in ``tmp_path``
    whose store is ``tmp_path/store``; afterwards auto mode is off, the extension unloaded
    and the user's variables (``_``-prefixed ones too) removed."""
    from IPython.testing import globalipapp

    from nbcheckpoint.capture.names import user_names

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBCHECKPOINT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "nb.ipynb"))
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    # As in a kernel, the notebook's namespace is ``__main__``: functions defined in a cell
    # then pickle their globals by reference, not the whole test shell by value.
    monkeypatch.setitem(sys.modules, "__main__", shell.user_module)
    shell.run_line_magic("load_ext", "nbcheckpoint")
    yield shell
    shell.run_line_magic("checkpoint", "auto off")
    shell.run_line_magic("unload_ext", "nbcheckpoint")
    for name in user_names(shell.user_ns, list(shell.user_ns), shell.user_ns_hidden):
        shell.user_ns.pop(name, None)
