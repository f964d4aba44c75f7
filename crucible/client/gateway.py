"""A validator-run gateway with an OpenAI-compatible API in front of the subnet's best miners.

``POST /v1/completions`` and ``GET /v1/models``, authenticated by API keys (``Authorization:
Bearer KEY``, keys from a JSON file), rate-limited per key, with usage appended to a JSON-lines
log. Each completion is answered by ``client.subnet.Subnet`` (top miners by incentive, signed and
commitment-checked answers, fallback on failure), so the official ``openai`` package works
unchanged with ``base_url=http://HOST:PORT/v1``.

Every answer is JSON in OpenAI's error shape (``{"error": {"message", "type", "code"}}``) when it
is not a success, and bad input is always a 4xx: bodies are size-limited (413) and parsed by
``protocol.messages.parse_message`` (bounded depth and integers), every field is bounded as the
miners' wire schema bounds it (400), unknown paths and methods are 404/405. A 5xx means the
subnet could not answer (503) or a bug (500, logged).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from crucible.client.subnet import NoAnswer, Subnet
from crucible.protocol.errors import ConfigError, CrucibleError, RequestError
from crucible.protocol.messages import (
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    GenerateRequest,
    SamplingParams,
    parse_message,
)
from crucible.server.errors import RateLimited
from crucible.server.limits import RateLimiter

__all__ = ["MAX_BODY_BYTES", "MAX_PROMPTS", "ApiKeys", "CompletionRequest", "build_gateway"]

log = logging.getLogger(__name__)

MODEL_ID = "crucible-subnet"
MAX_BODY_BYTES = 1 << 20
MAX_PROMPTS = 16  # prompts in one request; each is a separate subnet query
DEFAULT_MAX_TOKENS = 16  # OpenAI's default when a request names none


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


Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]


class CompletionRequest(BaseModel):
    """The fields of OpenAI's completion request we use; sampling is checked by
    ``SamplingParams`` (floors included) in ``sampling()``."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str = Field(default=MODEL_ID, max_length=256)
    prompt: Prompt | list[Prompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)  # None: OpenAI's 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, seed=self.seed or 0)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def _error(status: int, message: str, kind: str, code: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message[:1024], "type": kind, "code": code}},
    )


async def _read_body(request: Request) -> bytes:
    """The body, refused (``body_too_large``) past ``MAX_BODY_BYTES`` without reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(f"body over {MAX_BODY_BYTES} bytes", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(f"body over {MAX_BODY_BYTES} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes, max_tokens: int) -> tuple[CompletionRequest, list[GenerateRequest]]:
    """The request and the miner request of each prompt, or ``RequestError`` saying why not."""
    body = parse_message(CompletionRequest, raw)
    wanted = min(DEFAULT_MAX_TOKENS, max_tokens) if body.max_tokens is None else body.max_tokens
    if wanted > max_tokens:
        raise RequestError(
            f"max_tokens {wanted} is over this gateway's limit of {max_tokens}",
            code="limit_exceeded",
        )
    try:
        sampling = body.sampling()
        asks = [
            GenerateRequest(prompt=p, max_new_tokens=wanted, sampling=sampling)
            for p in body.prompts()
        ]
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise RequestError(
            f"invalid request: {where}: {first.get('msg')}", code="malformed"
        ) from None
    return body, asks


def build_gateway(
    subnet: Subnet,
    keys: ApiKeys,
    *,
    usage_log: Path | None = None,
    rate_per_s: float = 2.0,
    burst: int = 5,
    max_tokens: int = MAX_NEW_TOKENS,
) -> FastAPI:
    """``max_tokens`` caps what one completion may ask (keep it within what miners serve)."""
    if not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise ConfigError(f"gateway max_tokens must be in [1, {MAX_NEW_TOKENS}]")
    app = FastAPI(title="Crucible gateway", openapi_url=None, docs_url=None)
    limiter = RateLimiter(rate_per_s, burst)
    log_lock = threading.Lock()

    def caller(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        key = header.removeprefix("Bearer ").strip()
        return key if key in keys.names else None

    def record(entry: dict[str, Any]) -> None:
        if usage_log is None:
            return
        usage_log.parent.mkdir(parents=True, exist_ok=True)
        with log_lock, usage_log.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        return _error(
            status, f"{request.method} {request.url.path}: {code}", "invalid_request_error", code
        )

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("gateway %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "the gateway failed; see its logs", "server_error", "internal_error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, bug)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if caller(request) is None:
            return _error(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "crucible"}],
            }
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        key = caller(request)
        if key is None:
            return _error(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        try:
            limiter.acquire(key)
        except RateLimited as exc:
            return _error(429, str(exc), "rate_limit_error", "rate_limited")
        try:
            _, asks = _parse(await _read_body(request), max_tokens)
        except RequestError as exc:
            status = 413 if exc.code == "body_too_large" else 400
            return _error(status, exc.message, "invalid_request_error", exc.code)
        return await _complete(subnet, asks, keys.names[key], record)

    return app


async def _complete(
    subnet: Subnet,
    asks: list[GenerateRequest],
    owner: str,
    record: Callable[[dict[str, Any]], None],
) -> JSONResponse:
    choices, served_by, started = [], [], time.perf_counter()
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for index, ask in enumerate(asks):
        try:
            answer = await subnet.ask_async(
                ask.prompt or "", max_tokens=ask.max_new_tokens, sampling=ask.sampling
            )
        except CrucibleError as exc:  # NoAnswer, or the chain could not be read
            record({"key": owner, "ok": False, "error": str(exc), "time": time.time()})
            code = "no_miner_answered" if isinstance(exc, NoAnswer) else "subnet_unavailable"
            return _error(503, str(exc), "server_error", code)
        choices.append(
            {
                "text": answer.text,
                "index": index,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        )
        usage["completion_tokens"] += len(answer.token_ids)
        served_by.append(
            {
                "uid": answer.uid, "hotkey": answer.hotkey, "commitment": answer.commitment,
                "latency_ms": round(answer.latency_ms, 1),
            }
        )  # fmt: skip
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    record(
        {
            "key": owner, "ok": True, "completion_tokens": usage["completion_tokens"], "served_by": served_by,
            "ms": round((time.perf_counter() - started) * 1000, 1), "time": time.time(),
        }
    )  # fmt: skip
    return JSONResponse(
        {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": MODEL_ID, "choices": choices, "usage": usage, "crucible": {"served_by": served_by},
        }
    )  # fmt: skip
