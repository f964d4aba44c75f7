"""Collaborative-training competitions as data: the ``collab`` spec and the payload commitment.

A ``collab`` competition trains one shared model in rounds (windows of ``round_blocks`` blocks).
In round ``r`` every miner starts from checkpoint ``r``, runs ``inner_steps`` AdamW steps on its
own assignment, compresses its pseudo-gradient (``crucible.collab.codec``) and commits the
payload's hash before the window closes; validators score each payload on data drawn after the
deadline and aggregate the best into checkpoint ``r + 1``. Every number that decides a payment is
here, in a spec whose hash goes into the score bundles.

The commitment, ``collab@2:<round>:<store-ref>:<payload content hash>:<secure hash>`` (≤ 128
bytes with ``local``), names the round it is for and binds the payload to the committing hotkey
exactly as a model commitment does (``protocol.commitment.secure_hash``).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from crucible.protocol.commitment import MAX_COMMITMENT_BYTES, secure_hash
from crucible.protocol.competition import _Strict
from crucible.protocol.errors import CommitmentError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CollabCodec",
    "CollabModel",
    "CollabScoring",
    "CollabSpec",
    "PayloadCommitment",
    "is_collab_toml",
    "load_collab_spec",
    "load_collab_specs",
]


class CollabModel(_Strict):
    """The shared model's shape (built from this config, never downloaded) and its seed."""

    architecture: Literal["LlamaForCausalLM", "GPT2LMHeadModel"] = "LlamaForCausalLM"
    vocab_size: int = Field(ge=2, le=1_000_000)
    sequence_length: int = Field(ge=8, le=65536)
    layers: int = Field(ge=1, le=256)
    hidden: int = Field(ge=8, le=65536)
    heads: int = Field(ge=1, le=1024)
    ffn: int = Field(ge=8, le=262144)
    init_seed: int = Field(ge=0, lt=2**63)  # checkpoint 0 is built from this seed
    tokenizer: str = Field(min_length=1, max_length=128)
    tokenizer_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class CollabCodec(_Strict):
    """How a pseudo-gradient is compressed: top-``topk`` of every ``chunk``×``chunk`` block
    (1-D tensors: every ``chunk``² consecutive values), ``value_bits``-bit values, packed
    indices, error feedback with ``error_decay``."""

    chunk: int = Field(ge=8, le=256)
    topk: int = Field(ge=1, le=4096)
    value_bits: Literal[2] = 2
    error_decay: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _k_fits(self) -> CollabCodec:
        if self.topk > self.chunk * self.chunk:
            raise ValueError(f"topk {self.topk} exceeds a block's {self.chunk**2} values")
        return self

    @property
    def density(self) -> float:
        return self.topk / (self.chunk * self.chunk)


class CollabScoring(_Strict):
    """How validators score and aggregate a round's payloads."""

    eval_windows: int = Field(ge=1, le=4096)  # held-out windows per round (drawn after deadline)
    proof_windows: int = Field(ge=2, le=4096)  # own-assignment and random windows, each
    # the proof of own data: own windows must gain this many standard errors more than random
    proof_z: float = Field(gt=0, le=10)
    # a score counts only if the held-out windows' gains are this many standard errors above 0
    gain_z: float = Field(gt=0, le=10)
    eval_delay_blocks: int = Field(ge=1, le=10_000)  # the data block is this far past deadline
    overlap_threshold: float = Field(gt=0, le=1)  # top-k index overlap that marks a copy
    max_contributors: int = Field(ge=1, le=4096)  # best positive payloads aggregated per round
    # a payload alone is applied at outer_lr × this to measure it (as Templar's eval_lr_factor)
    score_lr_factor: float = Field(gt=0, le=1)
    # a round's score under this fraction of its best is noise (a random Δ's luck): 0
    min_score_fraction: float = Field(ge=0, lt=1)
    ema_alpha: float = Field(gt=0, le=1)
    min_rating_fraction: float = Field(ge=0, lt=1)  # ratings below this × best earn nothing
    aggregators: tuple[str, ...] = ("owner",)  # hotkeys whose checkpoints miners follow


class CollabSpec(_Strict):
    kind: Literal["collab"]
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")
    version: int = Field(ge=1)
    active: bool
    description: str = Field(max_length=500)
    reward_share: float = Field(ge=0, le=1)
    round_blocks: int = Field(ge=2, le=100_000)
    inner_steps: int = Field(ge=1, le=100_000)
    batch_size: int = Field(ge=1, le=4096)
    inner_lr: float = Field(gt=0, le=1)
    inner_weight_decay: float = Field(ge=0, le=1)
    outer_lr: float = Field(gt=0, le=10)
    outer_momentum: float = Field(ge=0, lt=1)  # 0: plain SGD (error feedback carries momentum)
    nesterov: bool
    model: CollabModel
    codec: CollabCodec
    scoring: CollabScoring

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    def canonical_json(self) -> bytes:
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    def round_of(self, block: int) -> int:
        """The round whose window holds ``block``: blocks [r·W, (r+1)·W)."""
        return block // self.round_blocks

    def window(self, round_index: int) -> tuple[int, int]:
        """(first block, deadline): a payload counts if committed in first ≤ block ≤ deadline."""
        first = round_index * self.round_blocks
        return first, first + self.round_blocks - 1

    def data_block(self, round_index: int) -> int:
        """The block whose hash draws the round's scoring data: after the deadline."""
        return self.window(round_index)[1] + self.scoring.eval_delay_blocks


def is_collab_toml(data: dict) -> bool:
    return data.get("kind") == "collab"


def load_collab_specs(directory: Path) -> dict[str, CollabSpec]:
    """Every ``kind = "collab"`` spec in ``directory`` by id (``load_competitions`` checks that
    the reward shares of all active specs, both kinds, sum to 1)."""
    out: dict[str, CollabSpec] = {}
    for path in sorted(Path(directory).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read competition spec {path}: {exc}") from exc
        if is_collab_toml(data):
            spec = load_collab_spec(path, data)
            if spec.id in out:
                raise ConfigError(f"two specs define competition {spec.id!r}")
            out[spec.id] = spec
    return out


def load_collab_spec(path: Path, data: dict | None = None) -> CollabSpec:
    try:
        data = tomllib.loads(Path(path).read_text()) if data is None else data
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read collab spec {path}: {exc}") from exc
    try:
        return CollabSpec.model_validate_json(json.dumps(data))
    except (TypeError, ValidationError) as exc:
        raise ConfigError(f"collab spec {path} is invalid: {exc}") from exc


_COMPETITION = re.compile(r"^[a-z][a-z0-9_]{0,15}@[1-9][0-9]{0,5}$")
_ROUND = re.compile(r"^(0|[1-9][0-9]{0,11})$")
_REF = re.compile(r"^(local|[A-Za-z0-9][A-Za-z0-9._-]{0,20}/[A-Za-z0-9][A-Za-z0-9._-]{0,20})$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_SECURE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class PayloadCommitment:
    """``<competition>:<round>:<store-ref>:<payload content hash>:<secure hash>``."""

    competition: str
    round_index: int
    store_ref: str
    content_hash: str
    secure_hash: str

    def __post_init__(self) -> None:
        checks = (
            (self.competition, _COMPETITION, "competition (id@version)"),
            (str(self.round_index), _ROUND, "round"),
            (self.store_ref, _REF, "store ref"),
            (self.content_hash, _HASH, "payload hash (64 hex)"),
            (self.secure_hash, _SECURE, "secure hash (32 hex)"),
        )
        for value, pattern, what in checks:
            if not isinstance(value, str) or not pattern.match(value):
                raise CommitmentError(f"bad {what} in a collab commitment: {value!r}")
        if len(str(self).encode()) > MAX_COMMITMENT_BYTES:
            raise CommitmentError(
                f"collab commitment over {MAX_COMMITMENT_BYTES} bytes", code="commitment_too_long"
            )

    @classmethod
    def for_payload(
        cls, competition: str, round_index: int, store_ref: str, content_hash: str, hotkey: str
    ) -> PayloadCommitment:
        return cls(
            competition, round_index, store_ref, content_hash, secure_hash(content_hash, hotkey)
        )

    def __str__(self) -> str:
        return (
            f"{self.competition}:{self.round_index}:{self.store_ref}:"
            f"{self.content_hash}:{self.secure_hash}"
        )

    @classmethod
    def parse(cls, raw: str) -> PayloadCommitment:
        if not isinstance(raw, str) or len(raw.encode()) > MAX_COMMITMENT_BYTES:
            raise CommitmentError(f"a commitment is text of at most {MAX_COMMITMENT_BYTES} bytes")
        parts = raw.split(":")
        if len(parts) != 5 or not _ROUND.match(parts[1]):
            raise CommitmentError(f"not a collab commitment: {raw[:60]!r}")
        return cls(parts[0], int(parts[1]), parts[2], parts[3], parts[4])

    @staticmethod
    def looks_like(raw: str | None) -> bool:
        """Shaped like a collab commitment (five parts, a round number second)."""
        if not isinstance(raw, str):
            return False
        parts = raw.split(":")
        return len(parts) == 5 and bool(_ROUND.match(parts[1]))

    def matches(self, hotkey: str) -> bool:
        return self.secure_hash == secure_hash(self.content_hash, hotkey)
