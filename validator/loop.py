"""The validator's round: it only orchestrates calls into sync, evaluation, compete, probe,
submit, state and bundle — each taking explicit inputs.

One round, pinned to one metagraph read:
1. sync commitments → fetch and verify new or changed models, each uid on its own (rejections
   recorded per uid; validator-side failures hold the uid instead);
2. per active competition whose round block is new: its hash, seed and samples; the eligible
   models (committed ≥ eval delay before the round block); their per-sample losses; the
   competition math → EMA; the serving probe (fresh windows, an identity a miner cannot tell);
   a competition whose round block was already scored is carried over, never scored twice;
3. weights over uids (withheld serving shares to the subnet owner's uid) → the chain;
4. a signed, content-addressed score bundle and the state, both written atomically.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from crucible.chain.interface import Metagraph
from crucible.chain.weights import weights_to_u16
from crucible.observe.logs import log_event
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import ChainError
from crucible.protocol.version import CODE_VERSION
from crucible.scoring.sampling import round_block
from crucible.validator.bundle import Bundle, CarriedCompetition, CompetitionRound, write_bundle
from crucible.validator.bundle import merged_weights as merge_bundle
from crucible.validator.collab import score_collab
from crucible.validator.collab_record import CollabRound
from crucible.validator.evaluation import score_competition
from crucible.validator.publish import anchor_pending, publish_bundle
from crucible.validator.runtime import ValidatorConfig, ValidatorRuntime
from crucible.validator.state import RoundReport, ValidatorState, save_state
from crucible.validator.submit import submit_weights, try_reveal
from crucible.validator.sync import sync_models

__all__ = ["RoundOutcome", "ValidatorConfig", "ValidatorRuntime", "run_round"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundOutcome:
    block: int
    bundle_path: Path | None
    weights: dict[int, float]
    set_weights: str  # "set", "committed", "revealed", "skipped: …", "refused: …"
    rejections: dict[int, str]
    published: str = ""  # the bundle: stored, anchored on chain (or why not yet)


def _active(rt: ValidatorRuntime) -> list[CompetitionSpec]:
    return sorted((s for s in rt.competitions.values() if s.active), key=lambda s: s.id)


def _carried(
    spec: CompetitionSpec, state: ValidatorState, failed: dict[int, str]
) -> CarriedCompetition:
    return CarriedCompetition(
        competition=spec.key, round_block=state.last_round_block[spec.id],
        ema=state.ema.get(spec.id, {}), reward_share=spec.reward_share,
        serving_share=spec.serving_share, serving_failed=failed,
    )  # fmt: skip


def _score(rt: ValidatorRuntime, mg: Metagraph, state: ValidatorState):
    """(new rounds, carried competitions) — or ``None`` when nothing new is there to score."""
    synced = sync_models(rt, mg, state)
    rounds: list[CompetitionRound] = []
    carried: list[CarriedCompetition] = []
    for spec in _active(rt):
        at = round_block(mg.block, spec.evaluation.sync_cadence_blocks)
        if state.last_round_block.get(spec.id) == at:
            carried.append(_carried(spec, state, state.serving_failed.get(spec.id, {})))
            continue
        try:
            block_hash = rt.chain.block_hash(at)
        except ChainError as exc:
            log.warning("%s: round block %d unavailable: %s", spec.id, at, exc)
            continue
        started = time.perf_counter()
        scored = score_competition(rt, spec, mg, at, block_hash, synced.ok, synced.held, state)
        if scored is None:
            continue
        record, scores = scored
        _count_evaluation(rt, spec, record, time.perf_counter() - started)

        state.ema[spec.id] = scores.ema_after
        state.last_round_block[spec.id] = at
        state.serving_failed[spec.id] = record.serving_failed
        rounds.append(record)
    return rounds, carried, _score_collab(rt, mg, state, carried)


def _score_collab(
    rt: ValidatorRuntime, mg: Metagraph, state: ValidatorState, carried: list[CarriedCompetition]
) -> list[CollabRound]:
    """Each active collab competition's newest closed round (its ratings carried otherwise)."""
    out: list[CollabRound] = []
    for _, cr in sorted(rt.collab.items()):
        if not cr.spec.active:
            continue
        result = score_collab(rt, cr, mg, state)
        if isinstance(result, CollabRound):
            out.append(result)
        elif result is not None:
            carried.append(result)
    return out


def _count_evaluation(
    rt: ValidatorRuntime, spec: CompetitionSpec, record: CompetitionRound, seconds: float
) -> None:
    models = len(record.losses)
    tokens = models * len(record.sample_ids) * spec.model.sequence_length
    rt.metrics.models_evaluated.inc(models)
    if seconds > 0 and tokens:
        rt.metrics.eval_tokens_per_s.set(tokens / seconds)
    log_event(log, "competition_scored", competition=spec.id, round_block=record.round_block,
              models=models, tokens=tokens, seconds=round(seconds, 3))  # fmt: skip


_WEIGHT_OUTCOMES = ("set", "committed", "revealed", "reveal", "skipped", "refused")


def _finish(rt: ValidatorRuntime, outcome: RoundOutcome, scored: bool, models: int) -> RoundOutcome:
    """Count and log the round once it is over (its state is already saved)."""
    kind = re.match(r"[a-z]*", outcome.set_weights.split("; then ")[-1]).group()
    rt.metrics.rounds.labels("scored" if scored else "skipped").inc()
    rt.metrics.round_block.set(outcome.block)
    rt.metrics.weights.labels(kind if kind in _WEIGHT_OUTCOMES else "other").inc()
    log_event(log, "weights", block=outcome.block, outcome=outcome.set_weights,
              uids=len(outcome.weights))  # fmt: skip
    log_event(log, "round_finished", block=outcome.block, scored=scored,
              models_evaluated=models, rejections=len(outcome.rejections),
              bundle=outcome.bundle_path.name if outcome.bundle_path else None,
              published=outcome.published)  # fmt: skip
    return outcome


def _burn_uid(mg: Metagraph) -> int | None:
    return None if mg.owner_hotkey is None else mg.uid_of(mg.owner_hotkey)


def run_round(rt: ValidatorRuntime, state: ValidatorState) -> RoundOutcome:
    cfg = rt.config
    reveal = try_reveal(rt, state)
    mg = rt.chain.metagraph(cfg.netuid)
    log_event(log, "round_started", block=mg.block, netuid=cfg.netuid, neurons=mg.n)
    rounds, carried, collab = _score(rt, mg, state)
    rejections = {
        uid: f"{e.status}: {e.reason}" for uid, e in state.models.items() if e.status != "ok"
    }
    if not rounds and not collab:
        anchored = anchor_pending(rt, state)
        if reveal is not None:
            state.last_report = RoundReport(block=mg.block, set_weights=reveal, published=anchored)
        save_state(state, cfg.state_path)
        why = (
            "no competition has a new round block since the last round"
            if carried
            else "no round block available"
        )
        skipped = f"skipped: {why}" if reveal is None else f"{reveal}; round skipped: {why}"
        return _finish(
            rt, RoundOutcome(mg.block, None, {}, skipped, rejections, anchored), False, 0
        )
    state.ema_hotkeys = {n.uid: n.hotkey for n in mg.neurons}
    bundle = Bundle(
        code_version=CODE_VERSION, validator_hotkey=rt.keypair.ss58_address, netuid=cfg.netuid, block=mg.block,
        rounds=rounds, carried=carried, collab=collab, rejections=rejections, weights={}, weights_u16={}, burn_uid=_burn_uid(mg),
    )  # fmt: skip
    weights = {u: w for u, w in merge_bundle(bundle).items() if math.isfinite(w)}
    outcome = submit_weights(rt, mg, weights, state)
    if reveal is not None:
        outcome = f"{reveal}; then {outcome}"
    u16 = dict(zip(*weights_to_u16(weights), strict=True)) if weights else {}
    signed = bundle.model_copy(update={"weights": weights, "weights_u16": u16}).signed(rt.keypair)
    bundle_path = write_bundle(signed, cfg.bundles_dir)
    state.last_bundle = bundle_path.name
    published = publish_bundle(rt, signed, state)
    state.last_report = RoundReport(block=mg.block, set_weights=outcome, published=published)
    save_state(state, cfg.state_path)
    done = RoundOutcome(mg.block, bundle_path, weights, outcome, rejections, published)
    return _finish(rt, done, True, sum(len(r.losses) for r in rounds))
