"""What the JupyterLab extension talks to: the kernel's status comm and the server's REST endpoint.

``nbcheckpoint.frontend`` is also the jupyter_server extension module (enabled by
``jupyter-config/jupyter_server_config.d/nbcheckpoint.json``). Nothing here is imported
eagerly: the kernel needs only :mod:`.comm`, the server only :mod:`.server` (which needs
jupyter_server, from ``pip install 'nbcheckpoint[lab]'``), so a kernel-only environment
imports the package without JupyterLab.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbcheckpoint.frontend"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Add ``/nbcheckpoint/api/checkpoints`` to the running server."""
    from .server import setup_handlers

    setup_handlers(server_app.web_app)
    server_app.log.info("nbcheckpoint: checkpoints API at /nbcheckpoint/api/checkpoints")
