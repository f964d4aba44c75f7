"""Reading the corpus through ``datasets`` and turning it into token ids.

``load_documents`` reads a split of the local corpus (``<root>/corpus/{train,eval}.jsonl``) or, on
a machine with a hub, any dataset name with a ``text`` column. ``tokenized_documents`` maps the
tokenizer over it with ``datasets``' on-disk cache, so a second call is fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import Dataset, load_dataset
from transformers import PreTrainedTokenizerBase

from corpus.fetch import CorpusPaths
from corpus.split import Split
from protocol.errors import DataError

__all__ = ["DEFAULT_DATA_DIR", "load_documents", "token_stream", "tokenized_documents"]

DEFAULT_DATA_DIR = Path(os.environ.get("CRUCIBLE_DATA_DIR", "data"))


def load_documents(source: Path | str, split: Split) -> Dataset:
    root = Path(source)
    if root.is_dir():
        paths = CorpusPaths(root)
        path = paths.train if split == "train" else paths.eval
        if not path.is_file():
            raise DataError(
                f"no {split} split under {root}",
                code="corpus_missing",
                fix="run `crucible data fetch`",
            )
        return load_dataset(
            "json", data_files=str(path), split="train", cache_dir=str(root / "hf-cache")
        )
    return load_dataset(str(source), split="train" if split == "train" else "validation")


def tokenized_documents(
    source: Path | str, split: Split, tokenizer: PreTrainedTokenizerBase
) -> Dataset:
    docs = load_documents(source, split)

    def encode(batch: dict) -> dict:
        return {"input_ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"]}

    return docs.map(
        encode, batched=True, remove_columns=[c for c in docs.column_names if c != "id"]
    )


def token_stream(
    source: Path | str, split: Split, tokenizer: PreTrainedTokenizerBase
) -> np.ndarray:
    """Every document's tokens, concatenated with the EOS token after each (int32)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token", code="tokenizer_broken")
    parts = []
    for ids in tokenized_documents(source, split, tokenizer)["input_ids"]:
        parts.append(np.asarray(ids, dtype=np.int32))
        parts.append(np.asarray([eos], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
