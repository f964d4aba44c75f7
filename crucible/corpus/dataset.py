"""Reading the corpus through ``datasets`` and turning it into token ids.

``load_documents`` reads a split of the local corpus (``<root>/corpus/{train,eval,fresh}.jsonl``) or, on
a machine with a hub, any dataset name with a ``text`` column. ``tokenized_documents`` maps the
tokenizer over it with ``datasets``' on-disk cache, so a second call is fast.

The cache lives where ``datasets`` keeps it (``HF_DATASETS_CACHE``, by default under ``HF_HOME``)
unless ``cache_dir`` is given — never inside the corpus directory, because the test fixture corpus
is committed and must stay read-only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from datasets import Dataset, load_dataset
from datasets.utils.logging import disable_progress_bar
from transformers import PreTrainedTokenizerBase

from crucible.corpus.fetch import CorpusPaths
from crucible.corpus.split import Split
from crucible.protocol.errors import DataError

__all__ = ["DEFAULT_DATA_DIR", "load_documents", "token_stream", "tokenized_documents"]

DEFAULT_DATA_DIR = Path(os.environ.get("CRUCIBLE_DATA_DIR", "data"))


def load_documents(source: Path | str, split: Split, *, cache_dir: Path | None = None) -> Dataset:
    """One split as a ``Dataset`` with ``id`` and ``text`` columns (one row a whole work)."""
    cache = str(cache_dir) if cache_dir is not None else None
    root = Path(source)
    if root.is_dir():
        paths = CorpusPaths(root)
        path = paths.split(split)
        if not path.is_file():
            raise DataError(
                f"no {split} split under {root}",
                code="corpus_missing",
                fix="run `crucible data fetch`",
            )
        return load_dataset("json", data_files=str(path), split="train", cache_dir=cache)
    # a hub dataset (only on machines that have one): its validation split is the held-out one
    return load_dataset(
        str(source), split="train" if split == "train" else "validation", cache_dir=cache
    )


def tokenized_documents(
    source: Path | str,
    split: Split,
    tokenizer: PreTrainedTokenizerBase,
    *,
    cache_dir: Path | None = None,
) -> Dataset:
    """``id`` and ``input_ids`` (no special tokens) per document, cached by ``datasets``."""
    if not sys.stderr.isatty():  # "Map:" / "Generating split" bars are noise in a log file
        disable_progress_bar()
    docs = load_documents(source, split, cache_dir=cache_dir)

    def encode(batch: dict) -> dict:
        return {"input_ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"]}

    return docs.map(
        encode, batched=True, remove_columns=[c for c in docs.column_names if c != "id"]
    )


def token_stream(
    source: Path | str,
    split: Split,
    tokenizer: PreTrainedTokenizerBase,
    *,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """Every document's tokens, concatenated with the EOS token after each (int32)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token", code="tokenizer_broken")
    parts = []
    for ids in tokenized_documents(source, split, tokenizer, cache_dir=cache_dir)["input_ids"]:
        parts.append(np.asarray(ids, dtype=np.int32))
        parts.append(np.asarray([eos], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
