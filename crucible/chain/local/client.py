"""``LocalChain``: the ``Chain`` interface over a local node's HTTP API (sync, keep-alive).

One persistent ``http.client`` connection per thread; every call has a timeout; a connection that
dropped is re-opened once before the call fails with ``ChainUnavailable``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from crucible.chain.interface import (
    Call,
    Commitment,
    Endpoint,
    ExtrinsicResult,
    Hyperparameters,
    Metagraph,
    Neuron,
    Signer,
)
from crucible.chain.local.extrinsic import SignedExtrinsic, sign_call
from crucible.protocol.errors import ChainError, ChainUnavailable

__all__ = ["DEFAULT_LOCALNET_URL", "LocalChain"]

DEFAULT_LOCALNET_URL = "http://127.0.0.1:9946"


class LocalChain:
    def __init__(self, url: str = DEFAULT_LOCALNET_URL, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ChainError(
                f"a local chain URL looks like http://127.0.0.1:9946, not {url!r}", code="bad_url"
            )
        self.url = url
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._genesis: str | None = None
        self._nonces: dict[str, int] = {}
        self._nonce_lock = threading.Lock()

    # ---- transport ---------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 1:
                    raise ChainUnavailable(
                        f"local chain at {self.url} is unreachable: {exc}",
                        fix="start it with `crucible localnet` or pass --chain-endpoint",
                    ) from exc
        try:
            decoded = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ChainError(
                f"the node answered {response.status} with non-JSON", code="bad_response"
            ) from exc
        if response.status >= 400:
            raise ChainError(
                decoded.get("message", str(decoded)), code=decoded.get("code", "chain_error")
            )
        return decoded

    # ---- Chain interface ------------------------------------------------------------------------
    @property
    def genesis(self) -> str:
        if self._genesis is None:
            self._genesis = self._request("GET", "/genesis")["genesis"]
        return self._genesis

    def block(self) -> int:
        return self._request("GET", "/block")["number"]

    def header(self, block: int) -> dict[str, Any]:
        return self._request("GET", f"/block/{block}")

    def block_hash(self, block: int) -> str:
        return self.header(block)["hash"]

    def wait_for_block(self, block: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while (current := self.block()) < block:
            if time.monotonic() >= deadline:
                raise ChainUnavailable(
                    f"block {block} not reached within {timeout_s:.1f} s (head {current})",
                    code="timeout",
                )
            time.sleep(0.05)
        return current

    def step(self, blocks: int = 1) -> int:
        """Dev only: produce blocks on a node started with manual blocks (``--block-time 0``)."""
        return self._request("POST", f"/dev/step?blocks={blocks}")["block"]

    def hyperparameters(self, netuid: int) -> Hyperparameters:
        return Hyperparameters(**self._request("GET", f"/subnets/{netuid}/hyperparameters"))

    def metagraph(self, netuid: int, block: int | None = None) -> Metagraph:
        query = "" if block is None else f"?block={block}"
        raw = self._request("GET", f"/subnets/{netuid}/metagraph{query}")
        neurons = []
        for n in raw["neurons"]:
            endpoint, commitment = n.pop("endpoint"), n.pop("commitment")
            neurons.append(
                Neuron(
                    **n,
                    endpoint=Endpoint(**endpoint) if endpoint else None,
                    commitment=Commitment(**commitment) if commitment else None,
                )
            )
        return Metagraph(
            netuid=raw["netuid"],
            block=raw["block"],
            block_hash=raw["block_hash"],
            owner_hotkey=raw["owner_hotkey"],
            hyperparameters=Hyperparameters(**raw["hyperparameters"]),
            neurons=tuple(neurons),
            weights={
                int(k): {int(j): v for j, v in row.items()} for k, row in raw["weights"].items()
            },
            bonds={int(k): {int(j): v for j, v in row.items()} for k, row in raw["bonds"].items()},
        )

    def commitments(self, netuid: int) -> dict[str, Commitment]:
        raw = self._request("GET", f"/subnets/{netuid}/commitments")
        return {hk: Commitment(**c) for hk, c in raw.items()}

    def balance(self, coldkey: str) -> int:
        return self._request("GET", f"/balance/{coldkey}")["balance_rao"]

    def nonce(self, ss58: str) -> int:
        return self._request("GET", f"/nonce/{ss58}")["nonce"]

    def submit_extrinsic(self, ext: SignedExtrinsic) -> ExtrinsicResult:
        raw = self._request("POST", "/extrinsic", ext.to_json())
        return ExtrinsicResult(
            ok=raw["ok"],
            call=raw["call"],
            block=raw["block"],
            code=raw["code"],
            message=raw["message"],
            data=raw["data"],
        )

    def submit(self, call: Call, signer: Signer) -> ExtrinsicResult:
        address = signer.ss58_address
        for attempt in (0, 1):
            with self._nonce_lock:
                nonce = self._nonces.get(address)
                if nonce is None or attempt == 1:
                    nonce = self.nonce(address)
                self._nonces[address] = nonce + 1
            result = self.submit_extrinsic(
                sign_call(call, signer, nonce=nonce, genesis=self.genesis)
            )
            if result.code != "bad_nonce":
                if not result.ok:
                    with self._nonce_lock:  # a refused extrinsic does not consume its nonce
                        self._nonces.pop(address, None)
                return result
        return result

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
