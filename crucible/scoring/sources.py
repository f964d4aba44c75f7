"""Every source's pool for a round, and the round's data from them (``gather_round_data``).

A round's data source (a fresh release, the held-out split, documents picked from a sharded web
corpus) yields documents, tokenized by ``scoring.pools.pool_from_documents`` exactly as the
held-out split is, so ``select_samples`` draws windows from any source the same way.
``sharded_pool`` is the sharded source's step: the round seed picks the documents, and the pick's
evidence (which row groups were read, what was skipped) comes back with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from crucible.corpus.sharded import Picked, ShardedCorpus, ShardFileSystem, open_sharded, pick
from crucible.protocol.competition import CompetitionSpec, DataSource
from crucible.protocol.errors import CrucibleError
from crucible.scoring.pools import pool_from_documents
from crucible.scoring.releases import ReleaseLoader
from crucible.scoring.round_data import ReleaseRef, RoundData, build_round_data
from crucible.scoring.sampling import EvalPool, seed_from_block_hash

__all__ = ["ShardedPools", "gather_round_data", "sharded_pool"]


def sharded_pool(
    corpus: ShardedCorpus, seed: int, count: int, tokenizer: PreTrainedTokenizerBase
) -> tuple[EvalPool, Picked]:
    """The pool of ``count`` documents the seed picks from the corpus, and the pick's evidence."""
    picked = pick(corpus, seed, count)
    return pool_from_documents(picked.documents, tokenizer), picked


# documents picked per sample drawn: enough that the round's windows come from many pages (a
# window is drawn uniformly over the picked documents' positions), few enough to stay megabytes
DOCUMENTS_PER_SAMPLE = 2


class ShardedPools:
    """The ``sharded`` sources of one competition: each corpus listed once, a pool picked per round.

    ``pools(block_hash)`` gives ``{"sharded:<location>": EvalPool}`` for the round, the pick seeded
    by the round block's hash alone (every validator, a miner's self-evaluation and ``verify`` pick
    the same documents), and why any source gave nothing: a corpus that cannot be listed or read
    is passed over with a reason and the round goes on with the other sources.
    """

    def __init__(
        self,
        spec: CompetitionSpec,
        tokenizer: PreTrainedTokenizerBase,
        *,
        base_dir: Path | None = None,
        filesystem: ShardFileSystem | None = None,
    ) -> None:
        self.spec, self.tokenizer = spec, tokenizer
        self.base_dir, self.filesystem = base_dir, filesystem
        self._corpora: dict[str, ShardedCorpus] = {}

    def _corpus(self, source: DataSource) -> ShardedCorpus:
        key = source.key
        if key not in self._corpora:  # a failed listing is retried next round (it may be transient)
            self._corpora[key] = open_sharded(
                source, filesystem=self.filesystem, base_dir=self.base_dir
            )
        return self._corpora[key]

    def pools(self, block_hash: str) -> tuple[dict[str, EvalPool], dict[str, str]]:
        pools: dict[str, EvalPool] = {}
        passed: dict[str, str] = {}
        count = DOCUMENTS_PER_SAMPLE * self.spec.evaluation.samples_per_round
        for source in self.spec.data.sources:
            if source.kind != "sharded":
                continue
            key = source.key
            seed = seed_from_block_hash(block_hash, f"{self.spec.key}:{key}:pick")
            try:
                pools[key], _ = sharded_pool(self._corpus(source), seed, count, self.tokenizer)
            except CrucibleError as exc:
                passed[key] = f"{exc.code}: {exc.message}"
        return pools, passed


def gather_round_data(
    spec: CompetitionSpec,
    block_hash: str,
    *,
    held_out: EvalPool | None,
    releases: ReleaseLoader | None,
    candidates: list[ReleaseRef],
    sharded: ShardedPools | None,
    ignored: Mapping[str, str] | None = None,
) -> RoundData | None:
    """Every source's pool for the round, then ``build_round_data``: the one path the validator,
    a miner's self-evaluation and ``verify`` (with the bundle's release as the only candidate)
    take, so all three draw the same samples."""
    release, release_pool, passed = (
        releases.choose(candidates) if releases is not None else (None, None, {})
    )
    sharded_pools, sharded_passed = sharded.pools(block_hash) if sharded is not None else ({}, {})
    pools = {"release": release_pool, "held_out": held_out, **sharded_pools}
    reasons = {**(ignored or {}), **passed, **sharded_passed}
    return build_round_data(spec, block_hash, pools, release, reasons)
