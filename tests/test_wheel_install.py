"""The built wheel works in a kernel-only environment, and with ``[lab]`` gives an enabled extension without Node.js.

``python -m build`` makes the sdist and then the wheel from that sdist, with no Node.js
on the PATH: it works only because the sdist carries the built extension. The wheel
goes into a new virtual environment, again with no Node.js on the PATH: first alone, as on
a remote or cluster kernel, where JupyterLab must not be installed and a real kernel must
run ``%load_ext nbcheckpoint`` and a ``%%checkpoint`` cell; then with the ``[lab]`` extra,
after which ``jupyter labextension list`` and ``jupyter server extension list`` must show
both halves enabled and OK.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "nbcheckpoint" / "labextension"
NAME = "nbcheckpoint-labextension"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Run by the fresh venv's python: a real kernel (ipykernel's "python3" spec, i.e. that venv)
# loads the extension and checkpoints a loop; then the server half says what to install.
KERNEL_SCRIPT = r"""
import importlib.util, sys
from jupyter_client.manager import start_new_kernel

missing = [m for m in ("jupyterlab", "jupyter_server") if importlib.util.find_spec(m)]
assert not missing, f"installed in a kernel-only environment: {missing}"
try:
    import nbcheckpoint.frontend.server
except ImportError as e:
    print("SERVER-IMPORT:", e)
else:
    raise AssertionError("the server endpoint imported without jupyter_server")

km, kc = start_new_kernel(kernel_name="python3")
try:
    def run(code):
        out = []
        def hook(msg):
            c = msg["content"]
            out.append(c.get("text") or c.get("data", {}).get("text/plain", ""))
            if msg["msg_type"] == "error":
                out.append("\n".join(c["traceback"]))
        reply = kc.execute_interactive(code, timeout=180, output_hook=hook)
        text = "".join(out)
        assert reply["content"]["status"] == "ok", text
        return text

    run("%load_ext nbcheckpoint")
    run("%%checkpoint --every 0.2s\nimport time\ntotal = 0\nfor i in range(30):\n"
        "    total += i\n    time.sleep(0.05)")
    print("TOTAL:", run("print(total)").strip())
    print("LIST:", run("%checkpoint list"))
finally:
    km.shutdown_kernel(now=True)
"""


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-6000:]}"
    return output


def _without_node(bindir: Path, tmp_path: Path) -> dict[str, str]:
    """The environment with only ``bindir`` on the PATH, and Jupyter's user folders in tmp."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PATH"] = str(bindir)
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter-config")
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter-data")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "jupyter-runtime")
    assert shutil.which("node", path=env["PATH"]) is None, "node is still on the PATH"
    return env


def _ensure_built() -> None:
    """The extension is built by ``pip install -e .``; build it here if this checkout has not."""
    if (BUILT / "static" / "style.js").exists():
        return
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    jlpm = shutil.which("jlpm", path=path)
    if jlpm is None or shutil.which("node", path=path) is None:
        pytest.fail("the extension is not built and jlpm/node are missing to build it")
    env = {**os.environ, "PATH": path}
    _run([jlpm, "install"], env, ROOT / "labextension")
    _run([jlpm, "build:prod"], env, ROOT / "labextension")


def test_wheel_gives_an_enabled_extension_without_node(tmp_path: Path) -> None:
    _ensure_built()
    dist = tmp_path / "dist"
    # Build tools only from the isolated build environments: the bare interpreter's folder
    # (this venv) is enough to find python, and it holds no node.
    build_env = _without_node(Path(sys.executable).parent, tmp_path)
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], build_env, tmp_path)

    (sdist,) = dist.glob("nbcheckpoint-*.tar.gz")
    (wheel,) = dist.glob("nbcheckpoint-*.whl")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "nbcheckpoint/labextension/static/style.js" in names
    assert "nbcheckpoint/labextension/package.json" in names
    assert "labextension/src/index.ts" in names and "labextension/package.json" in names
    assert "jupyter-config/jupyter_server_config.d/nbcheckpoint.json" in names
    assert not [n for n in names if "node_modules" in n or n.startswith("labextension/.yarn/")]
    assert sdist.stat().st_size < 5_000_000, f"sdist is {sdist.stat().st_size} bytes"

    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    share = f"{data}/data/share/jupyter/labextensions/{NAME}"
    for name in ("package.json", "install.json", "static/style.js"):
        assert f"{share}/{name}" in names, name
    assert f"{share}/schemas/{NAME}/plugin.json" in names
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/nbcheckpoint.json" in names
    assert "nbcheckpoint/frontend/server.py" in names

    # A fresh environment, made from the base interpreter, with nothing but this wheel.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], build_env, tmp_path)
    env = _without_node(venv / "bin", tmp_path)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--quiet", str(wheel)], env, tmp_path, timeout=1200)

    # Kernel-only: no JupyterLab, and the kernel side works.
    kenv = {**env, "NBCHECKPOINT_STORE": str(tmp_path / "store")}
    out = _run([python, "-c", KERNEL_SCRIPT], kenv, tmp_path, timeout=600)
    assert "pip install 'nbcheckpoint[lab]'" in out, out
    assert "TOTAL: 435" in out, out
    listed = out.split("LIST:", 1)[1]
    assert re.search(r"#1\b", listed), out
    assert any((tmp_path / "store").rglob("*")), "nothing was written to the store"

    # JupyterLab users: the [lab] extra brings JupyterLab, which finds the prebuilt extension.
    _run([python, "-m", "pip", "install", "--quiet", f"{wheel}[lab]"], env, tmp_path, timeout=1200)

    labext = _run([str(venv / "bin" / "jupyter"), "labextension", "list"], env, tmp_path)
    line = next((ln for ln in labext.splitlines() if NAME in ln), "")
    assert re.search(rf"{NAME} v\S+ enabled OK \(python, nbcheckpoint\)", line), labext
    assert str(venv) in labext, labext

    server = _run([str(venv / "bin" / "jupyter"), "server", "extension", "list"], env, tmp_path)
    assert re.search(r"nbcheckpoint\.frontend\s+enabled", server), server
    assert re.search(r"nbcheckpoint\.frontend\s+OK", server), server
