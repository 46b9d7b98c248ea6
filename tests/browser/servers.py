"""JupyterLab or Notebook 7 on 127.0.0.1, with a token and every config, runtime and settings folder in a temp dir.

Shared by ``conftest.py`` (JupyterLab) and ``test_panel_notebook7.py``. What a test needs and
lacks skips on a developer's machine and fails under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def missing(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, where everything must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{reason} (CI=true: the browser tests must run; see scripts/install_chromium.sh)"
        )
    pytest.skip(reason)


def require_notebook7() -> str:
    """The installed ``notebook`` version, if it is 7 or later (else skip, or fail under CI)."""
    try:
        import notebook
    except ImportError:
        missing("the notebook package is missing: pip install -e '.[test]' (notebook>=7)")
    version = str(getattr(notebook, "__version__", "0"))
    if int(version.split(".")[0]) < 7:
        missing(f"notebook {version} is installed; these tests need Notebook 7 (notebook>=7)")
    return version


@dataclass
class JupyterServer:
    url: str
    token: str
    root: Path
    env: dict[str, str]
    log: Path

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def lab_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?token={self.token}"

    def notebook_url(self, notebook: str) -> str:
        return f"{self.url}/notebooks/{notebook}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "nbcheckpoint" / "labextension"


def extension_path(base: Path) -> dict[str, str]:
    """``JUPYTER_PATH`` that makes the server load this checkout's build of the extension.

    JupyterLab takes a federated extension from the first folder of its search path that
    has it, and ``JUPYTER_PATH`` comes first: a link to ``nbcheckpoint/labextension`` (what
    ``cd labextension && jlpm build:prod`` writes) wins over the copy an earlier
    ``pip install`` put in ``share/jupyter``. Without a build here, the installed copy is used.
    """
    if not (BUILD / "package.json").is_file():
        return {}
    folder = base / "jupyter-path" / "labextensions"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "nbcheckpoint-labextension"
    if not link.exists():
        link.symlink_to(BUILD, target_is_directory=True)
    paths = [str(base / "jupyter-path"), os.environ.get("JUPYTER_PATH", "")]
    return {"JUPYTER_PATH": os.pathsep.join(p for p in paths if p)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def jupyter_server(base: Path, app: str) -> Iterator[JupyterServer]:
    """``jupyter lab`` (``app="jupyterlab"``) or Notebook 7 (``app="notebook"``) serving ``base/root``."""
    root = base / "root"
    settings = base / "user-settings"
    workspaces = base / "workspaces"
    root.mkdir(parents=True)
    # Without this JupyterLab's news and update notification pops up over the notebook
    # (Notebook 7 runs the same plugin).
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"),
        "NBCHECKPOINT_KEY_FILE": str(base / "key" / "signing.key"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        **extension_path(base),
    }
    env.pop("NBCHECKPOINT_STORE", None)
    port = _free_port()
    token = secrets.token_hex(16)
    log = base / "server.log"
    command = [
        sys.executable,
        "-m",
        app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        "--allow-root",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        # JupyterLab's server extension (loaded beside Notebook 7 too) serves news and updates.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workspaces}",
    ]
    if app == "notebook":
        command += [
            f"--JupyterNotebookApp.user_settings_dir={settings}",
            f"--JupyterNotebookApp.workspaces_dir={workspaces}",
        ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, root, env, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"{app} exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"{app} did not answer in 60 s:\n{server.log_tail()}")
                time.sleep(0.2)
        yield server
    finally:
        # SIGTERM to its process group: the server shuts its kernels down as it exits.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=5)
