"""``crucible dashboard``: a read-only web page of the subnet, refreshed live.

``collect.py`` builds a ``Snapshot`` (frozen dataclasses) from a ``Chain`` and the validators'
bundles, audited with the very code ``crucible audit`` runs, and keeps a bounded per-instance
``History`` of what it polled (each model's loss per round, each uid's incentive per epoch);
``svg.py`` draws line plots as inline SVG; ``page.py`` renders a snapshot as escaped HTML;
``app.py`` serves it (``/``, ``/fragment``, ``/api/snapshot``) and polls the chain in one owned
background task. No keys, no writes, no external assets.
"""

from crucible.dashboard.app import Dashboard, DashboardConfig, build_app
from crucible.dashboard.collect import History, Snapshot, collect, epoch_blocks
from crucible.dashboard.page import render_live, render_page
from crucible.dashboard.svg import line_plot

__all__ = [
    "Dashboard",
    "DashboardConfig",
    "History",
    "Snapshot",
    "build_app",
    "collect",
    "epoch_blocks",
    "line_plot",
    "render_live",
    "render_page",
]
