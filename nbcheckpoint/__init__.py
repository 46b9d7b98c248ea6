"""nbcheckpoint: checkpoint long-running Jupyter cells while they run, and resume them after a crash."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from typing import Any


def __getattr__(name: str) -> Any:
    # ``safepoint`` on first use: importing the package (the pager process, the command
    # line) then does not load the capture engine.
    if name == "safepoint":
        from .capture.engine import safepoint

        return safepoint
    raise AttributeError(f"module 'nbcheckpoint' has no attribute {name!r}")


__all__ = [
    "__version__",
    "load_ipython_extension",
    "panel",
    "safepoint",
    "unload_ipython_extension",
]


def load_ipython_extension(ip: object) -> None:
    """``%load_ext nbcheckpoint``."""
    # The import makes some 40,000 objects in a kernel that holds hundreds of thousands:
    # with the collector on, it runs a full collection, 40 ms here, that frees nothing.
    from .gcpause import paused

    with paused():
        from .ipython.extension import load_ipython_extension as load

        load(ip)


def unload_ipython_extension(ip: object) -> None:
    """``%unload_ext nbcheckpoint``."""
    from .ipython.extension import unload_ipython_extension as unload

    unload(ip)


def panel(store: str | None = None) -> object:
    """The checkpoint panel of this notebook, as a widget; loads the extension if needed.

    Jupyter shows it when it is the cell's last expression, as ``%checkpoint panel`` does.

    Examples
    --------
    >>> import nbcheckpoint
    >>> nbcheckpoint.panel()  # doctest: +SKIP
    """
    # The one place outside the magics that finds the shell itself: a convenience for users.
    from IPython import get_ipython

    from .ipython.extension import _STATE
    from .widgets import CheckpointPanel

    ip = get_ipython()
    if ip is None:
        raise RuntimeError("nbcheckpoint.panel() runs inside IPython or a Jupyter kernel.")
    if id(ip) not in _STATE:
        ip.extension_manager.load_extension("nbcheckpoint")
    return CheckpointPanel.from_magics(_STATE[id(ip)]["magics"], store)
