"""The round's data, from the spec's sources: what every validator, a miner's self-evaluation,
``verify`` and ``audit`` compute identically for a round block.

Sources (``protocol.competition.DataSource``): the newest fresh **release** committed on chain by
one of the spec's publishers (``publisher_hotkeys``; a release committed by anyone else is ignored
with a reason), the public **held-out** split, a **sharded** corpus. Each source gets its weight's
share of ``samples_per_round``, drawn with a seed from the round block's hash (``select_samples``:
uniform over the source's window positions). When a release is used, a model is eligible only if
it was committed at least ``eval_delay_blocks`` before the release was (``cutoff_block``), so no
model is ever judged on text that existed when it was committed. Before any usable release the
spec's ``fallback`` decides: the held-out split, or no round.

``ReleaseRef`` / ``SourceUse`` are what a bundle records, so the round can be rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from crucible.chain.interface import Metagraph
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import CommitmentError
from crucible.protocol.release import ReleaseCommitment
from crucible.scoring.sampling import EvalPool, Sample, seed_from_block_hash, select_samples

__all__ = [
    "ReleaseRef",
    "RoundData",
    "SourceUse",
    "build_round_data",
    "candidate_releases",
    "publisher_hotkeys",
    "sample_counts",
]


@dataclass(frozen=True)
class ReleaseRef:
    release_id: str
    store_ref: str
    publisher: str
    commit_block: int


@dataclass(frozen=True)
class SourceUse:
    kind: str
    weight: float
    samples: int
    release: ReleaseRef | None = None
    location: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RoundData:
    seed: int
    samples: list[Sample]
    windows: np.ndarray
    sources: list[SourceUse]
    cutoff_block: int | None  # models must be committed eval_delay before this (a release's block)
    # hotkey → why its release was not used; "sharded:<location>" → why that corpus gave nothing
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def sample_ids(self) -> list[str]:
        return [s.sample_id for s in self.samples]


def publisher_hotkeys(spec: CompetitionSpec, mg: Metagraph) -> set[str]:
    """The spec's publishers: ss58 addresses, and "owner" for the subnet owner's hotkey."""
    out = {p for p in spec.data.publishers if p != "owner"}
    if "owner" in spec.data.publishers and mg.owner_hotkey:
        out.add(mg.owner_hotkey)
    return out


def candidate_releases(
    spec: CompetitionSpec, mg: Metagraph, at_block: int
) -> tuple[list[ReleaseRef], dict[str, str]]:
    """Releases the spec's publishers committed at or before the round block ``at_block``, newest
    first (a round is pinned to its block: a release committed later belongs to a later round, so
    two validators running at different moments see the same one); others ignored with a reason."""
    publishers = publisher_hotkeys(spec, mg)
    found, ignored = [], {}
    for n in mg.neurons:
        if n.commitment is None or not ReleaseCommitment.looks_like(n.commitment.data):
            continue
        if n.hotkey not in publishers:
            ignored[n.hotkey] = f"uid {n.uid} is not a data publisher of {spec.key}"
            continue
        try:
            c = ReleaseCommitment.parse(n.commitment.data)
        except CommitmentError as exc:
            ignored[n.hotkey] = f"uid {n.uid}: {exc}"
            continue
        if n.commitment.block > at_block:
            continue  # committed after this round's block: the next round's release
        found.append(ReleaseRef(c.release_id, c.store_ref, n.hotkey, n.commitment.block))
    return sorted(found, key=lambda r: (-r.commit_block, r.release_id)), ignored


def sample_counts(total: int, weights: list[float]) -> list[int]:
    """``total`` samples shared by weight (renormalised); the first source takes the rounding."""
    scale = sum(weights)
    counts = [int(total * w / scale) for w in weights]
    counts[0] += total - sum(counts)
    return counts


def _windows(pool: EvalPool, samples: list[Sample], length: int) -> np.ndarray:
    if not samples:
        return np.zeros((0, length), np.int64)
    return np.stack([pool.window(s, length) for s in samples])


@dataclass(frozen=True)
class _Use:
    key: str  # "release", "held_out" or "sharded:<location>"
    pool: EvalPool
    weight: float
    location: str | None = None


def _uses(
    spec: CompetitionSpec, pools: Mapping[str, EvalPool | None], release: ReleaseRef | None
) -> list[_Use]:
    uses = []
    for source in spec.data.sources:
        key = source.key
        pool = pools.get(key)
        if source.kind == "release" and (release is None or pool is None):
            fallback = pools.get("held_out")
            if (
                spec.data.fallback == "held_out"
                and fallback is not None
                and not spec.data.uses("held_out")
            ):
                uses.append(_Use("held_out", fallback, source.weight))  # before the first release
            continue
        if pool is not None:
            uses.append(_Use(key, pool, source.weight, source.location))
    return uses


def build_round_data(
    spec: CompetitionSpec,
    block_hash: str,
    pools: Mapping[str, EvalPool | None],
    release: ReleaseRef | None,
    ignored: Mapping[str, str] | None = None,
) -> RoundData | None:
    """``pools`` by source key (``release``: the pool of ``release``; ``held_out``;
    ``sharded:<location>``). ``None`` when the sources and the fallback leave nothing."""
    uses = _uses(spec, pools, release)
    if not uses:
        return None
    seed = seed_from_block_hash(block_hash, spec.key)
    length = spec.model.sequence_length
    counts = sample_counts(spec.evaluation.samples_per_round, [u.weight for u in uses])
    samples, windows, recorded = [], [], []
    for i, (use, count) in enumerate(zip(uses, counts, strict=True)):
        # the first source keeps the plain seed: a held-out-only spec draws what it always drew
        source_seed = seed if i == 0 else seed_from_block_hash(block_hash, f"{spec.key}:{use.key}")
        picked = select_samples(use.pool, source_seed, count, length)
        windows.append(_windows(use.pool, picked, length))
        prefix = {
            "held_out": "",
            "release": f"release:{release.release_id[:12] if release else ''}/",
        }.get(use.key, use.key + "/")
        samples += [Sample(prefix + s.doc_id, s.offset) for s in picked]
        ref = release if use.key == "release" else None
        recorded.append(
            SourceUse(use.key.split(":")[0], use.weight, len(picked), ref, use.location)
        )
    cutoff = (
        release.commit_block
        if release is not None and any(u.kind == "release" for u in recorded)
        else None
    )
    return RoundData(seed, samples, np.concatenate(windows), recorded, cutoff, dict(ignored or {}))
