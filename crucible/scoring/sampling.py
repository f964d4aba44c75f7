"""Which samples a round evaluates: pure functions of a block hash, a spec and the eval pool.

The seed is the hash of the latest block that is a multiple of the competition's sync cadence, so
every validator draws the same samples and nobody could know them when committing. Samples are
``sequence_length`` token windows drawn uniformly over all window positions of the held-out
documents (never the training split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EvalPool",
    "Sample",
    "is_eligible",
    "round_block",
    "select_samples",
    "seed_from_block_hash",
]


def round_block(current_block: int, cadence_blocks: int) -> int:
    return current_block - current_block % cadence_blocks


def seed_from_block_hash(block_hash: str, competition_key: str) -> int:
    digest = hashlib.sha256(f"crucible-round-v1:{competition_key}:{block_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def is_eligible(commit_block: int, at_round_block: int, eval_delay_blocks: int) -> bool:
    """A model must be committed at least ``eval_delay_blocks`` before the round's block."""
    return commit_block + eval_delay_blocks <= at_round_block


@dataclass(frozen=True)
class Sample:
    doc_id: str
    offset: int

    @property
    def sample_id(self) -> str:
        return f"{self.doc_id}@{self.offset}"


@dataclass(frozen=True)
class EvalPool:
    """Held-out documents as token arrays, in a fixed (sorted) order."""

    doc_ids: tuple[str, ...]
    tokens: tuple[np.ndarray, ...]

    @classmethod
    def from_documents(cls, docs: Sequence[tuple[str, Sequence[int]]]) -> EvalPool:
        ordered = sorted(docs, key=lambda d: d[0])
        return cls(
            tuple(d for d, _ in ordered), tuple(np.asarray(t, dtype=np.int64) for _, t in ordered)
        )

    def window(self, sample: Sample, length: int) -> np.ndarray:
        tokens = self.tokens[self.doc_ids.index(sample.doc_id)]
        window = tokens[sample.offset : sample.offset + length]
        if len(window) != length:
            raise ValueError(f"sample {sample.sample_id} does not have {length} tokens")
        return window


def select_samples(pool: EvalPool, seed: int, count: int, length: int) -> list[Sample]:
    starts = np.array([max(0, len(t) - length + 1) for t in pool.tokens], dtype=np.int64)
    total = int(starts.sum())
    if total == 0:
        raise ValueError(f"no held-out document has {length} tokens")
    rng = np.random.Generator(np.random.PCG64(seed))
    positions = np.sort(rng.choice(total, size=min(count, total), replace=False))
    bounds = np.cumsum(starts)
    samples = []
    for pos in positions.tolist():
        doc = int(np.searchsorted(bounds, pos, side="right"))
        offset = pos - (int(bounds[doc - 1]) if doc else 0)
        samples.append(Sample(pool.doc_ids[doc], offset))
    return samples
