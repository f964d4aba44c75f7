"""Serving a ``LocalStore``'s one-file objects over HTTP: public, keyless, read-only, bounded.

``GET /v1/objects/<content hash>/<file name>`` answers the file's bytes when the store holds
that object and the name is one the server was told to serve (a collab miner: its payloads; a
validator: payloads and checkpoints). No answer needs a signature: an object is named by its
content hash and every reader re-hashes what it gets (``crucible.store.peer.pull_object``), so a
served object is worth exactly as much as one read from a shared disk. Anything else is a
JSON error with a code (``bad_ref``, ``unexpected_file``, ``not_found``, ``rate_limited``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from crucible.protocol.errors import ConfigError
from crucible.server.errors import RateLimited
from crucible.server.limits import RateLimiter
from crucible.store.local import LocalStore
from crucible.store.peer import OBJECTS_PATH

__all__ = [
    "ClientLimit",
    "add_object_routes",
    "build_object_server",
    "error_response",
    "limit_per_client",
]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def add_object_routes(app: FastAPI, store: LocalStore, files: Collection[str]) -> None:
    """``GET /v1/objects/<digest>/<name>`` for ``name`` in ``files``."""
    served = frozenset(files)

    @app.get(OBJECTS_PATH + "/{digest}/{name}")
    def object_file(digest: str, name: str) -> Response:
        if not _DIGEST.match(digest):
            return error_response(400, "bad_ref", "an object id is 64 lowercase hex digits")
        if name not in served:
            return error_response(
                404, "unexpected_file", f"this endpoint serves only {sorted(served)}"
            )
        path = store.objects / digest / name
        if path.is_symlink() or not path.is_file():
            return error_response(404, "not_found", f"no object {digest[:16]}… here")
        return FileResponse(path, media_type="application/octet-stream")


@dataclass(frozen=True)
class ClientLimit:
    """What one client address may ask of a keyless endpoint: ``rate_per_s`` requests a second
    on average, ``burst`` at once. Clients behind one address (a NAT) share it."""

    rate_per_s: float = 5.0
    burst: int = 20

    def __post_init__(self) -> None:
        rate = self.rate_per_s
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise ConfigError(f"a client's request rate must be a number, got {rate!r}")
        if not 0 < rate <= 1e6:
            raise ConfigError(
                f"a client's request rate must be in (0, 1e6] per second, got {rate:g}"
            )
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or not 1 <= self.burst <= 10**6:  # fmt: skip
            raise ConfigError(
                f"a client's burst must be an integer in [1, 1e6], got {self.burst!r}"
            )


def limit_per_client(app: FastAPI, limit: ClientLimit) -> None:
    """A token bucket per client address for every route of ``app`` (429 past it)."""
    limiter = RateLimiter(limit.rate_per_s, limit.burst, max_keys=10_000)

    @app.middleware("http")
    async def per_client_limit(request: Request, call_next):
        try:
            limiter.acquire(request.client.host if request.client else "?")
        except RateLimited as exc:
            return error_response(429, exc.code, str(exc))
        return await call_next(request)


def build_object_server(
    store: LocalStore, files: Collection[str], *, limit: ClientLimit = ClientLimit()
) -> FastAPI:
    """A server of ``store``'s objects alone (what a collab miner runs), with ``/health``."""
    app = FastAPI(title="crucible objects", docs_url=None, redoc_url=None, openapi_url=None)
    limit_per_client(app, limit)
    add_object_routes(app, store, files)

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.exception_handler(404)
    async def not_found(_: Request, __: Exception) -> JSONResponse:
        return error_response(404, "not_found", "no such route")

    return app
