"""Request/response schemas for the miner endpoints (wire version 1).

Every message is a frozen, strict pydantic model with ``extra="forbid"``: unknown fields, wrong
types (``"5"`` for ``5``), out-of-range numbers and oversized lists are refused, never coerced.
Bounds are module constants so servers, clients and tests agree on them. Parsing untrusted bytes
goes through :func:`parse_message`, which raises only ``RequestError`` (code ``malformed``) and
also bounds what no schema sees: JSON nesting depth and the size of integers.

Sampling parameters are floored, not just range-checked: a temperature of 5e-324 or a top-p of
1e-300 is a valid float in range that makes every probability NaN, so ``temperature`` is 0
(greedy) or at least ``MIN_TEMPERATURE`` and ``top_p`` at least ``MIN_TOP_P``.

Endpoints (all ``/v1/...``):

=========  =======================  ======================  ===============================
method     path                     request                 response
=========  =======================  ======================  ===============================
GET        ``/v1/info``             (empty body)            ``ModelInfoResponse``
POST       ``/v1/generate``         ``GenerateRequest``     ``GenerateResponse``
POST       ``/v1/generate/stream``  ``GenerateRequest``     server-sent events (below)
POST       ``/v1/logprobs``         ``LogprobsRequest``     ``LogprobsResponse``
=========  =======================  ======================  ===============================

Errors on every route are ``ErrorResponse``: ``{"error": {"code": ..., "message": ...}}``.

Fields added since wire version 1 first shipped (``stop``, ``logprobs`` and ``echo`` on a request)
are left out of the JSON while they hold their default, so a request that does not use them is
byte for byte what an older miner accepts.

**The generation stream** (``/v1/generate/stream``) answers ``text/event-stream``: one
``STREAM_START`` frame (``StreamStart``: the commitment the answer comes from, the prompt's token
count and, with ``echo``, its text and log-probabilities), then one ``STREAM_DELTA`` frame per
generated token (``StreamDelta``), then exactly one ``STREAM_END`` (``StreamEnd``) or
``STREAM_ERROR`` (``ErrorResponse``) frame. A frame is ``event: KIND``, ``data: JSON`` (one line)
and, on signed frames, ``sig: 0x…``, ended by a blank line. Every frame is bound into a hash
chain and the first and last frames (and one at least every second) carry the miner's signature
over it (``protocol.auth``, ``crucible-stream/1``), so a client checks who answered and the
commitment before the first token, and that nothing was changed once the stream ends. A request
refused before the stream starts is an ordinary signed JSON error with its status.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import from_json

from crucible.protocol.errors import RequestError

__all__ = [
    "GENERATE_PATH",
    "GENERATE_STREAM_PATH",
    "INFO_PATH",
    "LOGPROBS_PATH",
    "MAX_COMMITMENT_CHARS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_INPUT_TOKENS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_NEW_TOKENS",
    "MAX_OUTPUT_TEXT_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_STOP_CHARS",
    "MAX_STOP_SEQUENCES",
    "MAX_TOKEN_TEXT_CHARS",
    "MAX_TOP_K",
    "MAX_TOP_LOGPROBS",
    "MAX_VOCAB_ID",
    "MIN_TEMPERATURE",
    "MIN_TOP_P",
    "STREAM_DELTA",
    "STREAM_END",
    "STREAM_ERROR",
    "STREAM_KINDS",
    "STREAM_START",
    "WIRE_VERSION",
    "ErrorDetail",
    "ErrorResponse",
    "GenerateRequest",
    "GenerateResponse",
    "LogprobsRequest",
    "LogprobsResponse",
    "Message",
    "ModelInfoResponse",
    "SamplingParams",
    "StreamDelta",
    "StreamEnd",
    "StreamStart",
    "TokenLogprob",
    "TopLogprob",
    "parse_message",
]

WIRE_VERSION = 1

INFO_PATH = "/v1/info"
GENERATE_PATH = "/v1/generate"
GENERATE_STREAM_PATH = "/v1/generate/stream"
LOGPROBS_PATH = "/v1/logprobs"

# Bounds. Generous for the competitions we run (sequence lengths ≤ 2048, vocabularies ≤ 256k),
# tight enough that one request cannot make a miner allocate unbounded memory or compute.
MAX_INPUT_TOKENS = 4096
MAX_VOCAB_ID = 1 << 20  # token ids are in [0, MAX_VOCAB_ID)
MAX_PROMPT_CHARS = 16_384
MAX_NEW_TOKENS = 1024
MAX_OUTPUT_TEXT_CHARS = 65_536
MAX_TOP_K = 1000
MAX_SEED = (1 << 63) - 1
MIN_TEMPERATURE = 1e-3  # below this (except 0 = greedy) softmax(logits / T) under/overflows
MIN_TOP_P = 1e-3
MAX_JSON_DEPTH = 8  # our deepest message nests 2 levels; jiter alone would allow ~200
MAX_JSON_INT = 1 << 64  # |integer| in a body; jiter alone would allow ~4300 digits
MAX_COMMITMENT_CHARS = 128  # the chain's commitment limit
MAX_ERROR_MESSAGE_CHARS = 1024
MAX_STOP_SEQUENCES = 8  # OpenAI allows 4; a chat template adds its own turn markers
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20  # alternatives per token (OpenAI: 5 on completions, 20 on chat)
MAX_TOKEN_TEXT_CHARS = 256  # the text of one token
MAX_ECHO_TEXT_CHARS = 4 * MAX_PROMPT_CHARS  # a prompt given as token ids, decoded

# the frames of a generation stream, in order: one start, deltas, one end or error
STREAM_START, STREAM_DELTA, STREAM_END, STREAM_ERROR = "start", "delta", "end", "error"
STREAM_KINDS = (STREAM_START, STREAM_DELTA, STREAM_END, STREAM_ERROR)

TokenId = Annotated[int, Field(ge=0, lt=MAX_VOCAB_ID)]
Ss58 = Annotated[str, Field(min_length=46, max_length=50, pattern=r"^[1-9A-HJ-NP-Za-km-z]+$")]


class Message(BaseModel):
    """Base of every wire message: strict, closed, immutable, carrying the wire version."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    version: Literal[1] = WIRE_VERSION


class SamplingParams(Message):
    """How to pick the next token. ``temperature == 0`` means greedy (``top_p``/``top_k`` unused)."""

    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=MIN_TOP_P, le=1.0)
    top_k: int = Field(default=0, ge=0, le=MAX_TOP_K)  # 0 = no top-k cut
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    @field_validator("temperature")
    @classmethod
    def _greedy_or_floored(cls, value: float) -> float:
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}")
        return value


class ModelInfoResponse(Message):
    """Which model a miner serves: its hotkey, the competition and the on-chain commitment."""

    hotkey: Ss58
    competition_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    commitment: str | None = Field(default=None, max_length=MAX_COMMITMENT_CHARS)
    commit_block: int | None = Field(default=None, ge=0)
    max_input_tokens: int = Field(default=MAX_INPUT_TOKENS, ge=1, le=MAX_INPUT_TOKENS)
    max_new_tokens: int = Field(default=MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)


StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


def _unset(value: object) -> bool:
    """A field added after wire version 1 shipped is left out of the JSON at its default."""
    return value is None or value is False or value == []


class GenerateRequest(Message):
    """Continue a prompt. Exactly one of ``prompt`` (text) or ``token_ids`` is given.

    ``stop``: generation ends before the first of these strings appears (it is not part of the
    text; ``finish_reason`` is ``"stop"``). ``logprobs``: give each generated token's
    log-probability under the model (before temperature) and its ``logprobs`` most likely
    alternatives. ``echo``: give the prompt back — its text and, with ``logprobs``, the
    log-probability of each of its tokens (the first has none)."""

    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    token_ids: list[TokenId] | None = Field(default=None, min_length=1, max_length=MAX_INPUT_TOKENS)
    max_new_tokens: int = Field(default=32, ge=1, le=MAX_NEW_TOKENS)
    sampling: SamplingParams = SamplingParams()
    stop: list[StopSequence] = Field(
        default_factory=list, max_length=MAX_STOP_SEQUENCES, exclude_if=_unset
    )
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS, exclude_if=_unset)
    echo: bool = Field(default=False, exclude_if=_unset)

    @model_validator(mode="after")
    def _exactly_one_input(self) -> GenerateRequest:
        if (self.prompt is None) == (self.token_ids is None):
            raise ValueError("give exactly one of 'prompt' or 'token_ids'")
        return self


class _Part(BaseModel):
    """A nested part of a message: strict and closed like ``Message``, without a version."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _finite_logprob(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be finite (-inf is sent as -1e30)")
    return value


# A log-probability is ≤ 0 (float rounding allowed just above) and finite.
Logprob = Annotated[float, Field(le=1e-6), AfterValidator(_finite_logprob)]


class TopLogprob(_Part):
    """One of the most likely tokens at a position."""

    id: TokenId
    text: str = Field(max_length=MAX_TOKEN_TEXT_CHARS)
    logprob: Logprob


class TokenLogprob(_Part):
    """A token of the prompt or the continuation: its text (a token that ends inside a UTF-8
    character decodes to U+FFFD), where it starts in its part's text (characters), its
    log-probability (``None`` for the prompt's first token: nothing predicts it) and the most
    likely alternatives."""

    id: TokenId
    text: str = Field(max_length=MAX_TOKEN_TEXT_CHARS)
    offset: int = Field(ge=0, le=MAX_ECHO_TEXT_CHARS)
    logprob: Logprob | None
    top: list[TopLogprob] = Field(default_factory=list, max_length=MAX_TOP_LOGPROBS)


class GenerateResponse(Message):
    """The continuation: its token ids and decoded text, why generation stopped, and the
    commitment of the model that produced it — a statement the miner signs with the answer, so
    an answer from another model than the one committed is the miner's provable lie.

    ``prompt_tokens`` is the prompt's length in the miner's tokenizer; ``prompt_text`` and
    ``prompt_logprobs`` answer ``echo``, ``logprobs`` answers ``logprobs`` (one per token)."""

    token_ids: list[TokenId] = Field(max_length=MAX_NEW_TOKENS)
    text: str = Field(max_length=MAX_OUTPUT_TEXT_CHARS)
    finish_reason: Literal["length", "stop"]
    commitment: str | None = Field(default=None, max_length=MAX_COMMITMENT_CHARS)
    prompt_tokens: int = Field(default=0, ge=0, le=MAX_INPUT_TOKENS)
    prompt_text: str | None = Field(default=None, max_length=MAX_ECHO_TEXT_CHARS, exclude_if=_unset)
    prompt_logprobs: list[TokenLogprob] | None = Field(
        default=None, max_length=MAX_INPUT_TOKENS, exclude_if=_unset
    )
    logprobs: list[TokenLogprob] | None = Field(
        default=None, max_length=MAX_NEW_TOKENS, exclude_if=_unset
    )


class StreamStart(Message):
    """The first frame of a generation stream: who answers from which model, and the prompt."""

    commitment: str | None = Field(default=None, max_length=MAX_COMMITMENT_CHARS)
    prompt_tokens: int = Field(ge=0, le=MAX_INPUT_TOKENS)
    prompt_text: str | None = Field(default=None, max_length=MAX_ECHO_TEXT_CHARS, exclude_if=_unset)
    prompt_logprobs: list[TokenLogprob] | None = Field(
        default=None, max_length=MAX_INPUT_TOKENS, exclude_if=_unset
    )


class StreamDelta(Message):
    """One step of a generation stream: the new token(s) and the text they release. Text is
    held back while it could be the start of a stop sequence or ends inside a character."""

    token_ids: list[TokenId] = Field(max_length=MAX_NEW_TOKENS)
    text: str = Field(max_length=MAX_OUTPUT_TEXT_CHARS)
    logprobs: list[TokenLogprob] | None = Field(
        default=None, max_length=MAX_NEW_TOKENS, exclude_if=_unset
    )


class StreamEnd(Message):
    """The last frame of a stream that completed: why it stopped and how many tokens it made."""

    finish_reason: Literal["length", "stop"]
    completion_tokens: int = Field(ge=0, le=MAX_NEW_TOKENS)


class LogprobsRequest(Message):
    """Score a token sequence: the log-probability of every token after the first."""

    token_ids: list[TokenId] = Field(min_length=2, max_length=MAX_INPUT_TOKENS)


class LogprobsResponse(Message):
    """``logprobs_nats[i]`` is ``log p(token_ids[i + 1] | token_ids[: i + 1])`` in nats."""

    token_ids: list[TokenId] = Field(min_length=2, max_length=MAX_INPUT_TOKENS)
    logprobs_nats: list[float] = Field(min_length=1, max_length=MAX_INPUT_TOKENS - 1)

    @model_validator(mode="after")
    def _one_per_predicted_token(self) -> LogprobsResponse:
        if len(self.logprobs_nats) != len(self.token_ids) - 1:
            raise ValueError("need exactly one logprob per token after the first")
        for value in self.logprobs_nats:
            # A log-probability is ≤ 0; allow float rounding just above 0.
            if not math.isfinite(value) or value > 1e-6:
                raise ValueError("logprobs must be finite and ≤ 0")
        return self


class ErrorDetail(Message):
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=MAX_ERROR_MESSAGE_CHARS)


class ErrorResponse(BaseModel):
    """``{"error": {"code": ..., "message": ...}}`` — the body of every non-2xx response."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    error: ErrorDetail


M = TypeVar("M", bound=BaseModel)


def _check_json_shape(value: Any) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` and integers of ``MAX_JSON_INT`` or more."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for child in node.values() if isinstance(node, dict) else node:
            if type(child) is int:
                if not -MAX_JSON_INT < child < MAX_JSON_INT:
                    raise ValueError("an integer is out of range (|n| < 2**64)")
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1))


def parse_message(model: type[M], raw: bytes) -> M:
    """Parse untrusted JSON bytes into ``model``; any problem raises ``RequestError``.

    The message names the first offending field (never echoes the input), so it is safe to send
    back to the caller.
    """
    try:
        # jiter parses in Rust, so this first pass is cheap next to validation; it lets us bound
        # depth and integer size before any schema sees the body.
        _check_json_shape([from_json(raw, allow_inf_nan=True)])
    except ValueError as exc:
        raise RequestError(
            f"invalid {model.__name__}: body: {str(exc)[:200]}",
            code="malformed",
            fix="send JSON matching the /v1 schema in protocol/messages.py",
        ) from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise RequestError(
            f"invalid {model.__name__}: {where}: {first.get('msg', 'invalid')}"[
                :MAX_ERROR_MESSAGE_CHARS
            ],
            code="malformed",
            fix="send JSON matching the /v1 schema in protocol/messages.py",
        ) from None
    except ValueError as exc:  # e.g. bytes that are not UTF-8 before pydantic sees them
        raise RequestError(
            f"invalid {model.__name__}: {type(exc).__name__}", code="malformed"
        ) from None
