"""A validator's published bundles over HTTP: public, keyless, rate-limited, read-only.

``GET /v1/bundles/latest`` and ``GET /v1/bundles/<bundle_id>`` answer the signed bundle's JSON
exactly as stored; anyone (``crucible audit`` holds no keys) may call them, each client address
within a token bucket. No request is signed and no answer needs to be: a bundle carries its own
signature and its id is anchored on chain, so the reader checks what it gets either way.
``GET /metrics`` answers the validator's Prometheus metrics (``observe.metrics``) when a registry
is given: public and cheap, and nothing in it is secret.

For collab competitions, when the validator's model store is given, it also serves what miners
and other validators on other machines need to follow it (``crucible.collab.peer_sync``):
``GET /v1/objects/<id>/checkpoint.safetensors`` and ``…/payload.safetensors`` (the checkpoints it
aggregated and the payloads it fetched, by content hash) and ``GET /v1/collab/pointers/<competition>``
(its newest signed checkpoint pointer). Each is checked by its reader like a bundle: the hash, or
the signature.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry

from crucible.collab.checkpoint import CHECKPOINT_FILE
from crucible.collab.payload_store import PAYLOAD_FILE
from crucible.observe.metrics import CONTENT_TYPE, render
from crucible.protocol.errors import StoreError
from crucible.server.objects import ClientLimit, add_object_routes, limit_per_client
from crucible.server.objects import error_response as _error
from crucible.store.documents import BUNDLES, DocumentStore
from crucible.store.local import LocalStore
from crucible.store.peer import BUNDLES_PATH, POINTERS_PATH

__all__ = ["BUNDLES_PATH", "SERVED_OBJECT_FILES", "build_bundle_server"]

KIND = BUNDLES
SERVED_OBJECT_FILES = (CHECKPOINT_FILE, PAYLOAD_FILE)
_ID = re.compile(r"^[0-9a-f]{64}$")
_COMPETITION = re.compile(r"^[a-z][a-z0-9_]{0,15}@[1-9][0-9]{0,5}$")


def build_bundle_server(
    store: DocumentStore,
    latest_id: Callable[[], str | None],
    *,
    limit: ClientLimit = ClientLimit(),
    metrics: CollectorRegistry | None = None,
    objects: LocalStore | None = None,
    latest_pointer: Callable[[str], bytes | None] | None = None,
) -> FastAPI:
    """``latest_id`` names this validator's newest bundle (a store may hold other validators');
    ``latest_pointer(competition)`` its newest signed checkpoint pointer's bytes."""
    app = FastAPI(
        title="crucible-validator bundles", docs_url=None, redoc_url=None, openapi_url=None
    )
    limit_per_client(app, limit)

    def answer(bundle_id: str | None) -> Response:
        if bundle_id is None:
            return _error(404, "no_bundle", "this validator has published no bundle yet")
        try:
            raw = store.get(KIND, bundle_id)
        except StoreError as exc:
            return _error(404 if exc.code == "not_found" else 400, exc.code, exc.message)
        return Response(content=raw, media_type="application/json")

    @app.get(BUNDLES_PATH + "/latest")
    def latest() -> Response:
        return answer(latest_id())

    @app.get(BUNDLES_PATH + "/{bundle_id}")
    def by_id(bundle_id: str) -> Response:
        if not _ID.match(bundle_id):
            return _error(400, "bad_ref", "a bundle id is 64 lowercase hex digits")
        return answer(bundle_id)

    if objects is not None:
        add_object_routes(app, objects, SERVED_OBJECT_FILES)
    if latest_pointer is not None:
        _add_pointer_route(app, latest_pointer)
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


def _add_pointer_route(app: FastAPI, latest_pointer: Callable[[str], bytes | None]) -> None:
    @app.get(POINTERS_PATH + "/{competition}")
    def pointer(competition: str) -> Response:
        if not _COMPETITION.match(competition):
            return _error(400, "bad_ref", "a competition is id@version, as in collab@2")
        raw = latest_pointer(competition)
        if raw is None:
            return _error(404, "no_pointer", f"this validator signed no {competition} pointer")
        return Response(content=raw, media_type="application/json")
