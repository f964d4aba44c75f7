"""OpenAI's completions and chat completions, translated to and from the miners' wire protocol.

Pure: request bodies in, miner ``GenerateRequest``s out; miner answers in, OpenAI response
objects and stream chunks out. The gateway (``client.gateway``) does the I/O.

What is served (and how it maps):

- ``POST /v1/completions``: ``prompt`` (a string, a list of strings, a list of token ids or a
  list of lists), ``max_tokens`` (default 16; 0 gives no new tokens — with ``echo`` and
  ``logprobs`` that is log-likelihood scoring, as evaluation harnesses use it), ``temperature``
  (default 1), ``top_p`` (default 1), ``seed`` (the same seed gives the same sample; choice
  ``i`` of a request uses ``seed + i``; no seed: a random one), ``n``, ``stop`` (up to 4),
  ``logprobs`` (0–5 alternatives; values are the model's own log-probabilities, before
  temperature), ``echo``, ``stream`` (+ ``stream_options.include_usage``). ``usage`` counts the
  prompt in the miner's tokenizer.
- ``POST /v1/chat/completions``: ``messages`` rendered with ``CHAT_TEMPLATE`` (below), then as a
  completion that stops at the next turn; ``max_tokens`` / ``max_completion_tokens`` (default
  256), ``logprobs`` + ``top_logprobs`` (0–20), and the sampling fields above.
- Parameters we cannot honour are refused with a 400 naming them, never silently ignored:
  ``suffix``, ``best_of`` > 1, a non-empty ``logit_bias``, non-zero penalties, tools and
  functions, a ``response_format`` other than text. Unknown fields are ignored (clients send
  many).

``CHAT_TEMPLATE``: the models are base (not instruction-tuned) language models, so a chat is
rendered as a plain transcript, one paragraph per message — ``System: …``, ``User: …``,
``Assistant: …`` (``developer`` reads as ``System``) — ending in ``Assistant:``; the reply is the
continuation up to the next ``\\nUser:``, ``\\nAssistant:`` or ``\\nSystem:`` (or the caller's own
stop sequences), with its leading whitespace removed.

Errors are ``ApiError`` (an HTTP status, OpenAI's ``type``, our stable ``code``, the offending
``param``), sent in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crucible.protocol.errors import CrucibleError
from crucible.protocol.messages import (
    MAX_INPUT_TOKENS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_VOCAB_ID,
    GenerateRequest,
    SamplingParams,
    TokenLogprob,
    parse_message,
)

__all__ = [
    "CHAT_STOPS",
    "DEFAULT_MODEL",
    "MAX_CHOICES",
    "MAX_PROMPTS",
    "ApiError",
    "Ask",
    "ChatRequest",
    "Choice",
    "CompletionRequest",
    "chat_logprobs",
    "completion_logprobs",
    "parse_chat",
    "parse_completion",
    "render_chat",
]

DEFAULT_MODEL = "crucible-subnet"
MAX_PROMPTS = 16  # prompts in one request
MAX_CHOICES = 16  # prompts × n: each choice is one miner request
MAX_USER_STOPS = 4
MAX_COMPLETION_LOGPROBS = 5
MAX_CHAT_TOP_LOGPROBS = 20
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default
DEFAULT_CHAT_MAX_TOKENS = 256
CHAT_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
CHAT_STOPS = ("\nUser:", "\nAssistant:", "\nSystem:")


class ApiError(CrucibleError):
    """An OpenAI-shaped error: ``status``, ``kind`` (OpenAI's ``type``), ``code``, ``param``."""

    code = "invalid_request"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status, self.kind, self.param = status, kind, param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message[:1024],
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def _invalid(message: str, param: str | None = None, code: str = "malformed") -> ApiError:
    return ApiError(400, message, code=code, param=param)


Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
TokenIds = Annotated[
    list[Annotated[int, Field(ge=0, lt=MAX_VOCAB_ID)]],
    Field(min_length=1, max_length=MAX_INPUT_TOKENS),
]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Request(BaseModel):
    """What completions and chat share. Unknown fields are ignored (clients send many)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(default=DEFAULT_MODEL, max_length=256)
    temperature: float | None = None  # None: OpenAI's default, 1
    top_p: float | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | list[Stop] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    user: str | None = Field(default=None, max_length=256)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_USER_STOPS:
            raise _invalid(f"at most {MAX_USER_STOPS} stop sequences", "stop")
        return tuple(stops)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def refuse_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise _invalid(f"{name} is not supported (only 0)", name, "unsupported_parameter")
        if self.logit_bias:
            raise _invalid("logit_bias is not supported", "logit_bias", "unsupported_parameter")

    def sampling(self, choice: int, base_seed: int) -> SamplingParams:
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        seed = (base_seed + choice) % (MAX_SEED + 1)
        try:
            return SamplingParams(temperature=float(temperature), top_p=float(top_p), seed=seed)
        except ValidationError as exc:
            raise _from_validation(exc) from None


class CompletionRequest(_Request):
    """OpenAI's (legacy) completions request (module doc)."""

    prompt: Prompt | list[Prompt] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(default=None, ge=0)
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # one prompt of token ids
        return list(p)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str = Field(max_length=MAX_PROMPT_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(max_length=MAX_PROMPT_CHARS)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(_Request):
    """OpenAI's chat completions request (module doc)."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def wants_logprobs(self) -> bool:
        return self.logprobs

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise _invalid(
                    f"{name} are not supported by base models", name, "unsupported_parameter"
                )
        if self.tool_choice not in (None, "none"):
            raise _invalid("tool_choice is not supported", "tool_choice", "unsupported_parameter")
        if self.response_format not in (None, {"type": "text"}):
            raise _invalid(
                'only response_format {"type": "text"} is supported',
                "response_format",
                "unsupported_parameter",
            )


def render_chat(messages: list[ChatMessage]) -> str:
    """The chat as the plain transcript a base model continues (module doc)."""
    turns = [f"{CHAT_ROLES[m.role]}: {m.text().strip()}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


@dataclass(frozen=True)
class Ask:
    """One choice: the miner request that answers it."""

    index: int  # OpenAI's choice index: prompt × n + choice
    prompt_index: int
    request: GenerateRequest
    keep_tokens: bool  # False when max_tokens is 0: one token is asked for and dropped


def _from_validation(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(part) for part in first.get("loc", ())]
    where = ".".join(loc) or "body"
    return _invalid(f"invalid request: {where}: {first.get('msg')}", loc[0] if loc else None)


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return parse_message(model, raw)
    except CrucibleError as exc:
        # parse_message names the first offending field: "invalid X: field: why"
        param = exc.message.split(": ")[1] if exc.message.count(": ") >= 2 else None
        raise _invalid(exc.message, param and param.split(".")[0]) from None


def _max_tokens(wanted: int | None, default: int, limit: int) -> int:
    wanted = min(default, limit) if wanted is None else wanted
    if wanted > limit:
        raise _invalid(
            f"max_tokens {wanted} is over this gateway's limit of {limit}",
            "max_tokens",
            "limit_exceeded",
        )
    return wanted


def _asks(
    body: _Request,
    prompts: list[str | list[int]],
    max_tokens: int,
    **fields: Any,
) -> list[Ask]:
    if len(prompts) > MAX_PROMPTS or len(prompts) * body.n > MAX_CHOICES:
        raise _invalid(f"at most {MAX_CHOICES} choices (prompts × n) per request", "n")
    base_seed = secrets.randbelow(MAX_SEED + 1) if body.seed is None else body.seed
    asks = []
    for p, prompt in enumerate(prompts):
        source = {"prompt": prompt} if isinstance(prompt, str) else {"token_ids": prompt}
        for i in range(body.n):
            try:
                request = GenerateRequest(
                    **source,
                    max_new_tokens=max(1, max_tokens),
                    sampling=body.sampling(i, base_seed),
                    **fields,
                )
            except ValidationError as exc:
                raise _from_validation(exc) from None
            asks.append(Ask(p * body.n + i, p, request, keep_tokens=max_tokens > 0))
    return asks


def parse_completion(raw: bytes, limit: int) -> tuple[CompletionRequest, list[Ask]]:
    """A completions body → the request and one ``Ask`` per choice, or ``ApiError``."""
    body: CompletionRequest = _parse(CompletionRequest, raw)
    body.refuse_unsupported()
    if body.suffix:
        raise _invalid("suffix is not supported", "suffix", "unsupported_parameter")
    if body.best_of not in (None, 1, body.n):
        raise _invalid("best_of is not supported", "best_of", "unsupported_parameter")
    max_tokens = _max_tokens(body.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS, limit)
    asks = _asks(
        body, body.prompts(), max_tokens,
        stop=list(body.stops()), logprobs=body.logprobs, echo=body.echo,
    )  # fmt: skip
    return body, asks


def parse_chat(raw: bytes, limit: int) -> tuple[ChatRequest, list[Ask]]:
    """A chat completions body → the request and one ``Ask`` per choice, or ``ApiError``."""
    body: ChatRequest = _parse(ChatRequest, raw)
    body.refuse_unsupported()
    prompt = render_chat(body.messages)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _invalid(f"the conversation is over {MAX_PROMPT_CHARS} characters", "messages")
    wanted = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    max_tokens = _max_tokens(wanted, DEFAULT_CHAT_MAX_TOKENS, limit)
    top = body.top_logprobs or 0
    asks = _asks(
        body, [prompt], max_tokens,
        stop=[*CHAT_STOPS, *body.stops()], logprobs=top if body.logprobs else None,
    )  # fmt: skip
    return body, asks


# -- answers ----------------------------------------------------------------------------------


@dataclass
class Choice:
    """One choice's answer as it accumulates (a stream's deltas, or all of them)."""

    ask: Ask
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    prompt_text: str | None = None
    prompt_logprobs: list[TokenLogprob] | None = None
    served_by: dict[str, Any] = field(default_factory=dict)
    sent: int = 0  # characters of the (chat) content already streamed

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids) if self.ask.keep_tokens else 0


def completion_logprobs(
    tokens: list[TokenLogprob], shift: int = 0, prompt: list[TokenLogprob] | None = None
) -> dict[str, list[Any]]:
    """OpenAI's completion ``logprobs`` object: ``prompt`` tokens (echo) first, then ``tokens``
    whose offsets move by ``shift`` (the echoed prompt's length)."""
    out: dict[str, list[Any]] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    for t, offset in [(t, t.offset) for t in prompt or []] + [
        (t, t.offset + shift) for t in tokens
    ]:
        out["tokens"].append(t.text)
        out["token_logprobs"].append(t.logprob)
        out["top_logprobs"].append(
            None if t.logprob is None else {a.text: a.logprob for a in t.top}
        )
        out["text_offset"].append(offset)
    return out


def chat_logprobs(tokens: list[TokenLogprob]) -> dict[str, list[Any]]:
    """OpenAI's chat ``logprobs`` object (``content``: token, logprob, bytes, top_logprobs)."""

    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            {
                **entry(t.text, t.logprob or 0.0),
                "top_logprobs": [entry(a.text, a.logprob) for a in t.top],
            }
            for t in tokens
        ]
    }
