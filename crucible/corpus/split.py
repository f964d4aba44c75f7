"""Which documents are held out for evaluation: a pure function of the document id.

Whole works are held out (a novel, a play, a book of the Bible), so a model trained on the training
split has never seen a sentence of any evaluation document. Every miner and validator computes the
same split from the ids alone.
"""

from __future__ import annotations

import hashlib
from typing import Literal

__all__ = ["EVAL_FRACTION_PERMILLE", "Split", "split_of"]

Split = Literal["train", "eval"]
EVAL_FRACTION_PERMILLE = 150  # 15 % of the documents


def split_of(doc_id: str, eval_permille: int = EVAL_FRACTION_PERMILLE) -> Split:
    bucket = (
        int.from_bytes(hashlib.sha256(f"crucible-split-v1:{doc_id}".encode()).digest()[:8], "big")
        % 1000
    )
    return "eval" if bucket < eval_permille else "train"
