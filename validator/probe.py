"""Serving probe: does each miner serve the model it committed, to everyone?

The probe windows are drawn fresh each round from the evaluation pool with a seed only this
validator knows until the bundle is published (``probe_windows``), so a miner cannot recognise
them from the round's public windows. Each window goes to the miner's ``/v1/logprobs`` either
under this validator's hotkey or under a throwaway hotkey made for the round (the mix is drawn
from the same secret), so a miner cannot serve honestly only to validators: a request from a
stranger may be a probe. Every answer must be signed by the miner's hotkey, echo the token ids,
hold one finite log-probability per predicted token, and match the validator's own computation
on the committed model (mean absolute difference below ``TOLERANCE_NATS``).

One uid's answer can only decide that uid's outcome, and only what is the miner's doing counts
against it:

* ``failed`` (loses the serving share): a wrong, malformed or unsigned answer; no endpoint;
  unreachable or too slow; refusing the validator's own (reserved-capacity) probe.
* ``inconclusive`` (no penalty): a stranger's probe refused because the miner's public budget was
  spent (someone else's flood); the validator's own probe refused because *this validator* is
  not registered or holds no permit; every probed miner unreachable at once (this validator's
  network is down).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from crucible.chain.interface import Neuron, Signer
from crucible.client.transport import CallResult, SignedClient, Target
from crucible.protocol.messages import LOGPROBS_PATH, LogprobsRequest, LogprobsResponse
from crucible.scoring.losses import token_logprobs
from crucible.scoring.sampling import EvalPool, select_samples

__all__ = [
    "TOLERANCE_NATS",
    "ProbeOutcome",
    "ProbePlan",
    "compare_answer",
    "probe_miners",
    "probe_windows",
]

TOLERANCE_NATS = 1e-3
# a refusal that says the miner is saturated, not that it lies
BUSY_CODES = frozenset(
    {"public_rate_limited", "public_queue_full", "no_public_capacity", "server_busy",
     "rate_limited", "too_many_concurrent"}
)  # fmt: skip
# a refusal that says the probing validator is not entitled to call (its own registration)
VALIDATOR_SIDE_CODES = frozenset({"not_registered", "no_validator_permit", "insufficient_stake"})
NETWORK_CODES = frozenset({"unreachable", "timeout", "transport_error"})


@dataclass(frozen=True)
class ProbePlan:
    """What a round probes with: fresh windows and, per window, which identity sends it."""

    seed: int
    sample_ids: list[str]
    windows: np.ndarray
    as_stranger: list[bool]


@dataclass(frozen=True)
class ProbeOutcome:
    failed: dict[int, str] = field(default_factory=dict)
    inconclusive: dict[int, str] = field(default_factory=dict)


def probe_windows(pool: EvalPool, length: int, count: int, secret_seed: int) -> ProbePlan:
    samples = select_samples(pool, secret_seed, count, length) if count else []
    windows = (
        np.stack([pool.window(s, length) for s in samples])
        if samples
        else np.zeros((0, length), np.int64)
    )
    rng = np.random.Generator(np.random.PCG64(secret_seed ^ 0x5EED))
    strangers = [bool(b) for b in rng.integers(0, 2, size=len(samples))]
    if len(strangers) > 1 and len(set(strangers)) == 1:  # always both identities when possible
        strangers[-1] = not strangers[-1]
    return ProbePlan(secret_seed, [s.sample_id for s in samples], windows, strangers)


def compare_answer(
    ids: Sequence[int], expected: Sequence[float], answer: LogprobsResponse
) -> str | None:
    """Why an answer is wrong (None: it matches). Shape first: a hostile answer is checked
    before any arithmetic touches it."""
    if list(answer.token_ids) != list(ids):
        return "answered for other token ids than asked"
    got = answer.logprobs_nats
    if len(got) != len(expected):
        return f"answered {len(got)} log-probabilities for {len(expected)} predicted tokens"
    if not all(math.isfinite(x) for x in got):
        return "answered non-finite log-probabilities"
    diff = float(np.mean(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(expected))))
    if not diff < TOLERANCE_NATS:
        return f"serves a different model (mean |Δlogprob| = {diff:.4g} nats)"
    return None


def _judge(
    result: CallResult[LogprobsResponse], as_stranger: bool, reserved: bool
) -> tuple[str, str]:
    """("ok" | "failed" | "inconclusive" | "network", reason) for one call's transport outcome.
    ``reserved``: this validator holds a permit, so its own probes have reserved capacity."""
    if result.ok and result.value is not None:
        return "ok", ""
    why = f"{result.code}: {result.error}"[:200]
    if result.code in BUSY_CODES and not reserved:
        return "inconclusive", f"busy, and this validator has no reserved capacity ({why})"
    if result.code in BUSY_CODES:
        return (
            ("inconclusive", f"busy for strangers ({why})")
            if as_stranger
            else ("failed", f"refused the validator's probe ({why})")
        )
    if result.code in VALIDATOR_SIDE_CODES and not as_stranger:
        return "inconclusive", f"this validator may not call it ({why})"
    if result.code in NETWORK_CODES:
        return "network", why
    return "failed", why


async def _probe_one(
    clients: tuple[SignedClient, SignedClient], target: Target, plan: ProbePlan,
    expected: list[list[float]], reserved: bool,
) -> tuple[str, str]:  # fmt: skip
    verdict = ("ok", "")
    for ids, want, stranger in zip(plan.windows.tolist(), expected, plan.as_stranger, strict=True):
        client = clients[1] if stranger else clients[0]
        result = await client.call(
            target, LOGPROBS_PATH, LogprobsRequest(token_ids=ids), LogprobsResponse
        )
        kind, why = _judge(result, stranger, reserved)
        if kind == "ok":
            wrong = compare_answer(ids, want, result.value)
            if wrong is not None:
                return "failed", wrong
        elif kind in ("failed", "network"):
            return kind, why
        else:
            verdict = (kind, why)
    return verdict


async def _probe(
    own: Signer, stranger: Signer, jobs: dict[int, tuple[Target, list[list[float]]]], plan: ProbePlan,
    timeout_s: float, reserved: bool,
) -> dict[int, tuple[str, str]]:  # fmt: skip
    async with (
        SignedClient(own, timeout_s=timeout_s) as mine,
        SignedClient(stranger, timeout_s=timeout_s) as anon,
    ):
        uids = sorted(jobs)
        verdicts = await asyncio.gather(
            *(_probe_one((mine, anon), jobs[uid][0], plan, jobs[uid][1], reserved) for uid in uids),
            return_exceptions=True,
        )
    out = {}
    for uid, verdict in zip(uids, verdicts, strict=True):
        # a hostile answer must not take the round down: anything unexpected is that uid's failure
        out[uid] = (
            verdict
            if isinstance(verdict, tuple)
            else ("failed", f"probe error: {type(verdict).__name__}: {verdict}"[:200])
        )
    return out


def probe_miners(
    keypair: Signer,
    neurons: Mapping[int, Neuron],
    models: Mapping[int, object],
    plan: ProbePlan,
    *,
    stranger: Signer,
    timeout_s: float = 10.0,
) -> ProbeOutcome:
    """Probe every uid in ``models`` (its committed, verified model) and judge each answer."""
    outcome = ProbeOutcome()
    if not len(plan.windows):
        return outcome
    jobs: dict[int, tuple[Target, list[list[float]]]] = {}
    rows = plan.windows.tolist()
    for uid, model in sorted(models.items()):
        target = Target.from_neuron(neurons[uid])
        if target is None:
            outcome.failed[uid] = "no endpoint served on chain"
            continue
        jobs[uid] = (target, [token_logprobs(model, ids) for ids in rows])
    if not jobs:
        return outcome
    me = next((n for n in neurons.values() if n.hotkey == keypair.ss58_address), None)
    reserved = me is not None and me.validator_permit
    verdicts = asyncio.run(_probe(keypair, stranger, jobs, plan, timeout_s, reserved))
    all_down = all(kind == "network" for kind, _ in verdicts.values()) and len(verdicts) > 1
    for uid, (kind, why) in verdicts.items():
        if kind == "failed" or (kind == "network" and not all_down):
            outcome.failed[uid] = why
        elif kind in ("inconclusive", "network"):
            outcome.inconclusive[uid] = (
                why
                if kind == "inconclusive"
                else f"every miner unreachable: this validator's network? ({why})"
            )
    return outcome
