"""The HTTP server toolkit every Crucible neuron serves with (FastAPI + uvicorn).

``NeuronServer`` (app.py) runs each route through: body limit → btauth/1 → registration and
permit/stake (``policy.py``, ``metagraph_cache.py``) → per-hotkey limits (``limits.py``) → strict
schema → handler under a timeout; every answer is signed. Handlers that run a model go through
``capacity.py`` (who is admitted next: validators, then registered callers by stake; one small
global budget for unregistered ones) and ``worker.py`` (the work in a thread, stoppable, holding
its slot until it really ends). ``errors.py`` maps error codes to HTTP statuses; ``runner.py``
starts the app (background thread for tests, foreground for neurons); ``testing.py`` is a trivial
echo app on the real toolkit.
"""

from crucible.server.app import CallContext, NeuronServer
from crucible.server.capacity import Caller, Capacity, CapacityConfig, Grant, Tier
from crucible.server.errors import (
    STATUS_BY_CODE,
    HandlerTimeout,
    Overloaded,
    RateLimited,
    WorkCancelled,
    status_for,
)
from crucible.server.policy import Access, RoutePolicy
from crucible.server.runner import RunningServer, run_in_thread, serve
from crucible.server.worker import run_admitted

__all__ = [
    "STATUS_BY_CODE",
    "Access",
    "CallContext",
    "Caller",
    "Capacity",
    "CapacityConfig",
    "Grant",
    "HandlerTimeout",
    "NeuronServer",
    "Overloaded",
    "RateLimited",
    "RoutePolicy",
    "RunningServer",
    "Tier",
    "WorkCancelled",
    "run_admitted",
    "run_in_thread",
    "serve",
    "status_for",
]
