"""The labextension's TypeScript unit tests (pure helpers), run with ``jlpm test`` so ``make test`` covers them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the labextension's unit tests must run)")
    pytest.skip(reason)


def test_typescript_helpers() -> None:
    # jlpm comes with the jupyter-builder Python package, next to this interpreter.
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    jlpm = shutil.which("jlpm", path=path)
    if jlpm is None or shutil.which("node", path=path) is None:
        _missing("jlpm or node is missing: the TypeScript unit tests need Node.js")
    env = {**os.environ, "PATH": path}
    if not (LABEXTENSION / "node_modules" / "typescript").is_dir():
        # `pip install -e .` installs them when it builds the extension; a fresh clone may not have.
        subprocess.run(
            [jlpm, "install"],
            cwd=LABEXTENSION,
            env=env,
            check=True,
            capture_output=True,
            timeout=900,
        )
    result = subprocess.run(
        [jlpm, "test"], cwd=LABEXTENSION, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "# fail 0" in output, output[-6000:]
    assert "# pass " in output and "# pass 0\n" not in output, output[-6000:]
