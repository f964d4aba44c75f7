"""What a validator holds: its configuration and what it loads once (specs, tokenizers, pools,
verified models), shared by the round's steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from transformers import PreTrainedTokenizerBase

from crucible.chain.interface import Chain, Signer
from crucible.models.fetch import FetchedModel
from crucible.observe.metrics import ValidatorMetrics
from crucible.protocol.competition import CompetitionSpec
from crucible.scoring.releases import ReleaseLoader
from crucible.scoring.sampling import EvalPool
from crucible.scoring.sources import ShardedPools
from crucible.store.base import ModelStore
from crucible.store.documents import DocumentStore

__all__ = ["ValidatorConfig", "ValidatorRuntime"]


@dataclass(frozen=True)
class ValidatorConfig:
    netuid: int
    work_dir: Path
    device: str = "cpu"
    max_cache_bytes: int = 20 * 1024**3
    memory_budget_bytes: int = 8 * 1024**3  # weights + one batch's logits, per model
    probe_timeout_s: float = 10.0
    set_weights: bool = True
    progress: bool = False

    @property
    def cache_dir(self) -> Path:
        return self.work_dir / "models"

    @property
    def bundles_dir(self) -> Path:
        return self.work_dir / "bundles"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.json"


@dataclass
class ValidatorRuntime:
    """What a validator holds between rounds (loaded once): specs, tokenizers, pools, models."""

    chain: Chain
    keypair: Signer
    config: ValidatorConfig
    competitions: dict[str, CompetitionSpec]
    tokenizers: dict[str, PreTrainedTokenizerBase]
    pools: dict[str, EvalPool]
    resolve_store: Callable[[str], ModelStore]
    documents: DocumentStore | None = None  # where signed bundles are published
    releases: dict[str, ReleaseLoader] = field(default_factory=dict)  # per competition id
    sharded: dict[str, ShardedPools] = field(default_factory=dict)  # per competition id
    loaded: dict[str, FetchedModel] = field(default_factory=dict)  # by content hash
    # collaborative-training competitions (validator.collab.CollabRuntime), by id
    collab: dict[str, Any] = field(default_factory=dict)
    # this validator's own registry (served at /metrics next to its bundles)
    metrics: ValidatorMetrics = field(default_factory=lambda: ValidatorMetrics(CollectorRegistry()))
