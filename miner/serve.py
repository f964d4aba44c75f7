"""The miner's server: model info, generate (whole or streamed) and logprobs for the committed model.

Built on the wire-protocol toolkit (``server.NeuronServer``), so every request is authenticated,
rate-limited and every answer signed by the miner's hotkey (a stream frame by frame,
crucible-stream/1). The model lives in a ``ModelSlot`` that a publish swaps atomically: requests
in flight finish on the old model, new ones get the new one, with no downtime.

Model work never runs on the event loop and never first come, first served: it is admitted by
the server's ``Capacity`` (validators first, then registered callers by stake; unregistered
callers share one small global budget and never take the reserved slots). Admission decides
*who* runs; how it runs is ``ServingLimits.batching``:

- on (the default): the ``server.batcher.Batcher`` steps every admitted request of the model in
  one forward pass per token (continuous batching), so ``Capacity``'s slots are the rows of that
  batch;
- off: each admitted request runs alone in a worker thread (``server.worker``), one forward per
  token — the server as it was, kept for comparison (``bench/serve.py``).

Both give the same answers: every per-request decision (sampling with its seed, stop sequences,
log-probabilities, echo) is made by ``server.sequence.Sequence``, and only the forward pass is
shared. A request whose caller stops waiting stops computing at the next token, and its slot is
released only once its work has really ended.

Limits (``ServingLimits``): how many new tokens a registered or an unregistered caller may ask
for, and the capacity shares. Per-hotkey rates (``RoutePolicy``) are tight for everyone except
callers with a validator permit (``RoutePolicy.validator``): a permit is bought with stake and
granted by the chain, which makes it the allowance the protocol agrees for a validator's own
traffic — its probes, and the OpenAI gateway it runs on its hotkey.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from crucible.chain.interface import Chain, Neuron, Signer
from crucible.protocol.errors import ConfigError, RequestError
from crucible.protocol.messages import (
    GENERATE_PATH,
    GENERATE_STREAM_PATH,
    INFO_PATH,
    LOGPROBS_PATH,
    MAX_NEW_TOKENS,
    STREAM_END,
    STREAM_ERROR,
    STREAM_START,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
    StreamDelta,
    StreamEnd,
    StreamStart,
)
from crucible.scoring.losses import token_logprobs
from crucible.server import (
    Access,
    CallContext,
    Caller,
    Capacity,
    CapacityConfig,
    Grant,
    NeuronServer,
    RoutePolicy,
    WorkCancelled,
    run_admitted,
)
from crucible.server.batcher import Batcher, decode_step, run_alone
from crucible.server.policy import TierLimits
from crucible.server.sequence import Decoding, Sequence, next_token
from crucible.server.textstream import Vocabulary

__all__ = [
    "BATCHED_CAPACITY",
    "PUBLIC_MAX_NEW_TOKENS",
    "ModelSlot",
    "ServedModel",
    "ServingLimits",
    "build_miner_server",
    "generate_tokens",
    "token_logprobs",
]

PUBLIC_MAX_NEW_TOKENS = 256
# With batching, a slot is a row of the shared forward pass, not a thread: many cost little more
# than one. A quarter of them at most for unregistered callers.
BATCHED_CAPACITY = CapacityConfig(slots=32, public_slots=8, max_waiting=64, public_max_waiting=4)
VALIDATOR_TIER = TierLimits(rate_per_s=50.0, burst=100, max_concurrent=32)


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
    """What one request may ask of a miner, and how its model's capacity is shared.

    ``capacity`` defaults to ``BATCHED_CAPACITY`` with batching and to ``CapacityConfig()``
    (two requests at a time) without."""

    max_new_tokens: int = MAX_NEW_TOKENS  # registered callers
    public_max_new_tokens: int = PUBLIC_MAX_NEW_TOKENS  # unregistered callers
    capacity: CapacityConfig | None = None
    batching: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.public_max_new_tokens <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ConfigError(
                f"need 1 ≤ public_max_new_tokens ≤ max_new_tokens ≤ {MAX_NEW_TOKENS} (got "
                f"{self.public_max_new_tokens} and {self.max_new_tokens})"
            )

    @property
    def capacity_config(self) -> CapacityConfig:
        if self.capacity is not None:
            return self.capacity
        return BATCHED_CAPACITY if self.batching else CapacityConfig()

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
            step_logits, past = decode_step(model, ids, past, max_positions)
            logits = step_logits[-1, :].float()
            token = next_token(logits, temperature, top_p, top_k, generator)
            out.append(token)
            ids.append(token)
            if eos_token_id is not None and token == eos_token_id:
                finish = "stop"
                break
    return out, finish


def _default_policies(public_generate: bool) -> dict[str, RoutePolicy]:
    # Timeouts are seconds, not minutes: the validator's probe gives up after 10 s, and a
    # request that needs longer than these is not one the competition needs served.
    generate = RoutePolicy(
        access=Access.SIGNED if public_generate else Access.REGISTERED,
        rate_per_s=2,
        burst=4,
        timeout_s=30,
        validator=VALIDATOR_TIER,
    )
    return {
        INFO_PATH: RoutePolicy(access=Access.SIGNED),
        # public: a validator's probe may come from any hotkey (a stranger's request may be a
        # probe), so a miner cannot serve honestly to validators alone
        LOGPROBS_PATH: RoutePolicy(access=Access.SIGNED, timeout_s=15, validator=VALIDATOR_TIER),
        GENERATE_PATH: generate,
        # a stream's timeout bounds the whole answer: a long one at a few tokens a second
        GENERATE_STREAM_PATH: RoutePolicy(
            access=generate.access, rate_per_s=2, burst=4, timeout_s=120, validator=VALIDATOR_TIER
        ),
    }


@dataclass
class _Work:
    """One admitted generation: where its events arrive, and how to stop it."""

    seq: Sequence
    events: asyncio.Queue[tuple[str, Any]]


def _collect_into_response(
    start: StreamStart, deltas: list[StreamDelta], end: StreamEnd
) -> GenerateResponse:
    logprobs = (
        [lp for d in deltas for lp in d.logprobs or []] if deltas and deltas[0].logprobs else None
    )
    return GenerateResponse(
        token_ids=[t for d in deltas for t in d.token_ids],
        text="".join(d.text for d in deltas),
        finish_reason=end.finish_reason,
        commitment=start.commitment,
        prompt_tokens=start.prompt_tokens,
        prompt_text=start.prompt_text,
        prompt_logprobs=start.prompt_logprobs,
        logprobs=logprobs,
    )


class _Handlers:
    """The routes over one ``ModelSlot``; model work is admitted by one ``Capacity`` and run by
    the ``Batcher`` (or, without batching, one worker thread per request)."""

    def __init__(self, hotkey: str, slot: ModelSlot, limits: ServingLimits) -> None:
        self.hotkey, self.slot, self.limits = hotkey, slot, limits
        self.capacity = Capacity(limits.capacity_config)
        self.batcher = Batcher() if limits.batching else None
        self._vocab: Vocabulary | None = None
        self._mailbox: _Mailbox | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # unbatched work still running

    def mailbox(self) -> _Mailbox:
        loop = asyncio.get_running_loop()
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = _Mailbox(loop)
        return self._mailbox

    def vocab(self, served: ServedModel) -> Vocabulary:
        vocab = self._vocab
        if vocab is None or vocab.tokenizer is not served.tokenizer:
            vocab = self._vocab = Vocabulary(served.tokenizer)
        return vocab

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

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

    # -- logprobs --------------------------------------------------------------------------

    async def logprobs(self, request: LogprobsRequest, ctx: CallContext) -> LogprobsResponse:
        served = self.slot.current
        vocab = len(served.tokenizer)
        if len(request.token_ids) > served.max_positions or max(request.token_ids) >= vocab:
            raise RequestError(
                f"at most {served.max_positions} tokens with ids below {vocab}", code="malformed"
            )
        grant = await self.capacity.admit(Caller.of(ctx.neuron))
        if self.batcher is None:
            values = await run_admitted(
                grant, lambda _: token_logprobs(served.model, request.token_ids)
            )
        else:
            values = await self._score(grant, served, request.token_ids)
        values = [min(0.0, v) if math.isfinite(v) else -1e30 for v in values]
        return LogprobsResponse(token_ids=request.token_ids, logprobs_nats=values)

    async def _score(self, grant: Grant, served: ServedModel, ids: list[int]) -> list[float]:
        mailbox = self.mailbox()
        answer: asyncio.Future[list[float]] = mailbox.loop.create_future()
        cancel = threading.Event()

        def on_result(result: list[float] | BaseException) -> None:
            mailbox.post(_resolve, answer, result)

        self.batcher.submit_score(
            served.model, ids, on_result, cancel, lambda: mailbox.post(grant.release)
        )
        try:
            return await answer
        finally:
            cancel.set()  # nobody waits any more (a timeout): drop it if it has not run

    # -- generate --------------------------------------------------------------------------

    async def generate(self, request: GenerateRequest, ctx: CallContext) -> GenerateResponse:
        events = await self.generate_stream(request, ctx)
        start, deltas, end = None, [], None
        async with aclosing(events):
            async for kind, message in events:
                if kind == STREAM_START:
                    start = message
                elif kind == STREAM_END:
                    end = message
                else:
                    deltas.append(message)
        return _collect_into_response(start, deltas, end)

    async def generate_stream(
        self, request: GenerateRequest, ctx: CallContext
    ) -> AsyncIterator[tuple[str, BaseModel]]:
        """Admit, tokenize and start the generation; its events (``server.sequence``)."""
        self._check_limit(request, ctx)
        served = self.slot.current
        grant = await self.capacity.admit(Caller.of(ctx.neuron))
        try:
            vocab = self.vocab(served)
            ids = await asyncio.to_thread(_prompt_ids, request, served, vocab)
            work = self._start(request, served, vocab, ids, grant)
        except BaseException:
            grant.release()
            raise
        return self._events(work)

    def _check_limit(self, request: GenerateRequest, ctx: CallContext) -> None:
        limit = self.limits.max_new_tokens_for(ctx.neuron)
        if request.max_new_tokens > limit:
            who = "unregistered" if ctx.neuron is None else "registered"
            raise RequestError(
                f"max_new_tokens {request.max_new_tokens} is over this miner's limit of "
                f"{limit} for {who} callers",
                code="limit_exceeded",
                fix=f"ask for at most {limit} new tokens (GET {INFO_PATH} tells the limit)",
            )

    def _start(
        self,
        request: GenerateRequest,
        served: ServedModel,
        vocab: Vocabulary,
        ids: list[int],
        grant: Grant,
    ) -> _Work:
        mailbox = self.mailbox()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        s = request.sampling
        decoding = Decoding(
            max_new_tokens=request.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
            top_k=s.top_k, seed=s.seed, stop=tuple(request.stop), logprobs=request.logprobs,
            echo=request.echo, eos_token_id=served.tokenizer.eos_token_id,
        )  # fmt: skip
        seq = Sequence(
            ids,
            decoding,
            vocab,
            commitment=served.commitment,
            sink=lambda kind, item: mailbox.post(queue.put_nowait, (kind, item)),
        )
        work = _Work(seq, queue)
        if self.batcher is not None:
            on_done = lambda: mailbox.post(grant.release)  # noqa: E731
            self.batcher.submit_generate(served.model, served.max_positions, seq, on_done)
            return work

        def alone(_: threading.Event) -> None:
            try:
                run_alone(served.model, seq, served.max_positions)
            except Exception as exc:  # the stream ends with the error; the thread ends cleanly
                seq.fail(exc)

        task = asyncio.create_task(run_admitted(grant, alone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return work

    async def _events(self, work: _Work) -> AsyncIterator[tuple[str, BaseModel]]:
        try:
            while True:
                kind, item = await work.events.get()
                if kind == STREAM_ERROR:
                    raise item
                yield kind, item
                if kind == STREAM_END:
                    return
        finally:
            work.seq.cancel.set()  # a no-op once it has ended; otherwise it stops at the next token


class _Mailbox:
    """Calls from the engine or worker threads onto the server's event loop, as many as have
    piled up per wake-up: one step of a batch of 16 wakes the loop once, not 16 times (each
    wake-up costs the engine thread the GIL)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._calls: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def post(self, callback: Callable[..., object], *args: object) -> None:
        with self._lock:
            self._calls.append((callback, args))
            if len(self._calls) > 1:
                return  # a drain is already on its way
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the server's loop is gone (shutdown): nobody is left to tell
            pass

    def _drain(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for callback, args in calls:
            callback(*args)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _prompt_ids(request: GenerateRequest, served: ServedModel, vocab: Vocabulary) -> list[int]:
    ids = request.token_ids if request.token_ids is not None else vocab.encode(request.prompt or "")
    if not ids or max(ids) >= len(vocab):
        raise RequestError(
            f"the prompt must encode to token ids below {len(vocab)}", code="malformed"
        )
    if request.echo and request.logprobs is not None and len(ids) > served.max_positions:
        raise RequestError(
            f"echo with logprobs scores at most {served.max_positions} prompt tokens (this "
            f"model's context); the prompt has {len(ids)}",
            code="limit_exceeded",
            fix="shorten the prompt, or ask without echo",
        )
    return list(ids)


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
    ``limits`` bounds what a request may ask and how the model's capacity is shared (and whether
    requests are batched)."""
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
    server.stream_route(
        GENERATE_STREAM_PATH,
        GenerateRequest,
        handlers.generate_stream,
        policy=chosen[GENERATE_STREAM_PATH],
    )
    _close_on_shutdown(server.app, handlers)
    return server


def _close_on_shutdown(app: FastAPI, handlers: _Handlers) -> None:
    """Stop the batcher's engine thread when the server shuts down (after its own lifespan)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(application):
                yield
        finally:
            await asyncio.to_thread(handlers.close)

    app.router.lifespan_context = lifespan
