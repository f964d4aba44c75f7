"""One competition's round: the windows a block hash selects, every eligible model's per-sample
losses (each uid on its own), the competition math and the serving probe → a ``CompetitionRound``.

Isolation, per uid: a model that fails or yields non-finite losses scores worst this round
(``eval_errors``); an unexpected exception while evaluating one model is that model's evaluation
error (logged with its traceback), never the round's end; running out of memory on this machine
(``ResourceExhausted``) holds the uid (its EMA is carried over) instead of blaming it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from bittensor_core import Keypair

from crucible.chain.interface import Metagraph, Neuron
from crucible.models.fetch import FetchedModel
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import ResourceExhausted
from crucible.scoring.compete import Contender, EpsilonSchedule, RoundScores, score_round
from crucible.scoring.losses import batch_size_for_budget, per_sample_losses
from crucible.scoring.round_data import RoundData, candidate_releases
from crucible.scoring.sampling import is_eligible
from crucible.scoring.sources import gather_round_data
from crucible.validator.bundle import CompetitionRound
from crucible.validator.probe import probe_miners, probe_windows
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import ValidatorState

__all__ = ["Losses", "evaluate_models", "score_competition"]

log = logging.getLogger(__name__)


@dataclass
class Losses:
    losses: dict[int, list[float]]
    errors: dict[int, str]
    held: dict[int, str]
    batch_size: int


def _batch_size(
    rt: ValidatorRuntime, spec: CompetitionSpec, models: dict[int, FetchedModel]
) -> int:
    largest = max((m.loaded.report.parameters for m in models.values()), default=0)
    return batch_size_for_budget(
        largest, spec.model.vocab_size, spec.model.sequence_length,
        spec.evaluation.batch_size, rt.config.memory_budget_bytes,
    )  # fmt: skip


def evaluate_models(
    rt: ValidatorRuntime, spec: CompetitionSpec, models: dict[int, FetchedModel], windows
) -> Losses:
    batch = _batch_size(rt, spec, models)
    out = Losses({}, {}, {}, batch)
    for uid, model in sorted(models.items()):
        try:
            result = per_sample_losses(
                model.loaded.model,
                windows,
                batch_size=batch,
                device=rt.config.device,
                progress=rt.config.progress,
            )
        except ResourceExhausted as exc:  # this validator's memory: held, not blamed
            log.warning("uid %d held this round: %s", uid, exc)
            out.held[uid] = f"{exc.code}: {exc.message}"[:300]
            continue
        except Exception as exc:  # noqa: BLE001 — one model's failure is that model's
            log.exception("uid %d: evaluation raised", uid)
            out.errors[uid] = f"evaluation raised {type(exc).__name__}: {exc}"[:300]
            continue
        if result.error:
            out.errors[uid] = result.error
        else:
            out.losses[uid] = result.losses
    return out


def _commits_to(neuron: Neuron | None, spec: CompetitionSpec) -> bool:
    c = None if neuron is None else neuron.commitment
    return c is not None and c.data.startswith(spec.key + ":")


def _ema_before(
    state: ValidatorState, spec: CompetitionSpec, neurons: dict[int, Neuron]
) -> dict[int, float]:
    """The EMA belongs to a hotkey: a re-registered uid starts from zero."""
    return {
        uid: v for uid, v in state.ema.get(spec.id, {}).items()
        if uid in neurons and state.ema_hotkeys.get(uid) == neurons[uid].hotkey
    }  # fmt: skip


def _probe(rt: ValidatorRuntime, spec: CompetitionSpec, neurons, models: dict[int, FetchedModel]):
    plan = probe_windows(
        rt.pools[spec.id], spec.model.sequence_length, spec.evaluation.serving_probe_samples,
        secrets.randbits(63),
    )  # fmt: skip
    stranger = Keypair.create_from_seed(secrets.token_bytes(32))  # a throwaway identity per round
    outcome = probe_miners(
        rt.keypair, neurons, {uid: m.loaded.model for uid, m in models.items()}, plan,
        stranger=stranger, timeout_s=rt.config.probe_timeout_s,
    )  # fmt: skip
    return plan, outcome


def round_data_for(
    rt: ValidatorRuntime, spec: CompetitionSpec, mg: Metagraph, at: int, block_hash: str
) -> RoundData | None:
    """The round's samples from the spec's sources (the newest good release, the held-out split,
    a sharded corpus)."""
    candidates, ignored = (
        candidate_releases(spec, mg, at) if spec.data.uses("release") else ([], {})
    )
    return gather_round_data(
        spec, block_hash, held_out=rt.pools.get(spec.id), releases=rt.releases.get(spec.id),
        candidates=candidates, sharded=rt.sharded.get(spec.id), ignored=ignored,
    )  # fmt: skip


def score_competition(
    rt: ValidatorRuntime, spec: CompetitionSpec, mg: Metagraph, at: int, block_hash: str,
    fetched: dict[int, FetchedModel], held: dict[int, str], state: ValidatorState,
) -> tuple[CompetitionRound, RoundScores] | None:  # fmt: skip
    """``None`` when the spec's data sources leave nothing to evaluate on this round."""
    neurons = {n.uid: n for n in mg.neurons}
    data = round_data_for(rt, spec, mg, at, block_hash)
    if data is None:
        log.warning(
            "%s: no data to evaluate on at round block %d (no release, no fallback)", spec.id, at
        )
        return None
    cutoff = at if data.cutoff_block is None else min(at, data.cutoff_block)
    eligible = {
        uid: f for uid, f in fetched.items()
        if f.commitment.competition == spec.key
        and is_eligible(state.models[uid].commit_block, cutoff, spec.evaluation.eval_delay_blocks)
    }  # fmt: skip
    result = evaluate_models(rt, spec, eligible, data.windows)
    mine = {u: r for u, r in held.items() if _commits_to(neurons.get(u), spec)}
    held = {**mine, **result.held}
    before = _ema_before(state, spec, neurons)
    commit_blocks = {uid: state.models[uid].commit_block for uid in result.losses}
    scores = score_round(
        [Contender(uid, commit_blocks[uid], result.losses[uid]) for uid in sorted(result.losses)],
        block=at, epsilon=EpsilonSchedule(spec.epsilon.start, spec.epsilon.floor, spec.epsilon.decay_blocks),
        significance_level=spec.evaluation.significance_level, temperature=spec.softmax_temperature,
        ema_alpha=spec.ema_alpha, ema_before=before, held=sorted(set(held) - set(result.losses)),
    )  # fmt: skip
    plan, probe = _probe(rt, spec, neurons, {u: eligible[u] for u in result.losses})
    scored = {uid: eligible[uid] for uid in eligible if uid not in result.held}
    record = CompetitionRound(
        competition=spec.key, spec_hash=spec.spec_hash, round_block=at, block_hash=block_hash, seed=data.seed,
        sample_ids=data.sample_ids, batch_size=result.batch_size, data_sources=[u.to_json() for u in data.sources],
        cutoff_block=data.cutoff_block, ignored_releases=data.ignored, epsilon_start=spec.epsilon.start,
        epsilon_floor=spec.epsilon.floor, epsilon_decay_blocks=spec.epsilon.decay_blocks,
        significance_level=spec.evaluation.significance_level, softmax_temperature=spec.softmax_temperature,
        ema_alpha=spec.ema_alpha, reward_share=spec.reward_share, serving_share=spec.serving_share,
        commit_blocks=commit_blocks, model_hashes={u: m.content_hash for u, m in scored.items()},
        hotkeys={u: neurons[u].hotkey for u in scored}, commitments={u: state.models[u].commitment for u in scored},
        losses=result.losses, eval_errors=result.errors, held=held, competitive=scores.competitive,
        not_competitive=scores.not_competitive, pairs=[p.__dict__ for p in scores.pairs],
        win_rates=scores.win_rates, softmax=scores.softmax, ema_before=scores.ema_before,
        ema_after=scores.ema_after, serving_failed=probe.failed, serving_inconclusive=probe.inconclusive,
        probe_seed=plan.seed, probe_sample_ids=plan.sample_ids,
    )  # fmt: skip
    return record, scores
