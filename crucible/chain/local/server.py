"""The local chain's JSON HTTP API (FastAPI), served on 127.0.0.1 by ``crucible localnet``.

Reads: ``GET /genesis``, ``/block``, ``/block/{n}``, ``/nonce/{ss58}``, ``/balance/{ss58}``,
``/subnets/{netuid}/hyperparameters``, ``/subnets/{netuid}/metagraph``,
``/subnets/{netuid}/commitments``. Writes: ``POST /extrinsic`` (a signed envelope, see
``chain.local.extrinsic``). Dev: ``POST /dev/step?blocks=N`` when blocks are manual. Every error
is ``{"code", "message"}`` JSON; a bad request never takes the node down.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from crucible.chain.interface import Metagraph, Neuron
from crucible.chain.local.extrinsic import MAX_EXTRINSIC_BYTES, SignedExtrinsic
from crucible.chain.local.node import LocalNode
from crucible.protocol.errors import ChainError, ExtrinsicRejected

__all__ = ["BlockClock", "create_app", "metagraph_to_json"]


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


class BlockClock:
    """Produces a block every ``block_time_s`` seconds on a daemon thread until stopped."""

    def __init__(self, node: LocalNode, block_time_s: float) -> None:
        self._node, self._period = node, block_time_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="block-clock", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._node.produce_block()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def create_app(node: LocalNode, *, manual_blocks: bool) -> FastAPI:
    app = FastAPI(title="Crucible local chain", version="1")

    @app.exception_handler(ChainError)
    async def chain_error(_: Request, exc: ChainError) -> JSONResponse:
        status = 404 if exc.code in ("no_such_block", "subnet_not_found") else 400
        return _error(status, exc.code, exc.message)

    @app.get("/genesis")
    def genesis() -> dict[str, Any]:
        return {"genesis": node.genesis, "netuid": node.netuid}

    @app.get("/block")
    def head() -> dict[str, Any]:
        return node.header(node.block()).to_json()

    @app.get("/block/{number}")
    def block(number: int) -> dict[str, Any]:
        return node.header(number).to_json()

    @app.get("/nonce/{ss58}")
    def nonce(ss58: str) -> dict[str, Any]:
        return {"nonce": node.nonce(ss58)}

    @app.get("/balance/{ss58}")
    def balance(ss58: str) -> dict[str, Any]:
        return {"balance_rao": node.balance(ss58)}

    @app.get("/subnets/{netuid}/hyperparameters")
    def hyperparameters(netuid: int) -> dict[str, Any]:
        return dataclasses.asdict(node.hyperparameters(netuid))

    cache: dict[tuple[int, int | None], tuple[int, bytes]] = {}

    @app.get("/subnets/{netuid}/metagraph")
    def metagraph(netuid: int, block: int | None = None) -> Response:
        # The serialised metagraph is reused until the chain's state changes.
        version = node.state_version
        hit = cache.get((netuid, block))
        if hit is None or hit[0] != version:
            body = json.dumps(metagraph_to_json(node.metagraph(netuid, block))).encode()
            hit = cache[(netuid, block)] = (version, body)
        return Response(content=hit[1], media_type="application/json")

    @app.get("/subnets/{netuid}/commitments")
    def commitments(netuid: int) -> dict[str, Any]:
        return {hk: dataclasses.asdict(c) for hk, c in node.commitments(netuid).items()}

    @app.post("/extrinsic")
    async def extrinsic(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_EXTRINSIC_BYTES):
            return _error(413, "too_large", f"an extrinsic is at most {MAX_EXTRINSIC_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_EXTRINSIC_BYTES:
                return _error(
                    413, "too_large", f"an extrinsic is at most {MAX_EXTRINSIC_BYTES} bytes"
                )
        try:
            ext = SignedExtrinsic.from_json(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "malformed", "the body is not JSON")
        except ExtrinsicRejected as exc:
            return _error(400, exc.code, exc.message)
        result = node.submit_extrinsic(ext)
        return JSONResponse(
            status_code=200,
            content={
                "ok": result.ok,
                "call": result.call,
                "block": result.block,
                "code": result.code,
                "message": result.message,
                "data": dict(result.data),
            },
        )

    @app.post("/dev/step")
    def dev_step(blocks: int = 1) -> JSONResponse:
        if not manual_blocks:
            return _error(
                403, "clock_running", "this node produces blocks on a clock; /dev/step is off"
            )
        if not 1 <= blocks <= 10_000:
            return _error(400, "malformed", "blocks must be in [1, 10000]")
        return JSONResponse({"block": node.step(blocks)})

    return app
