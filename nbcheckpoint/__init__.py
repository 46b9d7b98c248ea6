"""nbcheckpoint: checkpoint long-running Jupyter cells while they run, and resume them after a crash."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
