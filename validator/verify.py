"""What ``crucible-validator verify`` checks beyond the recomputation of the weights.

``check_against_chain``: the bundle's inputs are the chain's — the round block's hash, every
evaluated uid's hotkey, commitment and commit block, the model hash bound to that hotkey by the
commitment's secure hash — and the weights it claims are the ones the chain holds for its
validator. ``reevaluate``: the losses recomputed from the cached models and the block hash.
Each returns what it found: ``problems`` (the bundle contradicts the chain) and ``unverifiable``
(facts the chain cannot confirm now — a miner re-committed since, weights superseded by a later
round or still awaiting their reveal): reported as such, never counted as a match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crucible.chain.interface import Chain, Metagraph
from crucible.chain.weights import max_upscale_u16
from crucible.corpus.tokenizer import load_tokenizer
from crucible.models.fetch import fetch_and_verify
from crucible.models.io import load_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import ChainError, CommitmentError, CrucibleError
from crucible.scoring.losses import per_sample_losses
from crucible.scoring.releases import ReleaseLoader
from crucible.scoring.round_data import ReleaseRef, RoundData
from crucible.scoring.sources import ShardedPools, gather_round_data
from crucible.scoring.windows import load_eval_pool
from crucible.store.documents import DocumentStore
from crucible.store.resolve import StoreResolver
from crucible.validator.bundle import Bundle, CompetitionRound
from crucible.validator.collab_verify import check_collab_inputs

__all__ = ["ChainCheck", "check_against_chain", "check_round_inputs", "check_weights", "reevaluate"]

# a validator's weights land in the block after the round's metagraph read (or a reveal later)
WEIGHTS_LANDING_BLOCKS = 3


@dataclass
class ChainCheck:
    problems: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)

    def __iadd__(self, other: ChainCheck) -> ChainCheck:
        self.problems += other.problems
        self.unverifiable += other.unverifiable
        return self


def check_round_inputs(bundle: Bundle, chain: Chain, mg: Metagraph) -> ChainCheck:
    found = ChainCheck()
    for r in bundle.rounds:
        where = f"{r.competition} round {r.round_block}"
        try:
            if chain.block_hash(r.round_block) != r.block_hash:
                found.problems.append(
                    f"{where}: block hash {r.block_hash[:18]}… is not the chain's"
                )
        except ChainError as exc:
            found.problems.append(f"{where}: the chain has no block {r.round_block}: {exc.message}")
        for uid, digest in sorted(r.model_hashes.items()):
            found += _check_model(where, uid, digest, r, mg)
    return found


def _check_model(
    where: str, uid: int, digest: str, r: CompetitionRound, mg: Metagraph
) -> ChainCheck:
    hotkey, raw = r.hotkeys.get(uid), r.commitments.get(uid)
    if hotkey is None or raw is None:
        return ChainCheck([f"{where}: uid {uid} has no recorded hotkey/commitment"])
    try:
        bound = ModelCommitment.parse(raw).matches(digest, hotkey)
    except CommitmentError as exc:
        return ChainCheck([f"{where}: uid {uid}'s recorded commitment does not parse: {exc}"])
    if not bound:
        return ChainCheck([f"{where}: uid {uid}'s model hash is not bound to {hotkey[:12]}…"])
    neuron = mg.neurons[uid] if uid < mg.n else None
    if neuron is None or neuron.hotkey != hotkey:
        return ChainCheck(unverifiable=[f"{where}: uid {uid} is no longer {hotkey[:12]}…"])
    if neuron.commitment is None or neuron.commitment.data != raw:
        return ChainCheck(unverifiable=[f"{where}: uid {uid} re-committed since"])
    if neuron.commitment.block != r.commit_blocks.get(uid):
        return ChainCheck(
            [
                f"{where}: uid {uid} committed at block {neuron.commitment.block}, not {r.commit_blocks.get(uid)}"
            ]
        )
    return ChainCheck()


def check_weights(bundle: Bundle, mg: Metagraph) -> ChainCheck:
    """The chain's weights for the bundle's validator against the bundle's (as the chain stores
    them: max-upscaled u16)."""
    validator = mg.by_hotkey(bundle.validator_hotkey)
    if validator is None:
        who = f"validator {bundle.validator_hotkey[:12]}…"
        return ChainCheck([f"{who} is not registered on netuid {mg.netuid}"])
    if validator.last_update > bundle.block + WEIGHTS_LANDING_BLOCKS:
        return ChainCheck(
            unverifiable=[
                f"the chain holds later weights (block {validator.last_update}) than this bundle's (block {bundle.block})"
            ]
        )
    uids = sorted(bundle.weights_u16)
    expected = dict(zip(uids, max_upscale_u16([bundle.weights_u16[u] for u in uids]), strict=True))
    on_chain = {u: v for u, v in mg.weights.get(validator.uid, {}).items() if v}
    expected = {u: v for u, v in expected.items() if v}
    if not on_chain:
        return ChainCheck(
            unverifiable=[
                "no weights from this validator on chain yet (not set, or awaiting reveal)"
            ]
        )
    if on_chain != expected:
        worst = max(
            abs(on_chain.get(u, 0) - expected.get(u, 0)) for u in set(on_chain) | set(expected)
        )
        return ChainCheck(
            [f"the chain's weights differ from the bundle's (max |Δ| = {worst} in u16)"]
        )
    return ChainCheck()


def check_against_chain(bundle: Bundle, chain: Chain) -> ChainCheck:
    mg = chain.metagraph(bundle.netuid)
    found = check_round_inputs(bundle, chain, mg)
    found.problems += check_collab_inputs(bundle.collab, chain)
    found += check_weights(bundle, mg)
    return found


def _model_for(
    r: CompetitionRound, uid: int, digest: str, spec: CompetitionSpec, models_dir: Path,
    resolve_store: StoreResolver | None,
):  # fmt: skip
    """The model a bundle evaluated: from the cache, else fetched and verified by its commitment."""
    path = Path(models_dir) / digest
    if path.is_dir():
        return load_model_dir(path, spec.model).model
    if resolve_store is None or uid not in r.commitments:
        return None
    fetched = fetch_and_verify(
        r.commitments[uid], r.hotkeys[uid], {spec.id: spec}, resolve_store, models_dir
    )
    return fetched.loaded.model if fetched.content_hash == digest else None


def replay_round_data(
    r: CompetitionRound,
    spec: CompetitionSpec,
    specs_dir: Path,
    data_dir: Path,
    documents: DocumentStore | None,
) -> RoundData | None:
    """The round's samples rebuilt from what the bundle says it used (the same release by id)."""
    tok = load_tokenizer(specs_dir / spec.model.tokenizer)
    kinds = {src["kind"] for src in r.data_sources} or {"held_out"}
    release = next(
        (ReleaseRef(**src["release"]) for src in r.data_sources if src.get("release")), None
    )
    releases = ReleaseLoader(documents, tok, spec)
    if release is not None:
        releases.pool(release)  # raises why the bundle's release cannot be had (then kept by id)
    return gather_round_data(
        spec, r.block_hash,
        held_out=load_eval_pool(data_dir, tok) if "held_out" in kinds else None,
        releases=releases, candidates=[release] if release else [],
        sharded=ShardedPools(spec, tok, base_dir=data_dir) if "sharded" in kinds else None,
    )  # fmt: skip


def reevaluate(
    bundle: Bundle,
    competitions: Mapping[str, CompetitionSpec],
    specs_dir: Path,
    data_dir: Path,
    models_dir: Path,
    resolve_store: StoreResolver | None = None,
    documents: DocumentStore | None = None,
) -> list[str]:
    """Differences between the bundle's losses and the ones recomputed here (empty = none), on
    the bundle's own data sources, batch size and precision (fp32)."""
    differences = []
    specs = {s.key: s for s in competitions.values()}
    for r in bundle.rounds:
        spec = specs.get(r.competition)
        if spec is None or spec.spec_hash != r.spec_hash:
            differences.append(f"{r.competition}: spec not available with hash {r.spec_hash[:12]}")
            continue
        try:
            data = replay_round_data(r, spec, specs_dir, data_dir, documents)
        except CrucibleError as exc:
            differences.append(
                f"{r.competition}: the round's data cannot be rebuilt: {exc.message}"
            )
            continue
        if data is None or data.seed != r.seed or data.sample_ids != r.sample_ids:
            differences.append(f"{r.competition}: samples differ from the bundle's")
            continue
        differences += _reevaluate_models(r, spec, data.windows, models_dir, resolve_store)
    return differences


def _reevaluate_models(
    r: CompetitionRound, spec: CompetitionSpec, windows, models_dir: Path, resolve_store
) -> list[str]:
    differences = []
    for uid, digest in sorted(r.model_hashes.items()):
        if uid not in r.losses:
            continue
        try:
            model = _model_for(r, uid, digest, spec, models_dir, resolve_store)
        except CrucibleError as exc:
            differences.append(f"{r.competition}: model of uid {uid} unavailable: {exc.message}")
            continue
        if model is None:
            differences.append(
                f"{r.competition}: model of uid {uid} ({digest[:12]}) is not at hand"
            )
            continue
        losses = per_sample_losses(model, windows, batch_size=r.batch_size).losses
        if losses != r.losses[uid]:
            worst = max(abs(a - b) for a, b in zip(losses, r.losses[uid], strict=True))
            differences.append(f"{r.competition}: uid {uid} losses differ (max |Δ| = {worst:.3g})")
    return differences
