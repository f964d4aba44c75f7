"""A validator-run gateway with an OpenAI-compatible API in front of the subnet's best miners.

``POST /v1/completions`` and ``GET /v1/models``, authenticated by API keys (``Authorization:
Bearer KEY``, keys from a JSON file), rate-limited per key, with usage appended to a JSON-lines
log. Each completion is answered by ``client.subnet.Subnet`` (top miners by incentive, signed and
commitment-checked answers, fallback on failure), so the official ``openai`` package works
unchanged with ``base_url=http://HOST:PORT/v1``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crucible.client.subnet import NoAnswer, Subnet
from crucible.protocol.errors import ConfigError
from crucible.protocol.messages import SamplingParams
from crucible.server.errors import RateLimited
from crucible.server.limits import RateLimiter

__all__ = ["ApiKeys", "CompletionRequest", "build_gateway"]

MODEL_ID = "crucible-subnet"


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


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str = MODEL_ID
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1, le=1024)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0)


def _error(status: int, message: str, kind: str, code: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind, "code": code}}
    )


def build_gateway(
    subnet: Subnet,
    keys: ApiKeys,
    *,
    usage_log: Path | None = None,
    rate_per_s: float = 2.0,
    burst: int = 5,
) -> FastAPI:
    app = FastAPI(title="Crucible gateway", openapi_url=None, docs_url=None)
    limiter = RateLimiter(rate_per_s, burst)
    log_lock = threading.Lock()

    def caller(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        key = header.removeprefix("Bearer ").strip()
        return key if key in keys.names else None

    def record(entry: dict) -> None:
        if usage_log is None:
            return
        usage_log.parent.mkdir(parents=True, exist_ok=True)
        with log_lock, usage_log.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

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
            body = CompletionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(
                400,
                f"invalid request: {exc.errors(include_url=False, include_input=False)[0]['msg']}",
                "invalid_request_error",
                "malformed",
            )
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        sampling = SamplingParams(
            temperature=body.temperature, top_p=body.top_p, seed=body.seed or 0
        )
        choices, started = [], time.perf_counter()
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        served_by = []
        for index, prompt in enumerate(prompts):
            try:
                answer = await subnet.ask_async(
                    prompt, max_tokens=body.max_tokens, sampling=sampling
                )
            except NoAnswer as exc:
                record(
                    {"key": keys.names[key], "ok": False, "error": str(exc), "time": time.time()}
                )
                return _error(503, str(exc), "server_error", "no_miner_answered")
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
                    "uid": answer.uid,
                    "hotkey": answer.hotkey,
                    "commitment": answer.commitment,
                    "latency_ms": round(answer.latency_ms, 1),
                }
            )
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        record(
            {
                "key": keys.names[key],
                "ok": True,
                "completion_tokens": usage["completion_tokens"],
                "served_by": served_by,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "time": time.time(),
            }
        )
        return JSONResponse(
            {
                "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": MODEL_ID, "choices": choices, "usage": usage, "crucible": {"served_by": served_by},
            }
        )  # fmt: skip

    return app
