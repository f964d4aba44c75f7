"""``LocalChain``: the ``Chain`` interface over a local node's HTTP API (sync, keep-alive).

One persistent ``http.client`` connection per thread; every call has a timeout; a connection that
dropped is re-opened once before the call fails with ``ChainUnavailable``.

Extrinsics are sent idempotently. After an ambiguous failure (the connection dropped after the
request went out, or the reply timed out) the client re-sends the *same* signed envelope, a
bounded number of times with backoff; the node recognises an envelope it already applied (by its
digest) and answers the recorded result (``duplicate=True``), so a lost reply never makes a call
run twice. The client re-signs with a fresh nonce only when the node has answered that this
envelope was not applied (``bad_nonce``). If every re-send fails, ``ChainUnavailable`` names the
digest to look up with ``extrinsic(digest)`` before signing anything again.
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
EXTRINSIC_ATTEMPTS = 4  # sends of one signed envelope: the first and three re-sends
EXTRINSIC_BACKOFF_S = 0.1  # before the second re-send; doubles after each


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

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        attempts: int = 2,
        backoff_s: float = 0.0,
    ) -> Any:
        """One call, sending the same bytes up to ``attempts`` times while the connection fails:
        the first re-send at once (a stale keep-alive), later ones after a doubling backoff."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        delay = backoff_s
        for attempt in range(attempts):
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == attempts - 1:
                    raise ChainUnavailable(
                        f"local chain at {self.url} is unreachable: {exc}",
                        fix="start it with `crucible localnet` or pass --chain-endpoint",
                    ) from exc
                if attempt > 0 and delay > 0:
                    time.sleep(delay)
                    delay *= 2
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

    @staticmethod
    def _result(raw: dict[str, Any]) -> ExtrinsicResult:
        return ExtrinsicResult(
            ok=raw["ok"],
            call=raw["call"],
            block=raw["block"],
            code=raw["code"],
            message=raw["message"],
            data=raw["data"],
            digest=raw.get("digest"),
            duplicate=bool(raw.get("duplicate", False)),
        )

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

    def health(self) -> dict[str, Any]:
        """The node's ``GET /health``: is the block clock producing blocks, and the last error."""
        return self._request("GET", "/health")

    def extrinsic(self, digest: str) -> ExtrinsicResult | None:
        """The recorded result of the applied extrinsic ``digest``, or None if it was not applied."""
        try:
            return self._result(self._request("GET", f"/extrinsic/{digest}"))
        except ChainError as exc:
            if exc.code == "not_found":
                return None
            raise

    def submit_extrinsic(self, ext: SignedExtrinsic) -> ExtrinsicResult:
        # Every attempt sends these very signed bytes: the node answers a copy it has already
        # applied with the recorded result, so a reply lost in transit cannot run the call twice.
        try:
            raw = self._request(
                "POST",
                "/extrinsic",
                ext.to_json(),
                attempts=EXTRINSIC_ATTEMPTS,
                backoff_s=EXTRINSIC_BACKOFF_S,
            )
        except ChainUnavailable as exc:
            digest = ext.digest()
            raise ChainUnavailable(
                f"{exc.message}; extrinsic {digest} may or may not have been applied",
                code=exc.code,
                fix=f"look it up with LocalChain.extrinsic({digest!r}) (GET /extrinsic/{digest}) "
                f"before signing the call again",
            ) from exc
        return self._result(raw)

    def submit(self, call: Call, signer: Signer) -> ExtrinsicResult:
        address = signer.ss58_address
        for attempt in (0, 1):
            with self._nonce_lock:
                nonce = self._nonces.get(address)
                if nonce is None or attempt == 1:
                    nonce = self.nonce(address)
                self._nonces[address] = nonce + 1
            try:
                result = self.submit_extrinsic(
                    sign_call(call, signer, nonce=nonce, genesis=self.genesis)
                )
            except ChainUnavailable:
                # Whether that nonce was spent is unknown: never re-sign here; the next call
                # asks the node for the nonce.
                with self._nonce_lock:
                    self._nonces.pop(address, None)
                raise
            # Only a definite "this envelope was not applied" (bad_nonce: the cached nonce was
            # stale) is worth a fresh signature; anything else is the answer.
            if result.code != "bad_nonce":
                if not result.ok:
                    with self._nonce_lock:  # a refused extrinsic does not consume its nonce
                        self._nonces.pop(address, None)
                return result
        with self._nonce_lock:
            self._nonces.pop(address, None)
        return result

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
