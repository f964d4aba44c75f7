"""The round's data: the held-out evaluation pool and the windows a block hash selects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from crucible.corpus.dataset import tokenized_documents
from crucible.protocol.competition import CompetitionSpec
from crucible.scoring.sampling import EvalPool, Sample, seed_from_block_hash, select_samples

__all__ = ["load_eval_pool", "round_windows"]


def load_eval_pool(corpus: Path | str, tokenizer: PreTrainedTokenizerBase) -> EvalPool:
    """Only the held-out split: validators never sample the training documents."""
    docs = tokenized_documents(corpus, "eval", tokenizer)
    return EvalPool.from_documents(list(zip(docs["id"], docs["input_ids"], strict=True)))


def round_windows(
    pool: EvalPool, spec: CompetitionSpec, block_hash: str
) -> tuple[int, list[Sample], np.ndarray]:
    seed = seed_from_block_hash(block_hash, spec.key)
    length = spec.model.sequence_length
    samples = select_samples(pool, seed, spec.evaluation.samples_per_round, length)
    windows = (
        np.stack([pool.window(s, length) for s in samples])
        if samples
        else np.zeros((0, length), np.int64)
    )
    return seed, samples, windows
