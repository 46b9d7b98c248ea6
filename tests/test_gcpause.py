"""The garbage collector is paused while the extension imports and while a checkpoint is restored.

Both make objects by the tens of thousands, none of them garbage; with the collector on,
each 700 set off a collection, and now and then one over every object of the kernel (40 ms
of ``%load_ext`` in a kernel with pandas). Each test counts the collections that start
during the step (``gc.callbacks``) and checks the collector is left as it was.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint.gcpause import paused
from nbcheckpoint.store import CheckpointStore, NotebookRef


@contextmanager
def collections(inside: str) -> Iterator[list[int]]:
    """The generation of each collection that starts while a function named ``inside`` is
    running (the one the collector may run at once when it is turned back on does not count:
    it is not a part of the step)."""
    started: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase != "start":
            return
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == inside:
                started.append(info["generation"])
                return
            frame = frame.f_back

    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_leaves_the_collector_as_it_was(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with pytest.raises(KeyError), paused():
            assert not gc.isenabled()
            raise KeyError("a failed step")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_a_restore_runs_no_collection_start_to_end(store: CheckpointStore, nb: NotebookRef) -> None:
    """Reading a manifest of 3,000 variables makes some 30,000 dicts before any pickle is
    read: the pause covers the whole load, not only the unpickling."""
    namespace = {f"v{i}": {"i": i, "tags": [i, str(i)]} for i in range(3000)}
    store.save(namespace, nb)
    assert gc.isenabled()
    with collections("load") as started:
        restored = CheckpointStore(store.url).load(nb)
    assert len(started) <= 1, started  # the one run when the collector is back on
    assert gc.isenabled()
    assert restored.values == namespace


def test_checkpoint_restore_runs_no_collection_until_its_output_is_written(ip: Any) -> None:
    # 2,000 variables: what the command does around the load (list what was restored and
    # what was left out) makes thousands of objects too.
    ip.run_cell("records = [{'i': i, 'tags': [i]} for i in range(20000)]")
    ip.run_cell("for _i in range(2000): globals()[f'v{_i}'] = {'i': _i}")
    ip.run_line_magic("checkpoint", "save")
    ip.run_cell("del records")
    with collections("_cmd_restore") as started:
        ip.run_line_magic("checkpoint", "restore")
    assert len(started) <= 1, started  # the one run when the collector is back on
    assert gc.isenabled()
    assert ip.user_ns["records"][19999] == {"i": 19999, "tags": [19999]}
    # A restore that fails leaves the collector on too.
    with pytest.raises(Exception, match="#99"):
        ip.run_line_magic("checkpoint", "restore 99")
    assert gc.isenabled()


def test_load_ext_imports_the_extension_with_no_collection(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """In a fresh interpreter with IPython and NumPy loaded, as in a kernel: the import of
    the extension made a full collection (and a dozen young ones) before."""
    script = """
import gc, json, sys
import numpy
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
started = []
def note(phase, info):
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "load_ipython_extension" and phase == "start":
            started.append(info["generation"])
            return
        frame = frame.f_back
gc.callbacks.append(note)
import nbcheckpoint
nbcheckpoint.load_ipython_extension(shell)
loaded = [m for m in sys.modules if m.startswith("nbcheckpoint.")]
print(json.dumps({"started": started, "enabled": gc.isenabled(), "modules": len(loaded)}))
"""
    env = {**subprocess_env, "IPYTHONDIR": str(tmp_path / "ipython")}
    env["JPY_SESSION_NAME"] = str(tmp_path / "nb.ipynb")
    env["NBCHECKPOINT_STORE"] = str(tmp_path / "store")
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"] > 20  # the extension was imported here, not before
    assert len(report["started"]) <= 1, report["started"]
    assert report["enabled"] is True


def test_docstring_examples() -> None:
    import doctest

    from nbcheckpoint import gcpause

    result = doctest.testmod(gcpause)
    assert result.failed == 0 and result.attempted > 0
