"""The ipywidgets checkpoint panel (``%checkpoint panel``, ``nbcheckpoint.panel()``)."""

from .chart import Point, history_svg
from .panel import CheckpointPanel

__all__ = ["CheckpointPanel", "Point", "history_svg"]
