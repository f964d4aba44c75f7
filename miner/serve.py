"""The miner's server: model info, generate and logprobs for the committed model.

Built on the wire-protocol toolkit (``server.NeuronServer``), so every request is authenticated,
rate-limited and every answer signed by the miner's hotkey. The model lives in a ``ModelSlot``
that a publish swaps atomically: requests in flight finish on the old model, new ones get the new
one, with no downtime. Torch work runs in a worker thread, one request at a time per model (a
2-core CPU gains nothing from interleaving them; on a GPU raise ``max_parallel``).
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from crucible.chain.interface import Chain, Signer
from crucible.protocol.errors import RequestError
from crucible.protocol.messages import (
    GENERATE_PATH,
    INFO_PATH,
    LOGPROBS_PATH,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
)
from crucible.scoring.losses import token_logprobs
from crucible.server import Access, CallContext, NeuronServer, RoutePolicy

__all__ = ["ModelSlot", "ServedModel", "build_miner_server", "generate_tokens"]


@dataclass(frozen=True)
class ServedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    competition: str
    commitment: str | None
    commit_block: int | None
    max_positions: int


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
) -> tuple[list[int], str]:
    """Sampling with an explicit generator, so the same request gives the same answer."""
    generator = torch.Generator().manual_seed(seed)
    ids = list(token_ids)
    out: list[int] = []
    finish = "length"
    past = None
    with torch.inference_mode():
        for _ in range(max_new_tokens):
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
            if temperature == 0:
                token = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                if top_k:
                    kth = torch.topk(probs, min(top_k, probs.numel())).values[-1]
                    probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
                if top_p < 1.0:
                    sorted_probs, order = torch.sort(probs, descending=True)
                    keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
                    mask = torch.zeros_like(probs, dtype=torch.bool).scatter(0, order[keep], True)
                    probs = torch.where(mask, probs, torch.zeros_like(probs))
                token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
            out.append(token)
            ids.append(token)
            if eos_token_id is not None and token == eos_token_id:
                finish = "stop"
                break
    return out, finish


def build_miner_server(
    keypair: Signer,
    chain: Chain,
    netuid: int,
    slot: ModelSlot,
    *,
    public_generate: bool = True,
    metagraph_refresh_s: float = 12.0,
    policies: dict[str, RoutePolicy] | None = None,
) -> NeuronServer:
    """``policies`` overrides a route's policy by path (e.g. higher limits for a trusted gateway)."""
    server = NeuronServer(
        keypair, chain, netuid, metagraph_refresh_s=metagraph_refresh_s, title="crucible-miner"
    )
    gate = asyncio.Semaphore(1)

    async def info(_: None, __: CallContext) -> ModelInfoResponse:
        served = slot.current
        return ModelInfoResponse(
            hotkey=keypair.ss58_address,
            competition_id=served.competition,
            commitment=served.commitment,
            commit_block=served.commit_block,
            max_input_tokens=min(4096, served.max_positions),
        )

    async def logprobs(request: LogprobsRequest, _: CallContext) -> LogprobsResponse:
        served = slot.current
        vocab = len(served.tokenizer)
        if len(request.token_ids) > served.max_positions or max(request.token_ids) >= vocab:
            raise RequestError(
                f"at most {served.max_positions} tokens with ids below {vocab}", code="malformed"
            )
        async with gate:
            values = await asyncio.to_thread(token_logprobs, served.model, request.token_ids)
        values = [min(0.0, v) if math.isfinite(v) else -1e30 for v in values]
        return LogprobsResponse(token_ids=request.token_ids, logprobs_nats=values)

    async def generate(request: GenerateRequest, _: CallContext) -> GenerateResponse:
        served = slot.current
        tok = served.tokenizer
        ids = (
            request.token_ids if request.token_ids is not None else tok.encode(request.prompt or "")
        )
        if not ids or max(ids) >= len(tok):
            raise RequestError(
                f"the prompt must encode to token ids below {len(tok)}", code="malformed"
            )
        s = request.sampling
        async with gate:
            new, finish = await asyncio.to_thread(
                generate_tokens, served.model, list(ids), request.max_new_tokens, temperature=s.temperature,
                top_p=s.top_p, top_k=s.top_k, seed=s.seed, eos_token_id=tok.eos_token_id,
                max_positions=served.max_positions,
            )  # fmt: skip
        return GenerateResponse(token_ids=new, text=tok.decode(new), finish_reason=finish)

    defaults = {
        INFO_PATH: RoutePolicy(access=Access.SIGNED),
        LOGPROBS_PATH: RoutePolicy(timeout_s=60),
        GENERATE_PATH: RoutePolicy(
            access=Access.SIGNED if public_generate else Access.REGISTERED,
            rate_per_s=2,
            burst=4,
            timeout_s=120,
        ),
    }
    chosen = {**defaults, **(policies or {})}
    server.route(INFO_PATH, None, ModelInfoResponse, info, policy=chosen[INFO_PATH])
    server.route(
        LOGPROBS_PATH, LogprobsRequest, LogprobsResponse, logprobs, policy=chosen[LOGPROBS_PATH]
    )
    server.route(
        GENERATE_PATH, GenerateRequest, GenerateResponse, generate, policy=chosen[GENERATE_PATH]
    )
    return server
