"""The local chain's JSON HTTP API (FastAPI), served on 127.0.0.1 by ``crucible localnet``.

Reads: ``GET /genesis``, ``/health``, ``/block``, ``/block/{n}``, ``/nonce/{ss58}``,
``/balance/{ss58}``, ``/extrinsic/{digest}`` (the recorded result of an applied extrinsic),
``/subnets/{netuid}/hyperparameters``, ``/subnets/{netuid}/metagraph``,
``/subnets/{netuid}/commitments``, ``/metrics`` (Prometheus text: the node's metrics and this
app's requests by route, method and status with latency). Writes: ``POST /extrinsic`` (a signed envelope, see
``chain.local.extrinsic``; the same envelope sent again answers its recorded result with
``"duplicate": true``). Dev: ``POST /dev/step?blocks=N`` when blocks are manual.

Every error is ``{"code", "message"}`` JSON and bad input is a 4xx: path and query integers are
bounded to what the chain stores (netuid u16, block numbers 0..2^63 − 1), strings to 64
characters, request bodies to 256 KiB and 8 levels of nesting; unknown routes are 404 and wrong
methods 405. ``GET /health`` says whether the block clock is producing blocks
(``{"ok", "block", "failed_blocks", "total_failed_blocks", "last_error"}``); a failed block is a
503 on ``/dev/step`` and, on the clock, an error in the log, after which the clock keeps trying.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from crucible.chain.interface import ExtrinsicResult, Metagraph, Neuron
from crucible.chain.local.extrinsic import (
    DIGEST_PATTERN,
    MAX_EXTRINSIC_BYTES,
    MAX_INT,
    parse_envelope,
)
from crucible.chain.local.node import LocalNode
from crucible.observe.logs import log_event
from crucible.observe.metrics import CONTENT_TYPE, HttpMetrics, render
from crucible.protocol.digits import ascii_decimal
from crucible.protocol.errors import ChainError, ExtrinsicRejected

__all__ = ["BlockClock", "create_app", "extrinsic_result_to_json", "metagraph_to_json"]

log = logging.getLogger(__name__)

NetUid = Annotated[int, Path(ge=0, le=65535)]
BlockNumber = Annotated[int, Path(ge=0, le=MAX_INT)]
Ss58 = Annotated[str, Path(min_length=1, max_length=64)]
_STATUS = {
    "no_such_block": 404,
    "subnet_not_found": 404,
    "not_found": 404,
    "too_large": 413,
    "block_failed": 503,
}


def metagraph_to_json(mg: Metagraph) -> dict[str, Any]:
    # Built by hand: dataclasses.asdict deep-copies and FastAPI's encoder walks every value,
    # which together cost ~10x the read itself at 256 uids.
    def neuron(n: Neuron) -> dict[str, Any]:
        out = {f: getattr(n, f) for f in _NEURON_SCALARS}
        out["endpoint"] = (
            None
            if n.endpoint is None
            else {"ip": n.endpoint.ip, "port": n.endpoint.port, "protocol": n.endpoint.protocol}
        )
        out["commitment"] = (
            None
            if n.commitment is None
            else {"data": n.commitment.data, "block": n.commitment.block}
        )
        return out

    return {
        "netuid": mg.netuid,
        "block": mg.block,
        "block_hash": mg.block_hash,
        "owner_hotkey": mg.owner_hotkey,
        "hyperparameters": dataclasses.asdict(mg.hyperparameters),
        "neurons": [neuron(n) for n in mg.neurons],
        "weights": {str(k): {str(j): v for j, v in row.items()} for k, row in mg.weights.items()},
        "bonds": {str(k): {str(j): v for j, v in row.items()} for k, row in mg.bonds.items()},
    }


_NEURON_SCALARS = [
    f.name for f in dataclasses.fields(Neuron) if f.name not in ("endpoint", "commitment")
]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message})


def extrinsic_result_to_json(result: ExtrinsicResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "call": result.call,
        "block": result.block,
        "code": result.code,
        "message": result.message,
        "data": dict(result.data),
        "digest": result.digest,
        "duplicate": result.duplicate,
    }


class BlockClock:
    """Produces a block every ``block_time_s`` seconds on a daemon thread until stopped.

    A block that fails is the node's to record (logged, rolled back, counted in ``health()``);
    the clock carries on and tries again at the next tick, from the last good state.
    """

    def __init__(self, node: LocalNode, block_time_s: float) -> None:
        self._node, self._period = node, block_time_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="block-clock", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._node.produce_block()
            except ChainError:
                continue  # already logged and counted by the node; try again next tick

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChainError)
    async def chain_error(_: Request, exc: ChainError) -> JSONResponse:
        return _error(_STATUS.get(exc.code, 400), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:5]
        )
        return _error(400, "malformed", f"bad request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))


class _RequestMetrics:
    """Pure ASGI middleware: counts and times every answer by route template and status.

    (Not ``@app.middleware``: that wrapper reads the request differently and drops the
    connection on an early 413 whose body was never read.)"""

    def __init__(self, app: Any, http: HttpMetrics) -> None:
        self.app, self.http = app, http

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            matched = scope.get("route")  # the template, never the raw (untrusted) path
            route = getattr(matched, "path", None) or "unmatched"
            self.http.observe(route, scope["method"], status[0], seconds)
            level = logging.WARNING if status[0] >= 500 else logging.DEBUG
            log_event(log, "request", level=level, route=route, method=scope["method"],
                      status=status[0], latency_ms=round(seconds * 1000, 2))  # fmt: skip


def create_app(node: LocalNode, *, manual_blocks: bool) -> FastAPI:
    app = FastAPI(title="Crucible local chain", version="1")
    _install_error_handlers(app)
    http = HttpMetrics(CollectorRegistry())  # per app: a node may be served more than once
    app.add_middleware(_RequestMetrics, http=http)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(
            render(node.metrics.registry) + render(http.registry), media_type=CONTENT_TYPE
        )

    @app.get("/genesis")
    def genesis() -> dict[str, Any]:
        return {"genesis": node.genesis, "netuid": node.netuid}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return node.health().to_json()

    @app.get("/block")
    def head() -> dict[str, Any]:
        return node.header(node.block()).to_json()

    @app.get("/block/{number}")
    def block(number: BlockNumber) -> dict[str, Any]:
        return node.header(number).to_json()

    @app.get("/nonce/{ss58}")
    def nonce(ss58: Ss58) -> dict[str, Any]:
        return {"nonce": node.nonce(ss58)}

    @app.get("/balance/{ss58}")
    def balance(ss58: Ss58) -> dict[str, Any]:
        return {"balance_rao": node.balance(ss58)}

    @app.get("/extrinsic/{digest}")
    def recorded_extrinsic(digest: Annotated[str, Path(max_length=66)]) -> dict[str, Any]:
        if not DIGEST_PATTERN.match(digest):
            raise ChainError("a digest is 0x followed by 64 lowercase hex digits", code="malformed")
        result = node.extrinsic(digest)
        if result is None:
            raise ChainError(f"no applied extrinsic has digest {digest}", code="not_found")
        return extrinsic_result_to_json(result)

    @app.get("/subnets/{netuid}/hyperparameters")
    def hyperparameters(netuid: NetUid) -> dict[str, Any]:
        return dataclasses.asdict(node.hyperparameters(netuid))

    cache: dict[tuple[int, int | None], bytes] = {}
    cached_version = [-1]

    @app.get("/subnets/{netuid}/metagraph")
    def metagraph(
        netuid: NetUid, block: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None
    ) -> Response:
        # The serialised metagraph is reused until the chain's state changes; any change
        # empties the cache, so it holds at most the current head's entries.
        version = node.state_version
        if cached_version[0] != version:
            cache.clear()
            cached_version[0] = version
        body = cache.get((netuid, block))
        if body is None:
            body = json.dumps(metagraph_to_json(node.metagraph(netuid, block))).encode()
            cache[(netuid, block)] = body
        return Response(content=body, media_type="application/json")

    @app.get("/subnets/{netuid}/commitments")
    def commitments(netuid: NetUid) -> dict[str, Any]:
        return {hk: dataclasses.asdict(c) for hk, c in node.commitments(netuid).items()}

    @app.post("/extrinsic")
    async def extrinsic(request: Request) -> JSONResponse:
        raw = request.headers.get("content-length")
        declared = ascii_decimal(raw, max_digits=12)
        if raw is not None and (declared is None or declared > MAX_EXTRINSIC_BYTES):
            return _error(413, "too_large", f"an extrinsic is at most {MAX_EXTRINSIC_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_EXTRINSIC_BYTES:
                return _error(
                    413, "too_large", f"an extrinsic is at most {MAX_EXTRINSIC_BYTES} bytes"
                )
        try:
            ext = parse_envelope(bytes(body))
        except ExtrinsicRejected as exc:
            return _error(_STATUS.get(exc.code, 400), exc.code, exc.message)
        result = node.submit_extrinsic(ext)
        return JSONResponse(status_code=200, content=extrinsic_result_to_json(result))

    @app.post("/dev/step")
    def dev_step(blocks: Annotated[int, Query(ge=1, le=10_000)] = 1) -> JSONResponse:
        if not manual_blocks:
            return _error(
                403, "clock_running", "this node produces blocks on a clock; /dev/step is off"
            )
        return JSONResponse({"block": node.step(blocks)})

    return app
