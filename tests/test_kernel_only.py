"""The kernel side never imports JupyterLab or jupyter_server, and the server side says what to install.

The fast guard beside ``test_wheel_install.py`` (which installs the wheel alone in a fresh
environment): each check runs in a new interpreter, so nothing imported by other tests counts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_loading_the_extension_imports_no_jupyterlab_or_server() -> None:
    result = _python(
        """
        import sys
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "nbcheckpoint")
        import nbcheckpoint, nbcheckpoint.widgets, nbcheckpoint.frontend, nbcheckpoint.cli
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("jupyterlab", "jupyter_server"))
        print("LOADED", loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def test_the_server_endpoint_without_jupyter_server_says_what_to_install() -> None:
    # None in sys.modules makes `import jupyter_server...` raise ImportError, as if missing.
    result = _python(
        """
        import sys
        sys.modules["jupyter_server"] = None
        import nbcheckpoint.frontend
        print("POINTS", nbcheckpoint.frontend._jupyter_server_extension_points())
        import nbcheckpoint.frontend.server
        """
    )
    assert "POINTS [{'module': 'nbcheckpoint.frontend'}]" in result.stdout, result.stderr
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: The nbcheckpoint server endpoint needs jupyter_server"), (
        last
    )
    assert "pip install 'nbcheckpoint[lab]'" in last, last
