"""The competition tokenizer: a byte-level BPE trained on the training split, shipped as one file.

``load_tokenizer`` takes a local ``tokenizer.json`` (the default, committed with the competition
specs) or, on machines that have a hub, any tokenizer name ``AutoTokenizer`` understands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from protocol.errors import DataError

__all__ = ["EOS_TOKEN", "file_sha256", "load_tokenizer", "train_tokenizer"]

EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Byte-level BPE; deterministic for the same texts in the same order (BPE merges are
    chosen by count with a fixed tie-break, and there is no sampling)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    path = Path(ref)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise DataError(f"tokenizer file {path} does not exist", code="tokenizer_missing")
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(path), eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
        )
    else:
        tok = AutoTokenizer.from_pretrained(str(ref))
    if len(tok) == 0 or tok.decode(tok.encode("round trip")) != "round trip":
        raise DataError(
            f"tokenizer {ref} does not round-trip text: refusing it", code="tokenizer_broken"
        )
    return tok


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
