"""The miner's server: model info, generate and logprobs for the committed model.

Built on the wire-protocol toolkit (``server.NeuronServer``), so every request is authenticated,
rate-limited and every answer signed by the miner's hotkey. The model lives in a ``ModelSlot``
that a publish swaps atomically: requests in flight finish on the old model, new ones get the new
one, with no downtime.

Model work (tokenizing, generating, scoring) never runs on the event loop and never first come,
first served: it is admitted by the server's ``Capacity`` (validators first, then registered
callers by stake; unregistered callers share one small global budget and never take the
reserved slot) and runs in a worker thread that holds its slot until it has really ended
(``server.worker``). Generation checks the cancel flag between tokens, so a request whose
handler timed out stops computing within one token. ``ServingLimits`` holds the bounds: how
many new tokens a registered or an unregistered caller may ask for, and the capacity shares.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from crucible.chain.interface import Chain, Neuron, Signer
from crucible.protocol.errors import ConfigError, RequestError
from crucible.protocol.messages import (
    GENERATE_PATH,
    INFO_PATH,
    LOGPROBS_PATH,
    MAX_NEW_TOKENS,
    MAX_OUTPUT_TEXT_CHARS,
    MIN_TEMPERATURE,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
)
from crucible.scoring.losses import token_logprobs
from crucible.server import (
    Access,
    CallContext,
    Caller,
    Capacity,
    CapacityConfig,
    NeuronServer,
    RoutePolicy,
    WorkCancelled,
    run_admitted,
)

__all__ = [
    "PUBLIC_MAX_NEW_TOKENS",
    "ModelSlot",
    "ServedModel",
    "ServingLimits",
    "build_miner_server",
    "generate_tokens",
]

PUBLIC_MAX_NEW_TOKENS = 256

T = TypeVar("T")


@dataclass(frozen=True)
class ServedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    competition: str
    commitment: str | None
    commit_block: int | None
    max_positions: int


@dataclass(frozen=True)
class ServingLimits:
    """What one request may ask of a miner, and how its model's capacity is shared."""

    max_new_tokens: int = MAX_NEW_TOKENS  # registered callers
    public_max_new_tokens: int = PUBLIC_MAX_NEW_TOKENS  # unregistered callers
    capacity: CapacityConfig = CapacityConfig()

    def __post_init__(self) -> None:
        if not 1 <= self.public_max_new_tokens <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ConfigError(
                f"need 1 ≤ public_max_new_tokens ≤ max_new_tokens ≤ {MAX_NEW_TOKENS} (got "
                f"{self.public_max_new_tokens} and {self.max_new_tokens})"
            )

    def max_new_tokens_for(self, neuron: Neuron | None) -> int:
        return self.public_max_new_tokens if neuron is None else self.max_new_tokens


class ModelSlot:
    """Holds the model being served; ``swap`` replaces it atomically."""

    def __init__(self, served: ServedModel) -> None:
        self._served = served
        self._lock = threading.Lock()

    @property
    def current(self) -> ServedModel:
        return self._served

    def swap(self, served: ServedModel) -> None:
        with self._lock:
            self._served = served


def generate_tokens(
    model: PreTrainedModel,
    token_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int,
    eos_token_id: int | None,
    max_positions: int,
    cancel: threading.Event | None = None,
) -> tuple[list[int], str]:
    """Sampling with an explicit generator, so the same request gives the same answer.

    Raises ``WorkCancelled`` at the next token once ``cancel`` is set (nobody waits any more)."""
    generator = torch.Generator().manual_seed(seed)
    ids = list(token_ids)
    out: list[int] = []
    finish = "length"
    past = None
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            if cancel is not None and cancel.is_set():
                raise WorkCancelled(f"generation stopped after {len(out)} tokens: abandoned")
            if past is not None and len(ids) <= max_positions:
                # the key/value cache holds the prefix: feed only the newest token
                result = model(input_ids=torch.tensor([ids[-1:]]), cache=past, use_cache=True)
            else:  # first step, or past the model's context: recompute over the last window
                result = model(
                    input_ids=torch.tensor([ids[-max_positions:]]),
                    use_cache=len(ids) < max_positions,
                )
            past = result.get("cache") if len(ids) < max_positions else None
            logits = result.logits[0, -1, :].float()
            token = _next_token(logits, temperature, top_p, top_k, generator)
            out.append(token)
            ids.append(token)
            if eos_token_id is not None and token == eos_token_id:
                finish = "stop"
                break
    return out, finish


def _next_token(
    logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator: torch.Generator
) -> int:
    """One token from ``logits``; greedy when the sampling distribution is degenerate.

    The schema floors temperature and top-p, but a model's own logits may hold inf or NaN, so
    the distribution is cleaned and renormalised here rather than trusted: a bad model gives a
    bad answer, never an exception."""
    logits = torch.nan_to_num(logits, nan=-math.inf)
    greedy = int(torch.argmax(logits))
    if temperature == 0:
        return greedy
    probs = torch.softmax(logits / max(temperature, MIN_TEMPERATURE), dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0, posinf=0.0, neginf=0.0)
    if top_k:
        kth = torch.topk(probs, min(top_k, probs.numel())).values[-1]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
        mask = torch.zeros_like(probs, dtype=torch.bool).scatter(0, order[keep], True)
        probs = torch.where(mask, probs, torch.zeros_like(probs))
    total = float(probs.sum())
    if not (math.isfinite(total) and total > 0.0):
        return greedy
    return int(torch.multinomial(probs / total, 1, generator=generator))


def _prompt_ids(request: GenerateRequest, served: ServedModel) -> list[int]:
    tok = served.tokenizer
    ids = request.token_ids if request.token_ids is not None else tok.encode(request.prompt or "")
    if not ids or max(ids) >= len(tok):
        raise RequestError(
            f"the prompt must encode to token ids below {len(tok)}", code="malformed"
        )
    return list(ids)


def _default_policies(public_generate: bool) -> dict[str, RoutePolicy]:
    # Timeouts are seconds, not minutes: the validator's probe gives up after 10 s, and a
    # request that needs longer than these is not one the competition needs served.
    return {
        INFO_PATH: RoutePolicy(access=Access.SIGNED),
        # public: a validator's probe may come from any hotkey (a stranger's request may be a
        # probe), so a miner cannot serve honestly to validators alone
        LOGPROBS_PATH: RoutePolicy(access=Access.SIGNED, timeout_s=15),
        GENERATE_PATH: RoutePolicy(
            access=Access.SIGNED if public_generate else Access.REGISTERED,
            rate_per_s=2,
            burst=4,
            timeout_s=30,
        ),
    }


class _Handlers:
    """The three routes over one ``ModelSlot``; model work is admitted by one ``Capacity``."""

    def __init__(self, hotkey: str, slot: ModelSlot, limits: ServingLimits) -> None:
        self.hotkey, self.slot, self.limits = hotkey, slot, limits
        self.capacity = Capacity(limits.capacity)
        self.tokenizer_lock = threading.Lock()  # fast tokenizers are not documented thread-safe

    async def _run_model(self, ctx: CallContext, work: Callable[[threading.Event], T]) -> T:
        grant = await self.capacity.admit(Caller.of(ctx.neuron))
        return await run_admitted(grant, work)

    async def info(self, _: None, ctx: CallContext) -> ModelInfoResponse:
        served = self.slot.current
        return ModelInfoResponse(
            hotkey=self.hotkey,
            competition_id=served.competition,
            commitment=served.commitment,
            commit_block=served.commit_block,
            max_input_tokens=min(4096, served.max_positions),
            max_new_tokens=self.limits.max_new_tokens_for(ctx.neuron),
        )

    async def logprobs(self, request: LogprobsRequest, ctx: CallContext) -> LogprobsResponse:
        served = self.slot.current
        vocab = len(served.tokenizer)
        if len(request.token_ids) > served.max_positions or max(request.token_ids) >= vocab:
            raise RequestError(
                f"at most {served.max_positions} tokens with ids below {vocab}", code="malformed"
            )
        values = await self._run_model(
            ctx, lambda _: token_logprobs(served.model, request.token_ids)
        )
        values = [min(0.0, v) if math.isfinite(v) else -1e30 for v in values]
        return LogprobsResponse(token_ids=request.token_ids, logprobs_nats=values)

    async def generate(self, request: GenerateRequest, ctx: CallContext) -> GenerateResponse:
        limit = self.limits.max_new_tokens_for(ctx.neuron)
        if request.max_new_tokens > limit:
            who = "unregistered" if ctx.neuron is None else "registered"
            raise RequestError(
                f"max_new_tokens {request.max_new_tokens} is over this miner's limit of "
                f"{limit} for {who} callers",
                code="limit_exceeded",
                fix=f"ask for at most {limit} new tokens (GET {INFO_PATH} tells the limit)",
            )
        served, s = self.slot.current, request.sampling

        def work(cancel: threading.Event) -> GenerateResponse:
            with self.tokenizer_lock:
                ids = _prompt_ids(request, served)
            new, finish = generate_tokens(
                served.model, ids, request.max_new_tokens, temperature=s.temperature,
                top_p=s.top_p, top_k=s.top_k, seed=s.seed, cancel=cancel,
                eos_token_id=served.tokenizer.eos_token_id, max_positions=served.max_positions,
            )  # fmt: skip
            with self.tokenizer_lock:
                text = served.tokenizer.decode(new)[:MAX_OUTPUT_TEXT_CHARS]
            return GenerateResponse(
                token_ids=new, text=text, finish_reason=finish, commitment=served.commitment
            )

        return await self._run_model(ctx, work)


def build_miner_server(
    keypair: Signer,
    chain: Chain,
    netuid: int,
    slot: ModelSlot,
    *,
    public_generate: bool = True,
    metagraph_refresh_s: float = 12.0,
    policies: dict[str, RoutePolicy] | None = None,
    limits: ServingLimits | None = None,
) -> NeuronServer:
    """``policies`` overrides a route's policy by path (e.g. higher limits for a trusted gateway);
    ``limits`` bounds what a request may ask and how the model's capacity is shared."""
    server = NeuronServer(
        keypair, chain, netuid, metagraph_refresh_s=metagraph_refresh_s, title="crucible-miner"
    )
    handlers = _Handlers(keypair.ss58_address, slot, limits or ServingLimits())
    chosen = {**_default_policies(public_generate), **(policies or {})}
    server.route(INFO_PATH, None, ModelInfoResponse, handlers.info, policy=chosen[INFO_PATH])
    server.route(
        LOGPROBS_PATH,
        LogprobsRequest,
        LogprobsResponse,
        handlers.logprobs,
        policy=chosen[LOGPROBS_PATH],
    )
    server.route(
        GENERATE_PATH,
        GenerateRequest,
        GenerateResponse,
        handlers.generate,
        policy=chosen[GENERATE_PATH],
    )
    return server
