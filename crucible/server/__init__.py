"""The HTTP server toolkit every Crucible neuron serves with (FastAPI + uvicorn).

``NeuronServer`` (app.py) runs each route through: body limit → btauth/1 → registration and
permit/stake (``policy.py``, ``metagraph_cache.py``) → per-hotkey limits (``limits.py``) → strict
schema → handler under a timeout; every answer is signed. ``errors.py`` maps error codes to HTTP
statuses; ``runner.py`` starts the app (background thread for tests, foreground for neurons);
``testing.py`` is a trivial echo app on the real toolkit.
"""

from crucible.server.app import CallContext, NeuronServer
from crucible.server.errors import STATUS_BY_CODE, HandlerTimeout, RateLimited, status_for
from crucible.server.policy import Access, RoutePolicy
from crucible.server.runner import RunningServer, run_in_thread, serve

__all__ = [
    "STATUS_BY_CODE",
    "Access",
    "CallContext",
    "HandlerTimeout",
    "NeuronServer",
    "RateLimited",
    "RoutePolicy",
    "RunningServer",
    "run_in_thread",
    "serve",
    "status_for",
]
