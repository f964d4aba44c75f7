"""A validator-run gateway with OpenAI's API in front of the subnet's best miners.

``POST /v1/completions``, ``POST /v1/chat/completions`` (both also as ``stream=true``
server-sent events), ``GET /v1/models`` and ``GET /v1/models/{id}``, authenticated by API keys
(``Authorization: Bearer KEY``, keys from a JSON file), rate-limited per key, usage appended to
a JSON-lines log. The official ``openai`` package works unchanged with
``base_url=http://HOST:PORT/v1``; what each parameter means is ``client.openai_api``.

Models: each served model id names a competition (``GatewayModels``); the default serves one,
``crucible-subnet``, answered by the best miner of any competition. An unknown ``model`` is a 404
``model_not_found``, as OpenAI answers it.

Every choice is one miner stream (``client.subnet.Subnet.stream_async``): miners are tried best
first by incentive weighed by measured latency, the next one on any failure before the first
token, and every answer is checked — its signature (crucible-stream/1: the miner's hotkey signed
the first frame, the last, and the hash chain of every frame between) and the commitment it
states against the chain's. A non-streamed answer that breaks midway is asked again of another
miner (nothing was sent yet); a streamed one ends with an error event, since its tokens are out.
A stream's response starts only once every choice has its first token, so "no miner could
answer" is still a 503 with a body, not an empty stream.

**Its own allowance.** Miners rate-limit strangers per hotkey (2 generations/s); a gateway's
traffic is many users' and needs more. The protocol's answer is the validator permit: run the
gateway on a validator hotkey (``crucible-validator gateway`` signs with the validator's wallet)
and miners admit it in the validator tier — first in their queues, with the per-hotkey limits of
``RoutePolicy.validator`` (``miner.serve``). The permit is bought with stake and granted by the
chain, so no miner has to be told about gateways. A gateway on a hotkey without a permit gets the
strangers' limits and logs a warning once.

Bad input is always a 4xx in OpenAI's error shape: bodies are size-limited (413), parsed by
``protocol.messages.parse_message`` (bounded depth and integers), bounded like the miners' wire
schema (400 naming the ``param``); unknown paths and methods are 404/405. A 5xx means the subnet
could not answer (503) or a bug (500, logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from crucible.client.openai_api import (
    DEFAULT_MODEL,
    MAX_PROMPTS,
    ApiError,
    Ask,
    Choice,
    chat_logprobs,
    completion_logprobs,
    parse_chat,
    parse_completion,
)
from crucible.client.subnet import Delta, Finished, NoAnswer, Started, StreamItem, Subnet
from crucible.client.transport import StreamBroken
from crucible.protocol.digits import ascii_decimal
from crucible.protocol.errors import ConfigError, CrucibleError
from crucible.protocol.messages import MAX_NEW_TOKENS
from crucible.server.errors import RateLimited
from crucible.server.limits import RateLimiter

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROMPTS",
    "ApiKeys",
    "GatewayModels",
    "build_gateway",
]

log = logging.getLogger(__name__)

MODEL_ID = DEFAULT_MODEL
MAX_BODY_BYTES = 1 << 20
RETRIES_AFTER_BREAK = 1  # a non-streamed choice whose miner broke midway is asked once more


@dataclass(frozen=True)
class ApiKeys:
    names: dict[str, str]  # key → owner name

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read API keys from {path}: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(k, str) and len(k) >= 16 for k in raw):
            raise ConfigError(f"{path} must map API keys (≥ 16 chars) to names")
        return cls({k: str(v) for k, v in raw.items()})


@dataclass(frozen=True)
class GatewayModels:
    """The model ids a gateway serves, each mapped to the competition whose miners answer it
    (``None``: any competition)."""

    competitions: Mapping[str, str | None]

    @classmethod
    def default(cls) -> GatewayModels:
        return cls({MODEL_ID: None})

    @classmethod
    def for_competitions(cls, keys: list[str]) -> GatewayModels:
        """``crucible-subnet`` (the first competition) plus one id per competition key."""
        if not keys:
            return cls.default()
        return cls({MODEL_ID: keys[0], **{key: key for key in keys}})

    def competition(self, model: str) -> str | None:
        if model not in self.competitions:
            raise ApiError(
                404,
                f"The model `{model[:100]}` does not exist or you do not have access to it "
                f"(served: {', '.join(self.competitions)})",
                code="model_not_found",
                param="model",
            )
        return self.competitions[model]

    def listing(self) -> list[dict[str, Any]]:
        return [self.entry(model) for model in self.competitions]

    @staticmethod
    def entry(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 0, "owned_by": "crucible"}


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content=error.body())


async def _read_body(request: Request) -> bytes:
    """The body, refused (``body_too_large``) past ``MAX_BODY_BYTES`` without reading it all."""
    too_large = ApiError(413, f"body over {MAX_BODY_BYTES} bytes", code="body_too_large")
    declared = ascii_decimal(request.headers.get("content-length"))
    if declared is not None and declared > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(exc: CrucibleError) -> ApiError:
    code = "no_miner_answered" if isinstance(exc, NoAnswer) else "subnet_unavailable"
    return ApiError(503, str(exc), code=code, kind="server_error")


def _broken(exc: StreamBroken) -> ApiError:
    return ApiError(502, f"the miner's answer broke off: {exc}", code=exc.code, kind="server_error")


@dataclass(frozen=True)
class _Call:
    """One OpenAI request being served: what was asked and how to render the answer."""

    endpoint: str  # "completions" | "chat"
    model: str
    competition: str | None
    asks: list[Ask]
    echo: bool
    logprobs: bool
    include_usage: bool
    owner: str
    id: str
    created: int


def _apply(choice: Choice, item: StreamItem) -> None:
    if isinstance(item, Started):
        choice.prompt_tokens, choice.prompt_text = item.prompt_tokens, item.prompt_text
        choice.prompt_logprobs = item.prompt_logprobs
        choice.served_by = {
            "uid": item.uid, "hotkey": item.hotkey, "commitment": item.commitment,
            "ttft_ms": round(item.ttft_ms, 1),
        }  # fmt: skip
    elif isinstance(item, Delta) and choice.ask.keep_tokens:
        choice.text += item.text
        choice.token_ids += item.token_ids
        choice.logprobs += item.logprobs or []
    elif isinstance(item, Finished):
        choice.finish_reason = item.finish_reason
        choice.served_by["latency_ms"] = round(item.latency_ms, 1)


class _Gateway:
    """The routes (module doc) over one ``Subnet``."""

    def __init__(
        self,
        subnet: Subnet,
        keys: ApiKeys,
        models: GatewayModels,
        usage_log: Path | None,
        limiter: RateLimiter,
        max_tokens: int,
    ) -> None:
        self.subnet, self.keys, self.models = subnet, keys, models
        self.usage_log, self.limiter, self.max_tokens = usage_log, limiter, max_tokens
        self._log_lock = threading.Lock()
        self._warned = False

    # -- the edges ---------------------------------------------------------------------------

    def owner(self, request: Request) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        key = header.removeprefix("Bearer ").strip()
        if key not in self.keys.names:
            raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")
        return key, self.keys.names[key]

    def record(self, entry: dict[str, Any]) -> None:
        if self.usage_log is None:
            return
        self.usage_log.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock, self.usage_log.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def warn_without_permit(self) -> None:
        if self._warned:
            return
        self._warned = True
        try:
            me = self.subnet.caller()
        except CrucibleError:
            return
        if me is None or not me.validator_permit:
            log.warning(
                "gateway hotkey %s holds no validator permit on netuid %d: miners give it a "
                "stranger's per-hotkey limits; run the gateway on a validator's hotkey",
                self.subnet.keypair.ss58_address, self.subnet.netuid,
            )  # fmt: skip

    async def serve(self, request: Request, endpoint: str) -> Response:
        try:
            key, owner = self.owner(request)
            try:
                self.limiter.acquire(key)
            except RateLimited as exc:
                raise ApiError(
                    429, str(exc), code="rate_limit_exceeded", kind="rate_limit_error"
                ) from None
            raw = await _read_body(request)
            parse = parse_completion if endpoint == "completions" else parse_chat
            body, asks = parse(raw, self.max_tokens)
            call = _Call(
                endpoint=endpoint, model=body.model, competition=self.models.competition(body.model),
                asks=asks, echo=bool(getattr(body, "echo", False)), logprobs=body.wants_logprobs(),
                include_usage=body.include_usage(), owner=owner,
                id=("cmpl-" if endpoint == "completions" else "chatcmpl-") + uuid.uuid4().hex,
                created=int(time.time()),
            )  # fmt: skip
            self.warn_without_permit()
            if body.stream:
                return await self.stream(call)
            return await self.complete(call)
        except ApiError as exc:
            return _error(exc)

    # -- whole answers -----------------------------------------------------------------------

    async def complete(self, call: _Call) -> Response:
        started = time.perf_counter()
        try:
            choices = await _all_or_none([self._answer(call, ask) for ask in call.asks])
        except ApiError as exc:
            self.record({"key": call.owner, "ok": False, "error": exc.message, "time": time.time()})
            raise
        self._record_ok(call, choices, started, stream=False)
        render = _render_completion if call.endpoint == "completions" else _render_chat
        return JSONResponse(render(call, choices))

    async def _answer(self, call: _Call, ask: Ask) -> Choice:
        for attempt in range(RETRIES_AFTER_BREAK + 1):
            choice = Choice(ask)
            try:
                async for item in self.subnet.stream_async(
                    ask.request, competition=call.competition
                ):
                    _apply(choice, item)
                return choice
            except StreamBroken as exc:
                if attempt == RETRIES_AFTER_BREAK:
                    raise _broken(exc) from None
            except CrucibleError as exc:  # NoAnswer, or the chain could not be read
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")

    def _record_ok(self, call: _Call, choices: list[Choice], started: float, *, stream: bool):
        self.record(
            {
                "key": call.owner, "ok": True, "endpoint": call.endpoint, "model": call.model,
                "stream": stream, "prompt_tokens": _prompt_tokens(choices),
                "completion_tokens": sum(c.completion_tokens for c in choices),
                "served_by": [c.served_by for c in choices],
                "ms": round((time.perf_counter() - started) * 1000, 1), "time": time.time(),
            }
        )  # fmt: skip

    # -- streams -----------------------------------------------------------------------------

    async def stream(self, call: _Call) -> Response:
        """Every choice's first token first (so a failure is still a status), then the SSE."""
        started = time.perf_counter()
        streams = [
            self.subnet.stream_async(a.request, competition=call.competition) for a in call.asks
        ]
        try:
            heads = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
        except asyncio.CancelledError:  # the client left while miners were being asked
            await _close_all(streams)
            raise
        failed = next((h for h in heads if isinstance(h, BaseException)), None)
        if failed is not None:
            await _close_all(streams)
            error = _as_api_error(failed)
            self.record(
                {"key": call.owner, "ok": False, "error": error.message, "time": time.time()}
            )
            raise error
        choices = [Choice(ask) for ask in call.asks]
        for choice, head in zip(choices, heads, strict=True):
            _apply(choice, head)
        events = self._events(call, streams, choices, heads, started)
        return _EventStream(events, lambda: _close_all(streams))

    async def _events(
        self,
        call: _Call,
        streams: list[AsyncIterator[StreamItem]],
        choices: list[Choice],
        heads: list[StreamItem],
        started: float,
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[tuple[int, StreamItem | BaseException | None]] = asyncio.Queue()

        async def pump(index: int) -> None:
            try:
                async for item in streams[index]:
                    await queue.put((index, item))
                await queue.put((index, None))
            except Exception as exc:  # handed to the response, which ends with an error event
                await queue.put((index, exc))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(streams))]
        try:
            for choice, head in zip(choices, heads, strict=True):
                for chunk in _chunks(call, choice, head):
                    yield _sse(chunk)
            live = len(tasks)
            while live:
                index, item = await queue.get()
                if item is None:
                    live -= 1
                    continue
                if isinstance(item, BaseException):
                    error = _as_api_error(item)
                    self.record(
                        {
                            "key": call.owner,
                            "ok": False,
                            "error": error.message,
                            "time": time.time(),
                        }
                    )
                    yield _sse(error.body())
                    return
                _apply(choices[index], item)
                for chunk in _chunks(call, choices[index], item):
                    yield _sse(chunk)
            if call.include_usage:
                yield _sse(_usage_chunk(call, choices))
            yield b"data: [DONE]\n\n"
            self._record_ok(call, choices, started, stream=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _as_api_error(exc: BaseException) -> ApiError:
    """What a failed choice tells the caller."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StreamBroken):
        return _broken(exc)
    if isinstance(exc, CrucibleError):
        return _unavailable(exc)
    if isinstance(exc, StopAsyncIteration):
        return _unavailable(NoAnswer("a miner's stream ended before it began"))
    log.error("gateway stream failed", exc_info=exc)
    return ApiError(
        500, "the gateway failed; see its logs", code="internal_error", kind="server_error"
    )


async def _all_or_none(coros: list[Awaitable[Choice]]) -> list[Choice]:
    """All results in order; on the first failure the others are cancelled and it is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise failed.exception()
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close_all(streams: list[AsyncIterator[StreamItem]]) -> None:
    for stream in streams:
        try:
            await stream.aclose()
        except RuntimeError:  # still running in a pump being cancelled: it closes itself
            pass


class _EventStream(StreamingResponse):
    """OpenAI-style SSE that always closes the miner streams, however the response ended."""

    def __init__(self, content: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]]):
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


# -- rendering --------------------------------------------------------------------------------


def _prompt_tokens(choices: list[Choice]) -> int:
    """The prompt is counted once per prompt, however many choices it has."""
    seen: dict[int, int] = {}
    for choice in choices:
        seen.setdefault(choice.ask.prompt_index, choice.prompt_tokens)
    return sum(seen.values())


def _usage(choices: list[Choice]) -> dict[str, int]:
    prompt = _prompt_tokens(choices)
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _head(call: _Call, kind: str) -> dict[str, Any]:
    return {"id": call.id, "object": kind, "created": call.created, "model": call.model}


def _echo_text(call: _Call, choice: Choice) -> str:
    return (choice.prompt_text or "") if call.echo else ""


def _render_completion(call: _Call, choices: list[Choice]) -> dict[str, Any]:
    out = []
    for c in sorted(choices, key=lambda c: c.ask.index):
        echo = _echo_text(call, c)
        logprobs = None
        if call.logprobs:
            prompt = c.prompt_logprobs if call.echo else None
            logprobs = completion_logprobs(c.logprobs, len(echo), prompt)
        out.append(
            {"text": echo + c.text, "index": c.ask.index, "logprobs": logprobs,
             "finish_reason": c.finish_reason}
        )  # fmt: skip
    served = [c.served_by for c in sorted(choices, key=lambda c: c.ask.index)]
    return {
        **_head(call, "text_completion"), "choices": out, "usage": _usage(choices),
        "crucible": {"served_by": served},
    }  # fmt: skip


def _chat_content(text: str) -> str:
    return text.lstrip()


def _render_chat(call: _Call, choices: list[Choice]) -> dict[str, Any]:
    out = []
    for c in sorted(choices, key=lambda c: c.ask.index):
        out.append(
            {
                "index": c.ask.index,
                "message": {"role": "assistant", "content": _chat_content(c.text)},
                "logprobs": chat_logprobs(c.logprobs) if call.logprobs else None,
                "finish_reason": c.finish_reason,
            }
        )
    served = [c.served_by for c in sorted(choices, key=lambda c: c.ask.index)]
    return {
        **_head(call, "chat.completion"), "choices": out, "usage": _usage(choices),
        "crucible": {"served_by": served},
    }  # fmt: skip


def _chunks(call: _Call, choice: Choice, item: StreamItem) -> list[dict[str, Any]]:
    """The stream chunks one item of one choice becomes (often one, sometimes none)."""
    if call.endpoint == "completions":
        return _completion_chunks(call, choice, item)
    return _chat_chunks(call, choice, item)


def _completion_chunks(call: _Call, choice: Choice, item: StreamItem) -> list[dict[str, Any]]:
    def chunk(text: str, logprobs: dict | None, finish: str | None) -> dict[str, Any]:
        body = {
            "text": text,
            "index": choice.ask.index,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        return {**_head(call, "text_completion"), "choices": [body]}

    if isinstance(item, Started):
        if not call.echo:
            return []
        prompt = (item.prompt_logprobs or []) if call.logprobs else None
        return [
            chunk(
                item.prompt_text or "",
                completion_logprobs([], 0, prompt) if call.logprobs else None,
                None,
            )
        ]
    if isinstance(item, Delta):
        if not choice.ask.keep_tokens or not (item.text or item.token_ids):
            return []
        shift = len(_echo_text(call, choice)) if call.echo else 0
        logprobs = completion_logprobs(item.logprobs or [], shift) if call.logprobs else None
        return [chunk(item.text, logprobs, None)]
    return [chunk("", None, item.finish_reason)]


def _chat_chunks(call: _Call, choice: Choice, item: StreamItem) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], logprobs: dict | None, finish: str | None) -> dict[str, Any]:
        body = {
            "index": choice.ask.index, "delta": delta, "logprobs": logprobs,
            "finish_reason": finish,
        }  # fmt: skip
        return {**_head(call, "chat.completion.chunk"), "choices": [body]}

    if isinstance(item, Started):
        return [chunk({"role": "assistant", "content": ""}, None, None)]
    if isinstance(item, Delta):
        # the reply's leading whitespace is dropped (the template ends in "Assistant:")
        content = _chat_content(choice.text)
        text, choice.sent = content[choice.sent :], len(content)
        if not text and not (call.logprobs and item.logprobs):
            return []
        logprobs = chat_logprobs(item.logprobs or []) if call.logprobs else None
        return [chunk({"content": text}, logprobs, None)]
    return [chunk({}, None, item.finish_reason)]


def _usage_chunk(call: _Call, choices: list[Choice]) -> dict[str, Any]:
    kind = "text_completion" if call.endpoint == "completions" else "chat.completion.chunk"
    return {**_head(call, kind), "choices": [], "usage": _usage(choices)}


def build_gateway(
    subnet: Subnet,
    keys: ApiKeys,
    *,
    usage_log: Path | None = None,
    rate_per_s: float = 2.0,
    burst: int = 5,
    max_tokens: int = MAX_NEW_TOKENS,
    models: GatewayModels | None = None,
) -> FastAPI:
    """``max_tokens`` caps what one choice may ask (keep it within what miners serve);
    ``models`` names the model ids served (default: ``crucible-subnet``, any competition)."""
    if not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise ConfigError(f"gateway max_tokens must be in [1, {MAX_NEW_TOKENS}]")
    app = FastAPI(title="Crucible gateway", openapi_url=None, docs_url=None)
    gateway = _Gateway(
        subnet, keys, models or GatewayModels.default(), usage_log,
        RateLimiter(rate_per_s, burst), max_tokens,
    )  # fmt: skip

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        message = f"{request.method} {request.url.path}: {code}"
        return _error(ApiError(status, message, code=code))

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("gateway %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(
            ApiError(
                500, "the gateway failed; see its logs", code="internal_error", kind="server_error"
            )
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, bug)

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        try:
            gateway.owner(request)
        except ApiError as exc:
            return _error(exc)
        return JSONResponse({"object": "list", "data": gateway.models.listing()})

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request) -> JSONResponse:
        try:
            gateway.owner(request)
            gateway.models.competition(model)
        except ApiError as exc:
            return _error(exc)
        return JSONResponse(GatewayModels.entry(model))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await gateway.serve(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await gateway.serve(request, "chat")

    return app
