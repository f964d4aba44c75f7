"""Query the subnet: ``Subnet(chain, netuid, keypair).ask("prompt")``, or stream the answer:
``for item in subnet.stream("prompt"): ...`` (``Started``, then ``Delta``s, then ``Finished``).

``ask`` picks miners by incentive (top-k among those serving an endpoint and holding a
commitment) and queries them concurrently with the signed client. ``stream`` asks one miner at a
time, best first by incentive weighed by the latency this client measured
(``client.ranking.LatencyBook``), and moves on to the next on any failure before the first token
— a refusal, a timeout, a broken signature, another model than committed — so a caller sees
tokens from exactly one miner; a failure after the first token ends the stream with
``StreamBroken``. The chain is the authority on what each miner must
serve: an answer counts only if its signature proves the miner's hotkey produced it and the
commitment it states, signed with the answer, is the one the chain holds for that hotkey now —
so an answer from any other model is a signed lie the validators' probes (indistinguishable from
client requests) can catch. ``Answer.commitment`` is the chain's. The best answer by incentive
wins; timeouts and mismatches fall back to the next; if nobody answers, ``NoAnswer`` lists why
for each miner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from crucible.chain.interface import Chain, Metagraph, Neuron, Signer
from crucible.client.ranking import LatencyBook
from crucible.client.transport import CallResult, EventStream, SignedClient, StreamBroken, Target
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.errors import CommitmentError, CrucibleError
from crucible.protocol.messages import (
    GENERATE_PATH,
    GENERATE_STREAM_PATH,
    INFO_PATH,
    LOGPROBS_PATH,
    STREAM_DELTA,
    STREAM_END,
    STREAM_START,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    StreamStart,
    TokenLogprob,
)

__all__ = [
    "Answer",
    "Delta",
    "Finished",
    "MinerInfo",
    "NoAnswer",
    "Started",
    "StreamBroken",
    "StreamItem",
    "Subnet",
    "competition_of",
]

STREAM_KINDS = {STREAM_START: StreamStart, STREAM_DELTA: StreamDelta, STREAM_END: StreamEnd}


class NoAnswer(CrucibleError):
    code = "no_answer"


@dataclass(frozen=True)
class MinerInfo:
    uid: int
    hotkey: str
    incentive: float
    endpoint: str | None
    commitment: str | None
    served_commitment: str | None = None
    reachable: bool | None = None
    error: str = ""


@dataclass(frozen=True)
class Answer:
    text: str
    token_ids: list[int]
    uid: int
    hotkey: str
    latency_ms: float
    commitment: str | None
    finish_reason: str
    attempts: dict[int, str] = field(default_factory=dict)  # uid → outcome of every miner asked
    prompt_tokens: int = 0


@dataclass(frozen=True)
class Started:
    """A miner's stream began (its first token follows): who, from which model, the prompt."""

    uid: int
    hotkey: str
    commitment: str | None  # the chain's, which the miner's signed first frame matched
    prompt_tokens: int
    prompt_text: str | None
    prompt_logprobs: list[TokenLogprob] | None
    ttft_ms: float
    attempts: dict[int, str]  # uid → outcome of every miner asked


@dataclass(frozen=True)
class Delta:
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None


@dataclass(frozen=True)
class Finished:
    finish_reason: str
    completion_tokens: int
    latency_ms: float


StreamItem = Started | Delta | Finished


def competition_of(commitment: str | None) -> str | None:
    """The model competition (``tiny@1``) a model commitment names; None for anything else (no
    commitment, a validator's bundle anchor, a collab payload: they serve no answers)."""
    try:
        return ModelCommitment.parse(commitment).competition if commitment else None
    except CommitmentError:
        return None


def _judge_answer(neuron: Neuron, result: CallResult[GenerateResponse] | None) -> str:
    """ "ok", or why this miner's answer does not count."""
    if result is None:
        return "no endpoint"
    if not result.ok or result.value is None:
        return f"{result.code}: {result.error}"
    if result.value.commitment != neuron.commitment.data:
        return "answered from another model than its on-chain commitment: skipped"
    return "ok"


class Subnet:
    """``metagraph_ttl_s`` bounds how stale the miner ranking may be (a block is 12 s); one pooled
    client is kept per event loop, so a long-lived caller (the gateway) reuses connections."""

    def __init__(
        self,
        chain: Chain,
        netuid: int,
        keypair: Signer,
        *,
        top_k: int = 3,
        timeout_s: float = 20.0,
        metagraph_ttl_s: float = 0.0,
        stream_timeout_s: float = 300.0,
        max_attempts: int = 4,
    ) -> None:
        """``timeout_s`` bounds each call (and each wait inside a stream), ``stream_timeout_s``
        a whole stream; ``max_attempts`` is how many miners a stream tries before giving up."""
        self.chain, self.netuid, self.keypair = chain, netuid, keypair
        self.top_k, self.timeout_s, self.metagraph_ttl_s = top_k, timeout_s, metagraph_ttl_s
        self.stream_timeout_s, self.max_attempts = stream_timeout_s, max(1, max_attempts)
        self.latency = LatencyBook()
        self._metagraph: tuple[float, Metagraph] | None = None
        self._clients: dict[int, SignedClient] = {}

    def _current_metagraph(self) -> Metagraph:
        now = time.monotonic()
        if self._metagraph is None or now - self._metagraph[0] >= self.metagraph_ttl_s:
            self._metagraph = (now, self.chain.metagraph(self.netuid))
        return self._metagraph[1]

    def _client(self) -> SignedClient:
        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            self._clients[loop] = SignedClient(self.keypair, timeout_s=self.timeout_s)
        return self._clients[loop]

    async def aclose(self) -> None:
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.close()

    def candidates(self, competition: str | None = None) -> list[Neuron]:
        """Miners serving an endpoint with a commitment (of ``competition``), by incentive."""
        mg = self._current_metagraph()
        serving = [
            n
            for n in mg.neurons
            if n.endpoint is not None
            and n.commitment is not None
            and competition_of(n.commitment.data) is not None
            and competition in (None, competition_of(n.commitment.data))
        ]
        return sorted(serving, key=lambda n: (-n.incentive, n.uid))

    def ranked(self, competition: str | None = None) -> list[Neuron]:
        """``candidates`` in the order a stream tries them (``client.ranking``)."""
        return self.latency.order(self.candidates(competition))

    def caller(self) -> Neuron | None:
        """This client's own neuron on the subnet (None: unregistered)."""
        return self._current_metagraph().by_hotkey(self.keypair.ss58_address)

    async def _info(
        self, client: SignedClient, neurons: list[Neuron]
    ) -> dict[int, CallResult[ModelInfoResponse]]:
        targets = [Target.from_neuron(n) for n in neurons]
        results = await client.call_many(
            [t for t in targets if t], INFO_PATH, None, ModelInfoResponse, timeout_s=self.timeout_s
        )
        return {r.target.uid: r for r in results}

    async def miners_async(self) -> list[MinerInfo]:
        mg = self.chain.metagraph(self.netuid)
        neurons = [n for n in mg.neurons if n.endpoint is not None]
        async with SignedClient(self.keypair, timeout_s=self.timeout_s) as client:
            infos = await self._info(client, neurons)
        out = []
        for n in sorted(mg.neurons, key=lambda n: (-n.incentive, n.uid)):
            info = infos.get(n.uid)
            out.append(
                MinerInfo(
                    uid=n.uid, hotkey=n.hotkey, incentive=n.incentive,
                    endpoint=n.endpoint.url if n.endpoint else None,
                    commitment=n.commitment.data if n.commitment else None,
                    served_commitment=info.value.commitment if info and info.value else None,
                    reachable=None if info is None else info.ok,
                    error="" if info is None or info.ok else f"{info.code}: {info.error}",
                )
            )  # fmt: skip
        return out

    def miners(self) -> list[MinerInfo]:
        return asyncio.run(self.miners_async())

    async def ask_async(
        self,
        prompt: str,
        *,
        max_tokens: int = 32,
        sampling: SamplingParams | None = None,
        top_k: int | None = None,
    ) -> Answer:
        ranked = self.candidates()
        if not ranked:
            raise NoAnswer(f"no miner on netuid {self.netuid} serves an endpoint with a commitment")
        request = GenerateRequest(
            prompt=prompt, max_new_tokens=max_tokens, sampling=sampling or SamplingParams()
        )
        attempts: dict[int, str] = {}
        k = top_k or self.top_k
        client = self._client()
        try:
            # ask the top k at once; if none of them gives a valid answer, fall back to the next k
            for start in range(0, len(ranked), k):
                batch = ranked[start : start + k]
                targets = [t for t in (Target.from_neuron(n) for n in batch) if t]
                answers = await client.call_many(
                    targets, GENERATE_PATH, request, GenerateResponse, timeout_s=self.timeout_s
                )
                by_uid = {r.target.uid: r for r in answers}
                for neuron in batch:
                    attempts[neuron.uid] = _judge_answer(neuron, by_uid.get(neuron.uid))
                best = next((n for n in batch if attempts[n.uid] == "ok"), None)
                if best is not None:
                    result = by_uid[best.uid]
                    return Answer(
                        text=result.value.text, token_ids=result.value.token_ids, uid=best.uid, hotkey=best.hotkey,
                        latency_ms=result.latency_ms, commitment=best.commitment.data,
                        finish_reason=result.value.finish_reason, attempts=attempts,
                        prompt_tokens=result.value.prompt_tokens,
                    )  # fmt: skip
        finally:
            if self.metagraph_ttl_s <= 0:  # a one-shot caller: do not leave the session open
                await self.aclose()
        reasons = "; ".join(f"uid {uid}: {why}" for uid, why in attempts.items())
        raise NoAnswer(f"no miner gave a valid answer ({reasons})")

    def ask(self, prompt: str, **kwargs: object) -> Answer:
        return asyncio.run(self.ask_async(prompt, **kwargs))

    # -- streaming -------------------------------------------------------------------------

    async def stream_async(
        self, request: GenerateRequest, *, competition: str | None = None
    ) -> AsyncIterator[StreamItem]:
        """``request``'s answer from the best miner that starts one (module doc).

        Raises ``NoAnswer`` (every reason, per uid) if none of ``max_attempts`` miners started
        a valid stream, and ``StreamBroken`` if the chosen one fails after its first token."""
        ranked = self.ranked(competition)
        if not ranked:
            where = f"competition {competition}" if competition else f"netuid {self.netuid}"
            raise NoAnswer(f"no miner of {where} serves an endpoint with a commitment")
        attempts: dict[int, str] = {}
        client = self._client()
        try:
            for neuron in ranked[: self.max_attempts]:
                opened = await self._open(client, neuron, request, attempts)
                if opened is None:
                    continue
                stream, head, started_s = opened
                async for item in self._relay(neuron, stream, head, started_s, attempts):
                    yield item
                return
        finally:
            if self.metagraph_ttl_s <= 0:  # a one-shot caller: do not leave the session open
                await self.aclose()
        reasons = "; ".join(f"uid {uid}: {why}" for uid, why in attempts.items())
        raise NoAnswer(f"no miner gave a valid answer ({reasons})")

    async def _open(
        self,
        client: SignedClient,
        neuron: Neuron,
        request: GenerateRequest,
        attempts: dict[int, str],
    ) -> tuple[EventStream, list, float] | None:
        """Open ``neuron``'s stream and read up to its first token; None (and why, in
        ``attempts``) if it fails before that."""
        target = Target.from_neuron(neuron)
        if target is None:
            attempts[neuron.uid] = "no endpoint"
            return None
        started_s = time.perf_counter()
        stream = await client.open_stream(
            target, GENERATE_STREAM_PATH, request, STREAM_KINDS,
            timeout_s=self.stream_timeout_s, idle_timeout_s=self.timeout_s,
        )  # fmt: skip
        if not stream.opened.ok:
            attempts[neuron.uid] = f"{stream.opened.code}: {stream.opened.error}"
            self.latency.failed(neuron.hotkey)
            return None
        try:
            head = [await anext(stream)]
            if head[0][0] != STREAM_START:
                raise StreamBroken("the stream does not begin with its start", code="bad_stream")
            if head[0][1].commitment != neuron.commitment.data:
                attempts[neuron.uid] = (
                    "answered from another model than its on-chain commitment: skipped"
                )
                await stream.close()
                self.latency.failed(neuron.hotkey)
                return None
            head.append(await anext(stream))  # the first token (or the end)
        except (StreamBroken, StopAsyncIteration) as exc:
            why = f"{exc.code}: {exc.message}" if isinstance(exc, StreamBroken) else "empty stream"
            attempts[neuron.uid] = why
            await stream.close()
            self.latency.failed(neuron.hotkey)
            return None
        attempts[neuron.uid] = "ok"
        self.latency.record(neuron.hotkey, time.perf_counter() - started_s)
        return stream, head, started_s

    async def _relay(
        self,
        neuron: Neuron,
        stream: EventStream,
        head: list[tuple[str, object]],
        started_s: float,
        attempts: dict[int, str],
    ) -> AsyncIterator[StreamItem]:
        start: StreamStart = head[0][1]
        yield Started(
            uid=neuron.uid, hotkey=neuron.hotkey, commitment=neuron.commitment.data,
            prompt_tokens=start.prompt_tokens, prompt_text=start.prompt_text,
            prompt_logprobs=start.prompt_logprobs,
            ttft_ms=(time.perf_counter() - started_s) * 1000, attempts=dict(attempts),
        )  # fmt: skip
        pending = head[1:]
        try:
            async with stream:
                while True:
                    if pending:
                        kind, message = pending.pop(0)
                    else:
                        try:
                            kind, message = await anext(stream)
                        except StopAsyncIteration:
                            raise StreamBroken(
                                "the stream ended without its end frame", code="stream_truncated"
                            ) from None
                    if kind == STREAM_DELTA:
                        yield Delta(message.token_ids, message.text, message.logprobs)
                    elif kind == STREAM_END:
                        latency = (time.perf_counter() - started_s) * 1000
                        yield Finished(message.finish_reason, message.completion_tokens, latency)
                        return
                    else:
                        raise StreamBroken(f"unexpected {kind!r} frame", code="bad_stream")
        except StreamBroken:
            self.latency.failed(neuron.hotkey)
            raise

    def stream(
        self, prompt: str, *, competition: str | None = None, **fields: object
    ) -> Iterator[StreamItem]:
        """Blocking ``stream_async`` for CLIs: ``fields`` are ``GenerateRequest``'s (e.g.
        ``max_new_tokens``, ``sampling``, ``stop``); items arrive as the miner produces them."""
        request = GenerateRequest(prompt=prompt, **fields)
        loop = asyncio.new_event_loop()
        items = self.stream_async(request, competition=competition)
        try:
            while True:
                try:
                    yield loop.run_until_complete(anext(items))
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(items.aclose())
            loop.run_until_complete(self.aclose())
            loop.close()

    def logprobs(self, token_ids: list[int]) -> tuple[int, list[float]]:
        """log-probabilities from the top-incentive miner that answers: (uid, values)."""

        async def run() -> tuple[int, list[float]]:
            async with SignedClient(self.keypair, timeout_s=self.timeout_s) as client:
                for neuron in self.candidates():
                    target = Target.from_neuron(neuron)
                    result = await client.call(
                        target,
                        LOGPROBS_PATH,
                        LogprobsRequest(token_ids=token_ids),
                        LogprobsResponse,
                    )
                    if result.ok and result.value is not None:
                        return neuron.uid, result.value.logprobs_nats
            raise NoAnswer("no miner answered the logprobs request")

        return asyncio.run(run())
