"""Which documents are held out: a pure function of the document id.

Whole works are held out (a novel, a play, a book of the Bible), so a model trained on the training
split has never seen a sentence of any held-out document. Every miner and validator computes the
same split from the ids alone. Three splits:

* ``train`` (85 %): what miners train on;
* ``eval`` (10 %): the public held-out split — for offline evaluation and a subnet's first rounds
  before any fresh release exists; public, so a memorizer can train on it;
* ``fresh`` (5 %): held back from both, standing in for text written after the models were
  committed: the demo and the integrity bench publish these works as fresh data releases.

``fresh`` was carved out of what used to be the eval split, so the training split (and the
committed tokenizer trained on it) is unchanged.
"""

from __future__ import annotations

import hashlib
from typing import Literal

__all__ = ["EVAL_FRACTION_PERMILLE", "FRESH_FRACTION_PERMILLE", "SPLITS", "Split", "split_of"]

Split = Literal["train", "eval", "fresh"]
SPLITS: tuple[Split, ...] = ("train", "eval", "fresh")
EVAL_FRACTION_PERMILLE = 150  # 15 % of the documents are held out …
FRESH_FRACTION_PERMILLE = 50  # … a third of them held back as fresh text


def split_of(doc_id: str, eval_permille: int = EVAL_FRACTION_PERMILLE) -> Split:
    bucket = (
        int.from_bytes(hashlib.sha256(f"crucible-split-v1:{doc_id}".encode()).digest()[:8], "big")
        % 1000
    )
    if bucket < min(FRESH_FRACTION_PERMILLE, eval_permille):
        return "fresh"
    return "eval" if bucket < eval_permille else "train"
