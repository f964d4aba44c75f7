"""Serving probe: does each miner serve the model it committed?

A few of the round's windows go to every miner's ``/v1/logprobs``; the answers must come signed by
the miner's hotkey and match the validator's own computation on the committed model (mean absolute
difference below a tolerance that allows for different hardware). Unreachable, unsigned or
different answers lose the competition's serving share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np

from crucible.chain.interface import Neuron, Signer
from crucible.client.transport import SignedClient, Target
from crucible.protocol.messages import LOGPROBS_PATH, LogprobsRequest, LogprobsResponse
from crucible.scoring.losses import token_logprobs

__all__ = ["TOLERANCE_NATS", "probe_miners"]

TOLERANCE_NATS = 1e-3


async def _probe(
    keypair: Signer, jobs: list[tuple[Target, list[list[int]], list[list[float]]]], timeout_s: float
) -> dict[int, str]:
    failures: dict[int, str] = {}
    async with SignedClient(keypair, timeout_s=timeout_s) as client:

        async def one(
            target: Target, windows: list[list[int]], expected: list[list[float]]
        ) -> None:
            for ids, want in zip(windows, expected, strict=True):
                result = await client.call(
                    target, LOGPROBS_PATH, LogprobsRequest(token_ids=ids), LogprobsResponse
                )
                if not result.ok or result.value is None:
                    failures[target.uid] = f"{result.code}: {result.error}"[:200]
                    return
                got = np.asarray(result.value.logprobs_nats)
                diff = float(np.mean(np.abs(got - np.asarray(want))))
                if result.value.token_ids != ids or not diff < TOLERANCE_NATS:
                    failures[target.uid] = (
                        f"serves a different model (mean |Δlogprob| = {diff:.4g} nats)"
                    )
                    return

        await asyncio.gather(*(one(*job) for job in jobs))
    return failures


def probe_miners(
    keypair: Signer,
    neurons: Mapping[int, Neuron],
    models: Mapping[int, object],
    windows: np.ndarray,
    *,
    timeout_s: float = 10.0,
) -> dict[int, str]:
    """uid → failure reason for every probed uid that failed (absent = passed)."""
    failures: dict[int, str] = {}
    jobs = []
    rows = [w.tolist() for w in windows]
    for uid, model in sorted(models.items()):
        target = Target.from_neuron(neurons[uid])
        if target is None:
            failures[uid] = "no endpoint served on chain"
            continue
        expected = [token_logprobs(model, ids) for ids in rows]
        jobs.append((target, rows, expected))
    if jobs:
        failures.update(asyncio.run(_probe(keypair, jobs, timeout_s)))
    return failures
