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
    "DataSource",
    "DataSpec",
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


class DataSource(_Strict):
    """Where a round's samples come from, and what share of them.

    * ``release`` — the newest fresh data release committed on chain by one of the spec's
      publishers; only models committed ``eval_delay_blocks`` before it are judged on it;
    * ``held_out`` — the corpus's held-out split (public: for offline use and a subnet's first
      rounds before any release exists);
    * ``sharded`` — a large sharded parquet corpus (a Hub dataset at a pinned revision,
      ``hf://datasets/<repo>@<revision>``, or a local folder laid out like one), read by random
      access: the round seed picks the shards and row groups and only those are read.
    """

    kind: Literal["release", "held_out", "sharded"]
    weight: float = Field(gt=0, le=1)
    location: str | None = Field(default=None, min_length=1, max_length=512)
    pattern: str = Field(default="**/*.parquet", min_length=1, max_length=128)
    text_column: str = Field(default="text", min_length=1, max_length=64)
    id_column: str | None = Field(default=None, min_length=1, max_length=64)

    @property
    def key(self) -> str:
        """How a round names this source's pool: ``release``, ``held_out`` or ``sharded:<location>``."""
        return self.kind if self.kind != "sharded" else f"sharded:{self.location}"

    @model_validator(mode="after")
    def _location(self) -> DataSource:
        if (self.kind == "sharded") != (self.location is not None):
            raise ValueError("a sharded source needs a location; other kinds take none")
        return self


class DataSpec(_Strict):
    """The round's data: its sources (weights sum to 1), who may publish releases, their bounds."""

    sources: tuple[DataSource, ...] = (DataSource(kind="held_out", weight=1.0),)
    # until a publisher's first release exists: evaluate on the held-out split, or not at all
    fallback: Literal["held_out", "none"] = "held_out"
    # hotkeys whose commitments are releases: ss58 addresses, or "owner" (the subnet owner's)
    publishers: tuple[str, ...] = ("owner",)
    max_release_bytes: int = Field(default=16_000_000, ge=1, le=16_000_000)
    max_release_documents: int = Field(default=10_000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _weights(self) -> DataSpec:
        total = sum(s.weight for s in self.sources)
        if not self.sources or abs(total - 1.0) > 1e-9:
            raise ValueError(f"data source weights sum to {total}, not 1")
        if len({s.kind for s in self.sources if s.kind != "sharded"}) < len(
            [s for s in self.sources if s.kind != "sharded"]
        ):
            raise ValueError("a release or held_out source is listed twice")
        return self

    def uses(self, kind: str) -> bool:
        return any(s.kind == kind for s in self.sources)


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
    data: DataSpec = DataSpec()

    @property
    def key(self) -> str:
        """``id@version``: what a commitment names."""
        return f"{self.id}@{self.version}"

    def canonical_json(self) -> bytes:
        data = self.model_dump(mode="json")
        if self.data == DataSpec():  # specs from before data sources keep their hash
            data.pop("data")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read competition spec {path}: {exc}") from exc


def load_spec(path: Path, data: dict | None = None) -> CompetitionSpec:
    data = _read_toml(path) if data is None else data
    try:
        # through JSON so strict mode takes TOML arrays for tuples (TOML has no tuple type)
        return CompetitionSpec.model_validate_json(json.dumps(data))
    except (TypeError, ValidationError) as exc:  # TypeError: a TOML date, which no field takes
        raise ConfigError(f"competition spec {path} is invalid: {exc}") from exc


def load_competitions(directory: Path) -> dict[str, CompetitionSpec]:
    """Every model-competition ``*.toml`` in ``directory`` by id. ``kind = "collab"`` specs are
    read by ``protocol.collab.load_collab_specs``; the active reward shares of both kinds
    together must sum to 1."""
    from crucible.protocol.collab import is_collab_toml, load_collab_spec

    by_id: dict[str, CompetitionSpec] = {}
    total, ids = 0.0, set()
    for path in sorted(Path(directory).glob("*.toml")):
        data = _read_toml(path)
        spec = load_collab_spec(path, data) if is_collab_toml(data) else load_spec(path, data)
        if spec.id in ids:
            raise ConfigError(f"two specs define competition {spec.id!r}")
        ids.add(spec.id)
        total += spec.reward_share if spec.active else 0.0
        if isinstance(spec, CompetitionSpec):
            by_id[spec.id] = spec
    if ids and abs(total - 1.0) > 1e-9:
        raise ConfigError(f"reward shares of active competitions sum to {total}, not 1")
    return by_id
