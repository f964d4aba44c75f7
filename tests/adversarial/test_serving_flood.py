"""A flood of free hotkeys cannot starve a miner's validators or its registered clients.

Found by attacking the old server: 50 fresh unregistered hotkeys keeping 32 generate requests in
flight made the validator's logprobs probe take 10.7 s (it gives up at 10 s, and the miner loses
its serving share) and a registered client's request 21 s. One gate for every route, first come
first served, limits per hotkey only. Here the same flood meets a miner built with its default
limits: a real chain, a real tiny model served over real HTTP on 127.0.0.1, the validator's own
probe (``validator.probe.probe_miners``) and a registered client's generate. Both must succeed
within their usual timeouts while the flooders are refused with a code.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import numpy as np

from crucible.chain.interface import ServeEndpoint, Signer
from crucible.chain.local.node import LocalNode
from crucible.client.transport import CallResult, SignedClient, Target
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import (
    PUBLIC_MAX_NEW_TOKENS,
    ModelSlot,
    ServedModel,
    build_miner_server,
)
from crucible.models.build import tiny_model
from crucible.protocol.messages import (
    GENERATE_PATH,
    GenerateRequest,
    GenerateResponse,
    SamplingParams,
)
from crucible.server import run_in_thread
from crucible.validator.probe import ProbePlan, probe_miners
from tests.conftest import TEST_HYPERPARAMETERS, keypair
from tests.conftest import TestNeuron as Registered

FLOOD_HOTKEYS, IN_FLIGHT = 50, 32
PROMPT = "It is a truth universally acknowledged, that a single man in possession " * 6
REFUSALS = {
    (429, "public_rate_limited"),  # the one global budget of unregistered callers is spent
    (503, "public_queue_full"),  # its bounded queue is full
    (429, "rate_limited"),  # this fresh hotkey's own bucket is empty
    (429, "too_many_concurrent"),
}


async def _flood(target: Target, stop: asyncio.Event, results: list[CallResult]) -> int:
    """``IN_FLIGHT`` workers cycling through ``FLOOD_HOTKEYS`` unregistered hotkeys, each sending
    the most expensive public request allowed, again and again, until ``stop``."""
    clients = [SignedClient(keypair(f"flooder-{i}"), timeout_s=60) for i in range(FLOOD_HOTKEYS)]
    sent = 0

    async def worker(index: int) -> None:
        nonlocal sent
        rng = random.Random(index)
        while not stop.is_set():
            request = GenerateRequest(
                prompt=PROMPT,
                max_new_tokens=PUBLIC_MAX_NEW_TOKENS,
                sampling=SamplingParams(temperature=1.0, seed=rng.randrange(1 << 32)),
            )
            sent += 1
            result = await rng.choice(clients).call(
                target, GENERATE_PATH, request, GenerateResponse
            )
            results.append(result)
            if not result.ok:
                await asyncio.sleep(0.1)  # a refusal comes back at once: retry soon

    workers = [asyncio.create_task(worker(i)) for i in range(IN_FLIGHT)]
    try:
        await stop.wait()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for client in clients:
            await client.close()
    return sent


async def _under_flood(
    target: Target,
    probe: Callable[[], dict[int, str]],
    client_hotkey: Signer,
) -> tuple[dict[int, str], CallResult, list[CallResult], int]:
    stop, results = asyncio.Event(), []
    flood = asyncio.create_task(_flood(target, stop, results))
    try:
        await asyncio.sleep(1.5)  # let the flood take hold: every worker has a request out
        async with SignedClient(client_hotkey, timeout_s=10) as client:
            request = GenerateRequest(prompt="Thou art", max_new_tokens=16)
            failures, answer = await asyncio.gather(
                asyncio.to_thread(probe),  # the validator's probe runs its own event loop
                client.call(target, GENERATE_PATH, request, GenerateResponse),
            )
    finally:
        stop.set()
        sent = await flood
    return failures, answer, results, sent


def test_a_flood_of_fresh_hotkeys_cannot_starve_the_validator_probe_or_a_registered_client(
    node: LocalNode, neuron_factory: Callable[..., Registered]
) -> None:
    miner, client = neuron_factory("flood-miner"), neuron_factory("flood-client")
    validator = neuron_factory("flood-validator", stake_tao=100)
    node.step(TEST_HYPERPARAMETERS.tempo)  # an epoch hands the staked validator its permit
    assert node.metagraph(node.netuid).by_hotkey(validator.hotkey.ss58_address).validator_permit
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    model = tiny_model(vocab_size=8192, sequence_length=128)
    slot = ModelSlot(ServedModel(model, tok, "tiny@1", None, None, 128))
    server = build_miner_server(miner.hotkey, node, node.netuid, slot)  # default limits
    windows = np.random.default_rng(0).integers(0, 8192, size=(2, 128))
    with run_in_thread(server.app) as running:
        node.submit(
            ServeEndpoint(netuid=node.netuid, ip="127.0.0.1", port=running.port), miner.hotkey
        ).raise_for_failure()
        neurons = {n.uid: n for n in node.metagraph(node.netuid).neurons}

        # one window under the validator's own hotkey (reserved capacity), one as a stranger
        # (the public budget the flood spends: at worst inconclusive, never a failure)
        plan = ProbePlan(0, ["a@0", "b@0"], windows, [False, True])

        def probe() -> dict[int, str]:
            return probe_miners(
                validator.hotkey,
                neurons,
                {miner.uid: model},
                plan,
                stranger=keypair("flood-probe"),
                timeout_s=10.0,
            ).failed

        target = Target(miner.hotkey.ss58_address, running.url, miner.uid)
        failures, answer, flood, sent = asyncio.run(_under_flood(target, probe, client.hotkey))

    assert failures == {}, failures  # answered, signed, the committed model, within 10 s
    assert answer.ok and answer.value is not None and answer.value.token_ids, answer
    refused = [(r.status, r.code) for r in flood if not r.ok]
    assert sent >= IN_FLIGHT and refused
    assert set(refused) <= REFUSALS, set(refused) - REFUSALS
    assert {"public_rate_limited", "public_queue_full"} & {code for _, code in refused}
