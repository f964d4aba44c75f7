"""Competitions as data: a TOML spec → a strict pydantic model with a canonical hash.

The hash is sha256 over the canonical JSON of the parsed spec (sorted keys, no whitespace), so it
is the same on every machine whatever the TOML's formatting; it goes into score bundles. A change
of any field is a new ``version`` (and so a new ``key``), never an edit in place.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crucible.protocol.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ARCHITECTURES",
    "CompetitionSpec",
    "EpsilonSpec",
    "EvaluationSpec",
    "ModelConstraints",
    "load_competitions",
    "load_spec",
]

ARCHITECTURES = ("LlamaForCausalLM", "GPT2LMHeadModel")


class _Strict(BaseModel):
    # strict: a quoted number or a 1 for true is a mistake in a spec, not something to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelConstraints(_Strict):
    architectures: tuple[Literal["LlamaForCausalLM", "GPT2LMHeadModel"], ...] = Field(min_length=1)
    min_parameters: int = Field(ge=1)
    max_parameters: int = Field(ge=1)
    max_bytes: int = Field(ge=1)
    tokenizer: str = Field(
        min_length=1, max_length=128
    )  # path (relative to the specs dir) or hub id
    tokenizer_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    vocab_size: int = Field(ge=2, le=1_000_000)
    sequence_length: int = Field(ge=8, le=65536)

    @model_validator(mode="after")
    def _range(self) -> ModelConstraints:
        if self.min_parameters > self.max_parameters:
            raise ValueError("min_parameters exceeds max_parameters")
        return self


class EvaluationSpec(_Strict):
    samples_per_round: int = Field(ge=1, le=100_000)
    batch_size: int = Field(ge=1, le=4096)
    sync_cadence_blocks: int = Field(ge=1)
    eval_delay_blocks: int = Field(ge=0)
    significance_level: float = Field(gt=0, lt=1)
    serving_probe_samples: int = Field(ge=0, le=64)


class EpsilonSpec(_Strict):
    start: float = Field(ge=0, lt=1)
    floor: float = Field(ge=0, lt=1)
    decay_blocks: int = Field(ge=1)

    @model_validator(mode="after")
    def _floor_below_start(self) -> EpsilonSpec:
        if self.floor > self.start:
            raise ValueError("epsilon floor exceeds its start")
        return self


class CompetitionSpec(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")
    version: int = Field(ge=1)
    active: bool
    description: str = Field(max_length=500)
    model: ModelConstraints
    evaluation: EvaluationSpec
    epsilon: EpsilonSpec
    softmax_temperature: float = Field(gt=0)
    ema_alpha: float = Field(gt=0, le=1)
    serving_share: float = Field(ge=0, le=1)
    reward_share: float = Field(ge=0, le=1)

    @property
    def key(self) -> str:
        """``id@version``: what a commitment names."""
        return f"{self.id}@{self.version}"

    def canonical_json(self) -> bytes:
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()


def load_spec(path: Path) -> CompetitionSpec:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read competition spec {path}: {exc}") from exc
    try:
        # through JSON so strict mode takes TOML arrays for tuples (TOML has no tuple type)
        return CompetitionSpec.model_validate_json(json.dumps(data))
    except (TypeError, ValidationError) as exc:  # TypeError: a TOML date, which no field takes
        raise ConfigError(f"competition spec {path} is invalid: {exc}") from exc


def load_competitions(directory: Path) -> dict[str, CompetitionSpec]:
    """Every ``*.toml`` in ``directory`` by id; active reward shares must sum to 1."""
    specs = [load_spec(p) for p in sorted(Path(directory).glob("*.toml"))]
    by_id: dict[str, CompetitionSpec] = {}
    for spec in specs:
        if spec.id in by_id:
            raise ConfigError(f"two specs define competition {spec.id!r}")
        by_id[spec.id] = spec
    total = sum(s.reward_share for s in specs if s.active)
    if specs and abs(total - 1.0) > 1e-9:
        raise ConfigError(f"reward shares of active competitions sum to {total}, not 1")
    return by_id
