"""nbcheckpoint: checkpoint long-running Jupyter cells while they run, and resume them after a crash."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from .capture.engine import safepoint

__all__ = ["__version__", "load_ipython_extension", "safepoint", "unload_ipython_extension"]


def load_ipython_extension(ip: object) -> None:
    """``%load_ext nbcheckpoint``."""
    from .ipython.extension import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: object) -> None:
    """``%unload_ext nbcheckpoint``."""
    from .ipython.extension import unload_ipython_extension as unload

    unload(ip)
