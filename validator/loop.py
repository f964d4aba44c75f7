"""The validator's round: it only orchestrates calls into fetch, sampling, evaluate, compete,
probe, state and bundle — each taking explicit inputs.

One round, pinned to one metagraph read:
1. sync commitments → fetch and verify new or changed models (rejections recorded per uid);
2. per active competition: the round block (latest multiple of the sync cadence), its hash, the
   seed and the samples; the eligible models (committed ≥ eval delay before the round block);
3. per-sample losses of every eligible model on the same windows;
4. competition math → EMA; serving probe;
5. weights over uids → set on chain (commit-reveal when the subnet has it on) unless empty;
6. a content-addressed score bundle and the state, both written atomically.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from crucible.chain.interface import (
    Chain,
    CommitWeights,
    Metagraph,
    RevealWeights,
    SetWeights,
    Signer,
)
from crucible.chain.weights import weights_commit_hash, weights_to_u16
from crucible.models.fetch import FetchedModel, evict_cache, fetch_and_verify
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import ChainError, ModelRejected, ModelUnavailable, ResourceExhausted
from crucible.protocol.version import CODE_VERSION, SPEC_VERSION
from crucible.scoring.compete import Contender, EpsilonSchedule, merge_competitions, score_round
from crucible.scoring.losses import per_sample_losses
from crucible.scoring.sampling import EvalPool, is_eligible, round_block
from crucible.scoring.windows import round_windows
from crucible.store.base import ModelStore
from crucible.validator.bundle import Bundle, CompetitionRound, write_bundle
from crucible.validator.probe import probe_miners
from crucible.validator.state import ModelEntry, PendingReveal, ValidatorState, save_state

__all__ = ["RoundOutcome", "ValidatorConfig", "ValidatorRuntime", "run_round"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidatorConfig:
    netuid: int
    work_dir: Path
    device: str = "cpu"
    max_cache_bytes: int = 20 * 1024**3
    memory_budget_bytes: int = 8 * 1024**3  # weights + one batch's logits, per model
    probe_timeout_s: float = 10.0
    set_weights: bool = True
    progress: bool = False

    @property
    def cache_dir(self) -> Path:
        return self.work_dir / "models"

    @property
    def bundles_dir(self) -> Path:
        return self.work_dir / "bundles"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.json"


@dataclass
class ValidatorRuntime:
    """What a validator holds between rounds (loaded once): specs, tokenizers, pools, models."""

    chain: Chain
    keypair: Signer
    config: ValidatorConfig
    competitions: dict[str, CompetitionSpec]
    tokenizers: dict[str, PreTrainedTokenizerBase]
    pools: dict[str, EvalPool]
    resolve_store: Callable[[str], ModelStore]
    loaded: dict[str, FetchedModel] = field(default_factory=dict)  # by content hash


@dataclass(frozen=True)
class RoundOutcome:
    block: int
    bundle_path: Path | None
    weights: dict[int, float]
    set_weights: str  # "set", "committed", "revealed", "skipped: …", "refused: …"
    rejections: dict[int, str]


def _sync_models(
    rt: ValidatorRuntime, mg: Metagraph, state: ValidatorState
) -> dict[int, FetchedModel]:
    ok: dict[int, FetchedModel] = {}
    for neuron in mg.neurons:
        if neuron.commitment is None:
            state.models.pop(neuron.uid, None)
            continue
        entry = state.models.get(neuron.uid)
        same = (
            entry is not None
            and entry.hotkey == neuron.hotkey
            and entry.commitment == neuron.commitment.data
        )
        if same and entry.status != "ok":
            continue  # rejected before: the same commitment is rejected again without refetching
        if same and entry.content_hash in rt.loaded:
            ok[neuron.uid] = rt.loaded[entry.content_hash]
            continue
        try:
            fetched = fetch_and_verify(
                neuron.commitment.data,
                neuron.hotkey,
                rt.competitions,
                rt.resolve_store,
                rt.config.cache_dir,
            )
        except (ModelUnavailable, ResourceExhausted) as exc:  # not the miner's fault: next round
            log.warning("uid %d: model not fetched this round: %s", neuron.uid, exc)
            continue
        except ModelRejected as exc:
            state.models[neuron.uid] = ModelEntry(
                hotkey=neuron.hotkey, commitment=neuron.commitment.data, commit_block=neuron.commitment.block,
                status=exc.reason, reason=exc.message,
            )  # fmt: skip
            continue
        rt.loaded[fetched.content_hash] = fetched
        state.models[neuron.uid] = ModelEntry(
            hotkey=neuron.hotkey, commitment=neuron.commitment.data, commit_block=neuron.commitment.block,
            status="ok", content_hash=fetched.content_hash, path=str(fetched.path),
        )  # fmt: skip
        ok[neuron.uid] = fetched
    for uid in [u for u in state.models if u >= mg.n]:
        state.models.pop(uid)
    live = {m.content_hash for m in ok.values()}
    for digest in [d for d in rt.loaded if d not in live]:
        rt.loaded.pop(digest)
    evict_cache(rt.config.cache_dir, rt.config.max_cache_bytes, keep={m.path for m in ok.values()})
    return ok


def _set_weights(
    rt: ValidatorRuntime, mg: Metagraph, weights: dict[int, float], state: ValidatorState
) -> str:
    if not rt.config.set_weights:
        return "skipped: --no-set-weights"
    if not weights:
        return "skipped: no weights (nothing evaluated or everything rejected)"
    uids, values = weights_to_u16(weights)
    # SetWeights first: the bittensor backend handles commit-reveal itself (timelocked, revealed
    # by the chain); only a chain that asks for an explicit commit gets the commit/reveal pair.
    result = rt.chain.submit(SetWeights(rt.config.netuid, uids, values, SPEC_VERSION), rt.keypair)
    if result.ok:
        state.last_weights_block = mg.block
        return "set"
    if result.code != "commit_reveal_enabled":
        return f"refused: {result.code}: {result.message}"
    salt = tuple(secrets.randbelow(65536) for _ in range(8))
    digest = weights_commit_hash(
        rt.keypair.ss58_address, rt.config.netuid, uids, values, salt, SPEC_VERSION
    )
    result = rt.chain.submit(CommitWeights(rt.config.netuid, digest), rt.keypair)
    if not result.ok:
        return f"refused: {result.code}: {result.message}"
    state.pending_reveal = PendingReveal(
        uids=list(uids),
        values=list(values),
        salt=list(salt),
        version_key=SPEC_VERSION,
        commit_block=mg.block,
    )
    return "committed"


def try_reveal(rt: ValidatorRuntime, state: ValidatorState) -> str | None:
    pending = state.pending_reveal
    if pending is None:
        return None
    call = RevealWeights(
        rt.config.netuid,
        tuple(pending.uids),
        tuple(pending.values),
        tuple(pending.salt),
        pending.version_key,
    )
    result = rt.chain.submit(call, rt.keypair)
    if result.ok or result.code in ("reveal_expired", "no_matching_commit"):
        state.pending_reveal = None
    return "revealed" if result.ok else result.code


def run_round(rt: ValidatorRuntime, state: ValidatorState) -> RoundOutcome:
    cfg = rt.config
    reveal = try_reveal(rt, state)
    mg = rt.chain.metagraph(cfg.netuid)
    fetched = _sync_models(rt, mg, state)
    neurons = {n.uid: n for n in mg.neurons}
    rounds: list[CompetitionRound] = []
    emas: dict[str, dict[int, float]] = {}
    shares, serving_shares, serving_failed = {}, {}, {}
    for spec in sorted((s for s in rt.competitions.values() if s.active), key=lambda s: s.id):
        at = round_block(mg.block, spec.evaluation.sync_cadence_blocks)
        try:
            block_hash = rt.chain.block_hash(at)
        except ChainError:
            continue
        seed, samples, windows = round_windows(rt.pools[spec.id], spec, block_hash)
        eligible = {
            uid: f for uid, f in fetched.items()
            if f.commitment.competition == spec.key
            and is_eligible(state.models[uid].commit_block, at, spec.evaluation.eval_delay_blocks)
        }  # fmt: skip
        losses: dict[int, list[float]] = {}
        errors: dict[int, str] = {}
        for uid, model in sorted(eligible.items()):
            try:
                result = per_sample_losses(
                    model.loaded.model,
                    windows,
                    batch_size=spec.evaluation.batch_size,
                    device=cfg.device,
                    progress=cfg.progress,
                )
            except ResourceExhausted as exc:  # this validator's memory: not scored, not blamed
                log.warning("uid %d: not evaluated this round: %s", uid, exc)
                continue
            if result.error:
                errors[uid] = result.error
            else:
                losses[uid] = result.losses
        # EMA belongs to a hotkey: a re-registered uid starts from zero
        before = {
            uid: v for uid, v in state.ema.get(spec.id, {}).items()
            if uid in neurons and state.ema_hotkeys.get(uid) == neurons[uid].hotkey
        }  # fmt: skip
        commit_blocks = {uid: state.models[uid].commit_block for uid in losses}
        scores = score_round(
            [Contender(uid, commit_blocks[uid], losses[uid]) for uid in sorted(losses)],
            block=at,
            epsilon=EpsilonSchedule(
                spec.epsilon.start, spec.epsilon.floor, spec.epsilon.decay_blocks
            ),
            significance_level=spec.evaluation.significance_level,
            temperature=spec.softmax_temperature,
            ema_alpha=spec.ema_alpha,
            ema_before=before,
        )
        probe_windows = windows[: spec.evaluation.serving_probe_samples]
        failed = probe_miners(
            rt.keypair, neurons, {uid: eligible[uid].loaded.model for uid in losses}, probe_windows, timeout_s=cfg.probe_timeout_s
        ) if len(probe_windows) else {}  # fmt: skip
        emas[spec.id] = scores.ema_after
        shares[spec.id], serving_shares[spec.id] = spec.reward_share, spec.serving_share
        serving_failed[spec.id] = set(failed)
        state.ema[spec.id] = scores.ema_after
        state.last_round_block[spec.id] = at
        rounds.append(
            CompetitionRound(
                competition=spec.key, spec_hash=spec.spec_hash, round_block=at, block_hash=block_hash, seed=seed,
                sample_ids=[s.sample_id for s in samples], epsilon_start=spec.epsilon.start,
                epsilon_floor=spec.epsilon.floor, epsilon_decay_blocks=spec.epsilon.decay_blocks,
                significance_level=spec.evaluation.significance_level, softmax_temperature=spec.softmax_temperature,
                ema_alpha=spec.ema_alpha, reward_share=spec.reward_share, serving_share=spec.serving_share,
                commit_blocks=commit_blocks, model_hashes={uid: eligible[uid].content_hash for uid in eligible},
                hotkeys={uid: neurons[uid].hotkey for uid in eligible},
                commitments={uid: state.models[uid].commitment for uid in eligible},
                losses=losses, eval_errors=errors, competitive=scores.competitive,
                not_competitive=scores.not_competitive, pairs=[p.__dict__ for p in scores.pairs],
                win_rates=scores.win_rates, softmax=scores.softmax, ema_before=scores.ema_before,
                ema_after=scores.ema_after, serving_failed=failed,
            )
        )  # fmt: skip
    state.ema_hotkeys = {uid: n.hotkey for uid, n in neurons.items()}
    weights = merge_competitions(emas, shares, serving_shares, serving_failed)
    weights = {uid: w for uid, w in weights.items() if np.isfinite(w)}
    outcome = _set_weights(rt, mg, weights, state)
    if reveal == "revealed":
        outcome = f"revealed previous; {outcome}"
    rejections = {
        uid: f"{e.status}: {e.reason}" for uid, e in state.models.items() if e.status != "ok"
    }
    bundle_path = None
    if rounds:
        u16 = dict(zip(*weights_to_u16(weights), strict=True)) if weights else {}
        bundle = Bundle(
            code_version=CODE_VERSION, validator_hotkey=rt.keypair.ss58_address, netuid=cfg.netuid, block=mg.block,
            rounds=rounds, rejections=rejections, weights=weights, weights_u16=u16,
        )  # fmt: skip
        bundle_path = write_bundle(bundle.signed(rt.keypair), cfg.bundles_dir)
        state.last_bundle = bundle_path.name
    save_state(state, cfg.state_path)
    return RoundOutcome(mg.block, bundle_path, weights, outcome, rejections)
