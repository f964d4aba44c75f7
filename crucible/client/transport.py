"""Signed HTTP calls to Crucible servers: one pooled aiohttp session, many targets at once.

Every request is signed with btauth/1 for the hotkey we mean to reach; every answer must carry
that hotkey's response signature (``protocol.auth.verify_response``) or it is not believed. A call
never raises for a remote failure: it returns a ``CallResult`` whose ``code`` says what happened
(``ok``, a server error code such as ``not_registered``, or a client-side one: ``timeout``,
``unreachable``, ``unsigned_response``, ``wrong_responder``, ``bad_response_signature``,
``bad_response``, ``response_too_large``, ``transport_error``).

    async with SignedClient(wallet.hotkey) as client:
        results = await client.call_many(targets, GENERATE_PATH, request, GenerateResponse)
    best = [r.value for r in results if r.ok]

CLIs without an event loop use ``query(...)``.

Streams (``open_stream``) are signed in-band (crucible-stream/1, ``protocol.auth``): opening one
never raises either — ``EventStream.opened`` is the ``CallResult`` of the request (a refusal
before the stream starts is a signed JSON error, as for ``call``) — and iterating it yields
verified ``(kind, message)`` events and raises ``StreamBroken`` (with a ``code``) the moment the
stream cannot be believed or ends in an error: ``bad_stream_signature``, ``unsigned_stream``,
``bad_stream``, ``bad_response``, ``timeout``, ``transport_error``, ``stream_truncated`` or the
server's own error code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from yarl import URL

from crucible.chain.interface import Neuron
from crucible.protocol.auth import Signer, StreamVerifier, sign_request, verify_response
from crucible.protocol.errors import AuthError, ConfigError, CrucibleError, RequestError
from crucible.protocol.messages import STREAM_ERROR, ErrorResponse, parse_message
from crucible.server.streaming import FrameDecoder

__all__ = ["CallResult", "EventStream", "SignedClient", "StreamBroken", "Target", "query"]

T = TypeVar("T", bound=BaseModel)

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """Where to send a request and which hotkey must answer it."""

    hotkey: str
    url: str  # base URL, e.g. "http://127.0.0.1:8091"
    uid: int | None = None

    @classmethod
    def from_neuron(cls, neuron: Neuron) -> Target | None:
        """The neuron's served endpoint, or None if it serves none."""
        if neuron.endpoint is None or not neuron.endpoint.port:
            return None
        return cls(hotkey=neuron.hotkey, url=neuron.endpoint.url, uid=neuron.uid)


@dataclass(frozen=True)
class CallResult(Generic[T]):
    """The outcome of one call to one target. ``value`` is set iff ``ok``."""

    target: Target
    ok: bool
    code: str
    status: int | None
    latency_ms: float
    value: T | None = None
    error: str = ""


class StreamBroken(CrucibleError):
    """A stream that cannot be believed, or that ended in an error (``code`` says which)."""

    code = "stream_broken"


class EventStream:
    """An open signed stream (module doc). ``opened`` tells whether it started; iterate it for
    ``(kind, message)`` events; ``close()`` (or ``async with``) ends it early."""

    def __init__(
        self,
        opened: CallResult[Any],
        response: aiohttp.ClientResponse | None = None,
        verifier: StreamVerifier | None = None,
        kinds: Mapping[str, type[BaseModel]] | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.opened = opened
        self._response, self._verifier, self._kinds = response, verifier, kinds or {}
        self._decoder = FrameDecoder(max_bytes)
        self._left = max_bytes
        self._pending: list[Any] = []
        self._ended = response is None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> tuple[str, BaseModel]:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            chunk = await self._read()
            try:
                self._pending.extend(self._decoder.feed(chunk))
            except RequestError as exc:
                raise self._broken(exc.code, exc.message) from None
        frame = self._pending.pop(0)
        try:
            self._verifier.frame(frame.kind, frame.data, frame.signature, last=frame.last)
        except AuthError as exc:
            raise self._broken(exc.code, exc.message) from None
        if frame.kind == STREAM_ERROR:
            self._ended = True
            try:
                detail = parse_message(ErrorResponse, frame.data).error
            except RequestError:
                raise self._broken(
                    "bad_response", "the error frame is not a Crucible error"
                ) from None
            raise self._broken(detail.code, detail.message)
        model = self._kinds.get(frame.kind)
        if model is None:
            raise self._broken("bad_stream", f"unexpected {frame.kind!r} frame")
        try:
            message = model.model_validate_json(frame.data)
        except ValidationError as exc:
            raise self._broken("bad_response", f"invalid {model.__name__}: {exc}"[:500]) from None
        if frame.last:
            self._ended = True
            await self.close()
        return frame.kind, message

    async def _read(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except asyncio.TimeoutError:
            raise self._broken("timeout", "no frame in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._broken("transport_error", f"{type(exc).__name__}: {exc}") from None
        if not chunk:
            raise self._broken("stream_truncated", "the stream ended before its last frame")
        self._left -= len(chunk)
        if self._left < 0:
            raise self._broken("response_too_large", "the stream exceeds the response limit")
        return chunk

    def _broken(self, code: str, message: str) -> StreamBroken:
        self._ended = True
        if self._response is not None:
            self._response.close()
        return StreamBroken(message, code=code)

    async def close(self) -> None:
        self._ended = True
        if self._response is not None:
            self._response.close()  # a stream's connection is not reused
            self._response = None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SignedClient:
    """Signs, sends, verifies. Create it inside a running loop (or use ``async with``)."""

    def __init__(
        self,
        keypair: Signer,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 256,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if type(keypair).__name__ == "Wallet":
            raise ConfigError(
                "SignedClient needs the hotkey Keypair, not a Wallet",
                fix="pass wallet.hotkey (a Wallet re-reads its key file on every signature)",
            )
        if timeout_s <= 0 or max_connections < 1 or max_response_bytes < 1:
            raise ConfigError("timeout_s, max_connections and max_response_bytes must be > 0")
        self.keypair = keypair
        self.hotkey = keypair.ss58_address
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
            # No default headers or cookies: what we send is exactly what we signed.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SignedClient:
        self._get_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(
        self,
        target: Target,
        path: str,
        request: BaseModel | None,
        response_model: type[T],
        *,
        method: str | None = None,
        timeout_s: float | None = None,
    ) -> CallResult[T]:
        """One signed call; never raises for a remote failure."""
        body = b"" if request is None else request.model_dump_json().encode()
        return await self._send(
            target,
            (method or ("GET" if request is None else "POST")).upper(),
            path,
            body,
            response_model,
            timeout_s or self.timeout_s,
        )

    async def call_many(
        self,
        targets: Sequence[Target],
        path: str,
        request: BaseModel | None,
        response_model: type[T],
        *,
        method: str | None = None,
        timeout_s: float | None = None,
    ) -> list[CallResult[T]]:
        """The same request to every target concurrently; results in the order of ``targets``."""
        body = b"" if request is None else request.model_dump_json().encode()
        verb = (method or ("GET" if request is None else "POST")).upper()
        timeout = timeout_s or self.timeout_s
        return list(
            await asyncio.gather(
                *(self._send(t, verb, path, body, response_model, timeout) for t in targets)
            )
        )

    async def open_stream(
        self,
        target: Target,
        path: str,
        request: BaseModel,
        kinds: Mapping[str, type[BaseModel]],
        *,
        timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
    ) -> EventStream:
        """POST ``request`` to a streaming route; never raises for a remote failure (see
        ``EventStream``). ``kinds`` maps each frame kind to its message model; ``timeout_s``
        bounds the whole stream, ``idle_timeout_s`` (default: ``timeout_s``) each wait."""
        start = time.perf_counter()
        total = timeout_s or self.timeout_s

        def result(code: str, status: int | None, error: str = "", ok: bool = False):
            latency = (time.perf_counter() - start) * 1000
            return CallResult(target, ok, code, status, latency, None, error)

        body = request.model_dump_json().encode()
        headers = sign_request(
            self.keypair, method="POST", path=path, body=body, receiver_ss58=target.hotkey
        )
        nonce = int(headers["X-Bittensor-Nonce"])
        headers["Content-Type"] = "application/json"
        url = URL(target.url.rstrip("/") + path, encoded=True)
        timeout = aiohttp.ClientTimeout(total=total, sock_read=idle_timeout_s or total)
        try:
            resp = await self._get_session().request(
                "POST", url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
        except asyncio.TimeoutError:
            return EventStream(result("timeout", None, f"no answer within {total:g}s"))
        except aiohttp.ClientConnectorError as exc:
            return EventStream(
                result("unreachable", None, f"cannot connect to {target.url}: {exc.os_error}")
            )
        except (aiohttp.ClientError, OSError) as exc:
            return EventStream(result("transport_error", None, f"{type(exc).__name__}: {exc}"))
        if resp.status == 200 and resp.content_type == "text/event-stream":
            verifier = StreamVerifier(
                method="POST", path=path, request_nonce_ns=nonce, expected_hotkey_ss58=target.hotkey
            )
            return EventStream(
                result("ok", 200, ok=True), resp, verifier, kinds, self.max_response_bytes
            )
        try:
            raw = await self._read_limited(resp)
        except RequestError as exc:
            return EventStream(result(exc.code, resp.status, exc.message))
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            return EventStream(result("transport_error", resp.status, f"{type(exc).__name__}"))
        finally:
            resp.release()
        return EventStream(self._judge(target, "POST", path, resp, raw, nonce, result))

    def _judge(self, target, method, path, resp, raw, nonce, result) -> CallResult[Any]:
        """A non-stream answer to a stream request: a verified error (or a bad answer)."""
        try:
            verify_response(
                resp.headers, raw, method=method, path=path, status=resp.status,
                request_nonce_ns=nonce, expected_hotkey_ss58=target.hotkey,
            )  # fmt: skip
        except AuthError as exc:
            return result(exc.code, resp.status, exc.message)
        if resp.status == 200:
            return result("bad_response", 200, "a 200 answer that is not an event stream")
        try:
            detail = parse_message(ErrorResponse, raw).error
            return result(detail.code, resp.status, detail.message)
        except RequestError:
            return result(f"http_{resp.status}", resp.status, "error body is not a Crucible error")

    async def _send(
        self,
        target: Target,
        method: str,
        path: str,
        body: bytes,
        response_model: type[T],
        timeout_s: float,
    ) -> CallResult[T]:
        start = time.perf_counter()

        def result(code: str, status: int | None, error: str = "", value: T | None = None):
            return CallResult(
                target=target,
                ok=value is not None,
                code=code,
                status=status,
                latency_ms=(time.perf_counter() - start) * 1000,
                value=value,
                error=error,
            )

        headers = sign_request(
            self.keypair, method=method, path=path, body=body, receiver_ss58=target.hotkey
        )
        nonce = int(headers["X-Bittensor-Nonce"])
        if body:
            headers["Content-Type"] = "application/json"
        url = URL(target.url.rstrip("/") + path, encoded=True)
        session = self._get_session()
        try:
            async with session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await self._read_limited(resp)
                resp_headers = resp.headers
        except asyncio.TimeoutError:
            return result("timeout", None, f"no answer within {timeout_s:g}s")
        except RequestError as exc:
            return result(exc.code, None, exc.message)
        except aiohttp.ClientConnectorError as exc:
            return result("unreachable", None, f"cannot connect to {target.url}: {exc.os_error}")
        except (aiohttp.ClientError, OSError) as exc:
            return result("transport_error", None, f"{type(exc).__name__}: {exc}")

        try:
            verify_response(
                resp_headers,
                raw,
                method=method,
                path=path,
                status=status,
                request_nonce_ns=nonce,
                expected_hotkey_ss58=target.hotkey,
            )
        except AuthError as exc:
            return result(exc.code, status, exc.message)

        if status != 200:
            try:
                detail = parse_message(ErrorResponse, raw).error
                return result(detail.code, status, detail.message)
            except RequestError:
                return result(f"http_{status}", status, "error body is not a Crucible error")
        try:
            value = response_model.model_validate_json(raw)
        except ValidationError as exc:
            return result("bad_response", status, f"invalid {response_model.__name__}: {exc}")
        return result("ok", status, value=value)

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.max_response_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise RequestError(
                f"response of {resp.content_length} bytes exceeds {limit}",
                code="response_too_large",
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"response exceeds {limit} bytes", code="response_too_large")
            chunks.append(chunk)
        return b"".join(chunks)


def query(
    keypair: Signer,
    targets: Sequence[Target],
    path: str,
    request: BaseModel | None,
    response_model: type[T],
    *,
    method: str | None = None,
    timeout_s: float = 10.0,
) -> list[CallResult[T]]:
    """Blocking ``call_many`` for CLIs: opens a session, queries, closes it."""

    async def run() -> list[CallResult[T]]:
        async with SignedClient(keypair, timeout_s=timeout_s) as client:
            return await client.call_many(
                targets, path, request, response_model, method=method, timeout_s=timeout_s
            )

    return asyncio.run(run())
