"""``crucible-miner eval``: score a model exactly as a validator would, and against the leader.

Same round block, same seed derivation, same samples, same evaluation code as ``validator.loop``;
the candidate is treated as committed now (so every on-chain model has time priority over it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crucible.chain.interface import Chain
from crucible.corpus.tokenizer import load_tokenizer
from crucible.models.fetch import fetch_and_verify
from crucible.models.io import load_model_dir
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import DataError, ModelRejected
from crucible.scoring.compete import Contender, EpsilonSchedule, beats
from crucible.scoring.losses import per_sample_losses
from crucible.scoring.releases import ReleaseLoader
from crucible.scoring.round_data import candidate_releases
from crucible.scoring.sampling import round_block
from crucible.scoring.sources import ShardedPools, gather_round_data
from crucible.scoring.windows import load_eval_pool
from crucible.store.documents import DocumentStore
from crucible.store.resolve import StoreResolver

__all__ = ["SelfEvalReport", "self_evaluate"]

CANDIDATE = -1


@dataclass(frozen=True)
class SelfEvalReport:
    round_block: int
    block_hash: str
    mean_loss: float
    others: dict[int, float]
    leader_uid: int | None
    verdicts: dict[int, str]
    release_block: int | None = None  # the round's release: models committed after it wait

    def to_text(self) -> str:
        lines = [
            f"round block {self.round_block} ({self.block_hash[:18]}…): your mean loss {self.mean_loss:.4f} nats"
        ]
        for uid, loss in sorted(self.others.items(), key=lambda kv: kv[1]):
            tag = " (leader)" if uid == self.leader_uid else ""
            lines.append(f"  uid {uid}{tag}: {loss:.4f} — {self.verdicts[uid]}")
        if not self.others:
            lines.append("  no other eligible model: you would be alone in the competition")
        if self.release_block is not None:
            lines.append(
                f"  (scored on the fresh release of block {self.release_block}; a model committed now "
                "is judged on the next release, published after it)"
            )
        return "\n".join(lines)


def self_evaluate(
    chain: Chain, netuid: int, spec: CompetitionSpec, specs_dir: Path, data_dir: Path, resolve_store: StoreResolver,
    cache_dir: Path, *, model_dir: Path | None, hotkey: str, block: int | None = None,
    documents: DocumentStore | None = None,
) -> SelfEvalReport:  # fmt: skip
    mg = chain.metagraph(netuid)
    at = round_block(block if block is not None else mg.block, spec.evaluation.sync_cadence_blocks)
    block_hash = chain.block_hash(at)
    tok = load_tokenizer(specs_dir / spec.model.tokenizer)
    candidates, _ = candidate_releases(spec, mg, at) if spec.data.uses("release") else ([], {})
    data = gather_round_data(
        spec, block_hash, held_out=load_eval_pool(data_dir, tok),
        releases=ReleaseLoader(documents, tok, spec), candidates=candidates,
        sharded=ShardedPools(spec, tok, base_dir=data_dir) if spec.data.uses("sharded") else None,
    )  # fmt: skip
    if data is None:
        raise DataError(
            f"{spec.key} has no data to evaluate on at round block {at}", code="no_round_data"
        )
    windows = data.windows
    competitions = {spec.id: spec}
    if model_dir is not None:
        mine = load_model_dir(model_dir, spec.model).model
    else:
        own = mg.by_hotkey(hotkey)
        if own is None or own.commitment is None:
            raise ModelRejected("missing", "no --model given and this hotkey has no commitment")
        mine = fetch_and_verify(
            own.commitment.data, hotkey, competitions, resolve_store, cache_dir
        ).loaded.model
    batch = spec.evaluation.batch_size
    my_losses = per_sample_losses(mine, windows, batch_size=batch).losses
    others: dict[int, float] = {}
    verdicts: dict[int, str] = {}
    eps = EpsilonSchedule(spec.epsilon.start, spec.epsilon.floor, spec.epsilon.decay_blocks)
    candidate = Contender(CANDIDATE, mg.block, my_losses)
    for neuron in mg.neurons:
        if neuron.hotkey == hotkey or neuron.commitment is None:
            continue
        try:
            fetched = fetch_and_verify(
                neuron.commitment.data, neuron.hotkey, competitions, resolve_store, cache_dir
            )
        except ModelRejected:
            continue
        losses = per_sample_losses(fetched.loaded.model, windows, batch_size=batch).losses
        others[neuron.uid] = sum(losses) / len(losses)
        epsilon = eps.epsilon(mg.block - neuron.commitment.block)
        wins, p_value, adjusted, mine_mean = beats(
            candidate,
            Contender(neuron.uid, neuron.commitment.block, losses),
            epsilon,
            spec.evaluation.significance_level,
        )
        margin = (others[neuron.uid] - mine_mean) / others[neuron.uid] * 100
        verdicts[neuron.uid] = (
            f"you would beat uid {neuron.uid} by {margin:.2f} % (needs ε = {epsilon * 100:.2f} %, sign test p = {p_value:.2g})"
            if wins
            else f"you would not beat uid {neuron.uid}: {margin:+.2f} % vs the ε = {epsilon * 100:.2f} % it is owed (p = {p_value:.2g})"
        )
    leader = (
        max(mg.neurons, key=lambda n: n.incentive).uid
        if mg.neurons and max(n.incentive for n in mg.neurons) > 0
        else None
    )
    return SelfEvalReport(
        at, block_hash, sum(my_losses) / len(my_losses), others, leader, verdicts, data.cutoff_block
    )
