"""A validator's published bundles over HTTP: public, keyless, rate-limited, read-only.

``GET /v1/bundles/latest`` and ``GET /v1/bundles/<bundle_id>`` answer the signed bundle's JSON
exactly as stored; anyone (``crucible audit`` holds no keys) may call them, each client address
within a token bucket. No request is signed and no answer needs to be: a bundle carries its own
signature and its id is anchored on chain, so the reader checks what it gets either way.
``GET /metrics`` answers the validator's Prometheus metrics (``observe.metrics``) when a registry
is given: public and cheap, and nothing in it is secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry

from crucible.observe.metrics import CONTENT_TYPE, render
from crucible.protocol.errors import StoreError
from crucible.server.errors import RateLimited
from crucible.server.limits import RateLimiter
from crucible.store.documents import BUNDLES, DocumentStore

__all__ = ["BUNDLES_PATH", "build_bundle_server"]

BUNDLES_PATH = "/v1/bundles"
KIND = BUNDLES
_ID = re.compile(r"^[0-9a-f]{64}$")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def build_bundle_server(
    store: DocumentStore,
    latest_id: Callable[[], str | None],
    *,
    rate_per_s: float = 5.0,
    burst: int = 20,
    metrics: CollectorRegistry | None = None,
) -> FastAPI:
    """``latest_id`` names this validator's newest bundle (a store may hold other validators')."""
    app = FastAPI(
        title="crucible-validator bundles", docs_url=None, redoc_url=None, openapi_url=None
    )
    limiter = RateLimiter(rate_per_s, burst, max_keys=10_000)

    def answer(bundle_id: str | None) -> Response:
        if bundle_id is None:
            return _error(404, "no_bundle", "this validator has published no bundle yet")
        try:
            raw = store.get(KIND, bundle_id)
        except StoreError as exc:
            return _error(404 if exc.code == "not_found" else 400, exc.code, exc.message)
        return Response(content=raw, media_type="application/json")

    @app.middleware("http")
    async def per_client_limit(request: Request, call_next):
        try:
            limiter.acquire(request.client.host if request.client else "?")
        except RateLimited as exc:
            return _error(429, exc.code, str(exc))
        return await call_next(request)

    @app.get(BUNDLES_PATH + "/latest")
    def latest() -> Response:
        return answer(latest_id())

    @app.get(BUNDLES_PATH + "/{bundle_id}")
    def by_id(bundle_id: str) -> Response:
        if not _ID.match(bundle_id):
            return _error(400, "bad_ref", "a bundle id is 64 lowercase hex digits")
        return answer(bundle_id)

    if metrics is not None:

        @app.get("/metrics")
        def prometheus() -> Response:
            return Response(content=render(metrics), media_type=CONTENT_TYPE)

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"ok": True, "latest": latest_id()}

    @app.exception_handler(404)
    async def not_found(_: Request, __: Exception) -> JSONResponse:
        return _error(404, "not_found", "no such route")

    return app
