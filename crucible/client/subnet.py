"""Query the subnet: ``Subnet(chain, netuid, keypair).ask("prompt")``.

Miners are picked by incentive (top-k among those serving an endpoint and holding a commitment),
queried concurrently with the signed client. The chain is the authority on what each miner must
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
from dataclasses import dataclass, field

from crucible.chain.interface import Chain, Metagraph, Neuron, Signer
from crucible.client.transport import CallResult, SignedClient, Target
from crucible.protocol.errors import CrucibleError
from crucible.protocol.messages import (
    GENERATE_PATH,
    INFO_PATH,
    LOGPROBS_PATH,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
    SamplingParams,
)

__all__ = ["Answer", "MinerInfo", "NoAnswer", "Subnet"]


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
    ) -> None:
        self.chain, self.netuid, self.keypair = chain, netuid, keypair
        self.top_k, self.timeout_s, self.metagraph_ttl_s = top_k, timeout_s, metagraph_ttl_s
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

    def candidates(self) -> list[Neuron]:
        mg = self._current_metagraph()
        serving = [n for n in mg.neurons if n.endpoint is not None and n.commitment is not None]
        return sorted(serving, key=lambda n: (-n.incentive, n.uid))

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
                    )  # fmt: skip
        finally:
            if self.metagraph_ttl_s <= 0:  # a one-shot caller: do not leave the session open
                await self.aclose()
        reasons = "; ".join(f"uid {uid}: {why}" for uid, why in attempts.items())
        raise NoAnswer(f"no miner gave a valid answer ({reasons})")

    def ask(self, prompt: str, **kwargs: object) -> Answer:
        return asyncio.run(self.ask_async(prompt, **kwargs))

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
