"""Documents → an ``EvalPool``: one token array per document, tokenized as the corpus is.

Shared by every source of a round (a release's documents, a sharded corpus's pick), so
``select_samples`` draws windows from any of them the same way as from the held-out split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from crucible.corpus.sources import Document
from crucible.protocol.errors import DataError
from crucible.scoring.sampling import EvalPool

__all__ = ["pool_from_documents"]


def pool_from_documents(
    documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase
) -> EvalPool:
    """One token array per document (sorted by id, as every pool is); ids must be unique, since a
    sample names its document by id."""
    ids = [d.doc_id for d in documents]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
    if repeated:
        raise DataError(
            f"documents share an id ({', '.join(repeated)}): a sample could not name its document",
            code="duplicate_document",
        )
    encoded = (
        tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
        if documents
        else []
    )
    return EvalPool.from_documents(list(zip(ids, encoded, strict=True)))
