"""The competition tokenizer: a byte-level BPE trained on the training split, shipped as one file.

``load_tokenizer`` takes a local ``tokenizer.json`` (the default, committed with the competition
specs) or, on machines that have a hub, any tokenizer name ``AutoTokenizer`` understands. Given an
expected sha256 it refuses a file with other bytes (for a hub name: the ``tokenizer.json`` the hub
cache holds), so a miner and a validator can only ever tokenize with the competition's tokenizer.

Training is deterministic without a seed to fix: byte-level BPE with the full 256-byte initial
alphabet, no dropout and no sampling picks each merge by pair count with a fixed tie-break, so the
same texts in the same order give byte-identical ``tokenizer.json`` files. The committed
``competitions/tokenizers/crucible-bpe-8k-v1.json`` is ``crucible data train-tokenizer`` (vocab 8192,
special token ``<|endoftext|>``, no prefix space) over the training split in document-id order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import DataError

__all__ = [
    "EOS_TOKEN",
    "file_sha256",
    "load_competition_tokenizer",
    "load_tokenizer",
    "train_tokenizer",
]

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


def load_tokenizer(ref: str | Path, expected_sha256: str | None = None) -> PreTrainedTokenizerBase:
    """A local ``tokenizer.json`` or a hub tokenizer name; checked to round-trip text and, when
    ``expected_sha256`` is given, to be exactly those bytes (``DataError`` otherwise)."""
    path = Path(ref)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise DataError(f"tokenizer file {path} does not exist", code="tokenizer_missing")
        _check_hash(path, expected_sha256)
        try:
            tok = PreTrainedTokenizerFast(
                tokenizer_file=str(path), eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
            )
        except Exception as exc:  # the tokenizers parser raises its own exception types
            raise DataError(
                f"{path} is not a tokenizer file: {exc}", code="tokenizer_broken"
            ) from exc
    else:
        if expected_sha256 is not None:
            from huggingface_hub import hf_hub_download

            _check_hash(Path(hf_hub_download(str(ref), "tokenizer.json")), expected_sha256)
        tok = AutoTokenizer.from_pretrained(str(ref))
    if len(tok) == 0 or tok.decode(tok.encode("round trip")) != "round trip":
        raise DataError(
            f"tokenizer {ref} does not round-trip text: refusing it", code="tokenizer_broken"
        )
    return tok


def load_competition_tokenizer(
    constraints: ModelConstraints, specs_dir: Path
) -> PreTrainedTokenizerBase:
    """The tokenizer a competition names (a path relative to its specs dir, or a hub name),
    verified against the spec's sha256 and vocabulary size."""
    local = Path(specs_dir) / constraints.tokenizer
    ref: str | Path = local if local.suffix == ".json" or local.exists() else constraints.tokenizer
    tok = load_tokenizer(ref, constraints.tokenizer_sha256)
    if len(tok) != constraints.vocab_size:
        raise DataError(
            f"tokenizer {constraints.tokenizer} has {len(tok)} tokens; the spec says "
            f"{constraints.vocab_size}",
            code="tokenizer_mismatch",
        )
    return tok


def _check_hash(path: Path, expected: str | None) -> None:
    if expected is not None and (actual := file_sha256(path)) != expected:
        raise DataError(
            f"tokenizer {path} has sha256 {actual}, the competition expects {expected}",
            code="tokenizer_mismatch",
            fix="use the tokenizer committed with the competition specs",
        )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
