"""``NeuronServer``: the FastAPI app every Crucible neuron serves, with auth and limits built in.

Each route runs the same pipeline, in this order, and every answer — success or error — is
signed by the server's hotkey (``protocol.auth.sign_response``):

1. body size: ``Content-Length`` over the route's limit → 413 before reading; a streamed body is
   cut off as soon as it passes the limit (413);
2. btauth/1 signature bound to this server's hotkey, fresh, not replayed → else 401;
3. caller registered on the netuid (metagraph cache), permit / stake per the route → else 403;
4. per-hotkey token bucket and concurrency cap → else 429;
5. strict schema parse of the body → else 400;
6. the handler, under the route's timeout → else 504.

Handlers are ``async def handler(request, ctx) -> response_model``; they may raise any
``CrucibleError`` (mapped by ``server.errors.status_for``). Any other exception is a bug in the
handler: it is logged with its traceback and answered 500 ``internal_error``; the server keeps
serving.

Streaming routes (``stream_route``) run the same pipeline; their handler returns, under the
route's timeout, an async iterator of ``(kind, message)`` events — so a request refused before
its first event (by admission, say) is an ordinary signed error with its status — and the
server sends them as signed server-sent events (``server.streaming``, crucible-stream/1). The
per-hotkey concurrency slot is held until the stream ends, and the whole stream must end
within the route's timeout.

A route's per-hotkey limits are ``RoutePolicy.rate_per_s``/``burst``/``max_concurrent``, or
``RoutePolicy.validator`` for a caller holding a validator permit.

Usage::

    server = NeuronServer(hotkey_keypair, chain, netuid)
    server.route("/v1/generate", GenerateRequest, GenerateResponse, generate,
                 policy=RoutePolicy(access=Access.VALIDATOR, timeout_s=20))
    running = run_in_thread(server.app)        # tests / demo; or serve(server.app, host, port)

``GET /metrics`` is public and unsigned: the Prometheus text of ``server.registry`` (requests by
route template, method and status, with a latency histogram; an app may register more metrics
there). Each answered request is also logged as a ``request`` event (route, method, status,
latency, the caller's role — never a key or signature): at debug level, or warning for a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from crucible.chain.interface import Chain, Neuron
from crucible.observe.logs import log_event
from crucible.observe.metrics import CONTENT_TYPE, HttpMetrics, render
from crucible.protocol.auth import (
    DEFAULT_ALLOWED_SKEW_S,
    DEFAULT_MAX_AGE_S,
    RESPONSE_HOTKEY_HEADER,
    NonceStore,
    Signer,
    StreamSigner,
    new_nonce_store,
    request_nonce,
    sign_response,
    verify_request,
)
from crucible.protocol.digits import ascii_decimal
from crucible.protocol.errors import ConfigError, CrucibleError, RequestError
from crucible.protocol.messages import ErrorDetail, ErrorResponse, parse_message
from crucible.server.errors import HandlerTimeout, status_for
from crucible.server.limits import ConcurrencyLimiter, RateLimiter
from crucible.server.metagraph_cache import MetagraphCache
from crucible.server.policy import RoutePolicy, check_access
from crucible.server.streaming import StreamEvents, stream_frames

__all__ = ["CallContext", "Handler", "NeuronServer", "StreamHandler", "error_response_body"]

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Resp = TypeVar("Resp", bound=BaseModel)


@dataclass(frozen=True)
class CallContext:
    """Who is calling, as the server established it."""

    hotkey: str
    neuron: Neuron | None  # None only on Access.SIGNED routes called by an unregistered hotkey
    request_nonce_ns: int
    netuid: int


Handler = Callable[[Any, CallContext], Awaitable[BaseModel]]
StreamHandler = Callable[[Any, CallContext], Awaitable[StreamEvents]]


@dataclass(frozen=True)
class _Limits:
    rate: RateLimiter
    concurrency: ConcurrencyLimiter


@dataclass(frozen=True)
class _Route(Generic[Req, Resp]):
    method: str
    path: str
    request_model: type[Req] | None
    response_model: type[Resp] | None  # None: a streaming route
    handler: Handler | StreamHandler
    policy: RoutePolicy
    rate: RateLimiter
    concurrency: ConcurrencyLimiter
    validator_limits: _Limits | None = None

    def limits_for(self, neuron: Neuron | None) -> _Limits:
        if self.validator_limits is not None and neuron is not None and neuron.validator_permit:
            return self.validator_limits
        return _Limits(self.rate, self.concurrency)


def error_response_body(code: str, message: str) -> bytes:
    """The JSON bytes of ``{"error": {"code": ..., "message": ...}}``."""
    detail = ErrorDetail(code=code[:64], message=message[:1024])
    return ErrorResponse(error=detail).model_dump_json().encode()


def _role(neuron: Neuron | None) -> str:
    if neuron is None:
        return "unregistered"
    return "validator" if neuron.validator_permit else "registered"


def _request_target(request: Request) -> str:
    """Path plus ``?query`` exactly as the client sent it: what btauth/1 signs."""
    scope = request.scope
    path = scope.get("raw_path") or scope["path"].encode()
    target = path.decode("latin-1")
    query = scope.get("query_string") or b""
    return f"{target}?{query.decode('latin-1')}" if query else target


class _EventStream(StreamingResponse):
    """A streaming response that always runs ``cleanup`` once it is over, however it ended."""

    def __init__(
        self, content: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


class NeuronServer:
    """A FastAPI app whose routes authenticate, authorize, rate-limit and sign (see module doc)."""

    def __init__(
        self,
        keypair: Signer,
        chain: Chain,
        netuid: int,
        *,
        default_policy: RoutePolicy | None = None,
        metagraph_refresh_s: float = 12.0,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        allowed_skew_s: float = DEFAULT_ALLOWED_SKEW_S,
        nonce_store: NonceStore | None = None,
        title: str = "crucible-neuron",
    ) -> None:
        if type(keypair).__name__ == "Wallet":
            raise ConfigError(
                "NeuronServer needs the hotkey Keypair, not a Wallet",
                fix="pass wallet.hotkey (a Wallet re-reads its key file on every signature)",
            )
        self.keypair = keypair
        self.hotkey = keypair.ss58_address
        self.netuid = netuid
        self.default_policy = default_policy or RoutePolicy()
        self.max_age_s = max_age_s
        self.allowed_skew_s = allowed_skew_s
        self.nonce_store = nonce_store or new_nonce_store(max_age_s, allowed_skew_s)
        self.metagraph = MetagraphCache(chain, netuid, refresh_s=metagraph_refresh_s)
        self._routes: dict[tuple[str, str], _Route[Any, Any]] = {}
        self.app = FastAPI(title=title, lifespan=self._lifespan, openapi_url=None, docs_url=None)
        self.app.add_exception_handler(StarletteHTTPException, self._http_exception)
        self.registry = CollectorRegistry()  # this server's own (tests run several per process)
        self.http_metrics = HttpMetrics(self.registry)
        self.app.add_api_route("/metrics", self._metrics, methods=["GET"], include_in_schema=False)

    async def _metrics(self) -> Response:
        return Response(render(self.registry), media_type=CONTENT_TYPE)

    def _observed(self, request: Request, route: str, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        self.http_metrics.observe(route, request.method, status, seconds)
        role = getattr(request.state, "crucible_role", "unauthenticated")
        # debug: a line per request would cost more than the request (metrics count them all)
        level = logging.WARNING if status >= 500 else logging.DEBUG
        log_event(log, "request", level=level, route=route, method=request.method, status=status,
                  latency_ms=round(seconds * 1000, 2), role=role)  # fmt: skip

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        try:
            await self.metagraph.refresh()
        except Exception as exc:  # serve 503s until the background refresher gets through
            self.metagraph.last_error = exc
            log.warning("initial metagraph load for netuid %d failed: %r", self.netuid, exc)
        self.metagraph.start()
        try:
            yield
        finally:
            await self.metagraph.stop()

    def route(
        self,
        path: str,
        request_model: type[Req] | None,
        response_model: type[Resp],
        handler: Callable[[Req, CallContext], Awaitable[Resp]],
        *,
        policy: RoutePolicy | None = None,
        method: str | None = None,
    ) -> None:
        """Serve ``handler`` at ``path``. ``request_model=None`` means an empty body (GET)."""
        self._add(path, request_model, response_model, handler, policy, method)

    def stream_route(
        self,
        path: str,
        request_model: type[Req],
        handler: Callable[[Req, CallContext], Awaitable[StreamEvents]],
        *,
        policy: RoutePolicy | None = None,
    ) -> None:
        """Serve ``handler``'s events at ``path`` (POST) as a signed event stream (module doc)."""
        self._add(path, request_model, None, handler, policy, "POST")

    def _add(
        self,
        path: str,
        request_model: type[BaseModel] | None,
        response_model: type[BaseModel] | None,
        handler: Handler | StreamHandler,
        policy: RoutePolicy | None,
        method: str | None,
    ) -> None:
        method = (method or ("GET" if request_model is None else "POST")).upper()
        if (method, path) in self._routes or path == "/metrics":
            raise ConfigError(f"route {method} {path} is already registered")
        policy = policy or self.default_policy
        tier = policy.validator
        route: _Route[Any, Any] = _Route(
            method=method,
            path=path,
            request_model=request_model,
            response_model=response_model,
            handler=handler,
            policy=policy,
            rate=RateLimiter(policy.rate_per_s, policy.burst),
            concurrency=ConcurrencyLimiter(policy.max_concurrent),
            validator_limits=None
            if tier is None
            else _Limits(
                RateLimiter(tier.rate_per_s, tier.burst), ConcurrencyLimiter(tier.max_concurrent)
            ),
        )
        self._routes[(method, path)] = route

        async def endpoint(request: Request) -> Response:
            return await self._serve(route, request)

        self.app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)

    # -- the pipeline --------------------------------------------------------------------------

    async def _read_body(self, request: Request, limit: int) -> bytes:
        raw_length = request.headers.get("content-length")
        if raw_length is not None:
            declared = ascii_decimal(raw_length)
            if declared is None:
                raise RequestError("Content-Length is not a decimal integer", code="malformed")
            if declared > limit:
                raise RequestError(
                    f"body of {raw_length} bytes exceeds this route's {limit}-byte limit",
                    code="body_too_large",
                )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    f"body exceeds this route's {limit}-byte limit", code="body_too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _serve(self, route: _Route[Any, Any], request: Request) -> Response:
        started = time.perf_counter()
        response = await self._handle(route, request)
        self._observed(request, route.path, response.status_code, started)
        return response

    async def _handle(self, route: _Route[Any, Any], request: Request) -> Response:
        target = _request_target(request)
        nonce = request_nonce(request.headers)
        slot = ExitStack()  # the caller's concurrency slot: a stream takes it along
        try:
            body = await self._read_body(request, route.policy.max_body_bytes)
            caller = verify_request(
                request.headers,
                body,
                method=route.method,
                path=target,
                self_hotkey_ss58=self.hotkey,
                nonce_store=self.nonce_store,
                max_age_s=self.max_age_s,
                allowed_skew_s=self.allowed_skew_s,
            )
            nonce = caller.nonce_ns
            found = self.metagraph.lookup(caller.hotkey_ss58)
            request.state.crucible_role = _role(found)
            neuron = check_access(
                found, route.policy, hotkey=caller.hotkey_ss58, netuid=self.netuid
            )
            limits = route.limits_for(neuron)
            limits.rate.acquire(caller.hotkey_ss58)
            with slot:
                slot.enter_context(limits.concurrency.slot(caller.hotkey_ss58))
                if route.request_model is None:
                    if body:
                        raise RequestError(f"{route.path} takes no body", code="malformed")
                    parsed = None
                else:
                    parsed = parse_message(route.request_model, body)
                ctx = CallContext(caller.hotkey_ss58, neuron, nonce, self.netuid)
                try:
                    result = await asyncio.wait_for(
                        route.handler(parsed, ctx), timeout=route.policy.timeout_s
                    )
                except asyncio.TimeoutError:
                    raise HandlerTimeout(
                        f"{route.path} took longer than {route.policy.timeout_s:g}s"
                    ) from None
                if route.response_model is None:
                    return self._stream(route, target, nonce, result, slot.pop_all())
            if not isinstance(result, route.response_model):
                raise TypeError(
                    f"handler for {route.path} returned {type(result).__name__}, "
                    f"not {route.response_model.__name__}"
                )
            return self._respond(
                route.method, target, 200, result.model_dump_json().encode(), nonce
            )
        except CrucibleError as exc:
            body = error_response_body(exc.code, exc.message)
            return self._respond(route.method, target, status_for(exc), body, nonce)
        except Exception:  # a handler bug: answer 500, keep serving, keep the traceback
            log.exception("handler for %s %s failed", route.method, route.path)
            body = error_response_body("internal_error", "the handler failed; see server logs")
            return self._respond(route.method, target, 500, body, nonce)

    def _stream(
        self, route: _Route[Any, Any], target: str, nonce: int, events: Any, slot: ExitStack
    ) -> Response:
        """The handler's events as a signed stream; ``slot`` is released when it ends."""
        signer = StreamSigner(
            self.keypair, method=route.method, path=target, request_nonce_ns=nonce
        )
        frames = stream_frames(events, signer, timeout_s=route.policy.timeout_s)

        async def cleanup() -> None:
            # also when the client left before the first frame: close what never started
            try:
                await frames.aclose()
                await events.aclose()
            finally:
                slot.close()

        headers = {RESPONSE_HOTKEY_HEADER: self.hotkey, "Cache-Control": "no-store"}
        return _EventStream(frames, cleanup, headers=headers, media_type="text/event-stream")

    def _respond(self, method: str, target: str, status: int, body: bytes, nonce: int) -> Response:
        headers = sign_response(
            self.keypair,
            method=method,
            path=target,
            status=status,
            body=body,
            request_nonce_ns=nonce,
        )
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        """404 / 405 from routing, in our error format and signed like everything else."""
        started = time.perf_counter()
        status = getattr(exc, "status_code", 500)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        body = error_response_body(code, f"{request.method} {request.url.path}: {code}")
        nonce = request_nonce(request.headers)
        response = self._respond(request.method, _request_target(request), status, body, nonce)
        self._observed(request, "unmatched", status, started)  # the path itself is untrusted
        return response
