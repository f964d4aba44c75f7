"""Validator state, saved atomically (temp file, fsync, rename) as JSON — never pickle.

Holds the EMA score per competition per uid (with the hotkey it belonged to, so a re-registered
uid starts from zero), the model index and rejections per uid, the last bundle and a pending
commit-reveal. ``SCHEMA_VERSION`` allows migrating old files instead of wiping them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crucible.store.atomic import write_atomic

__all__ = [
    "SCHEMA_VERSION",
    "CollabProgress",
    "ModelEntry",
    "PendingReveal",
    "RoundReport",
    "ValidatorState",
    "load_state",
    "save_state",
]

SCHEMA_VERSION = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Model):
    hotkey: str
    commitment: str
    commit_block: int
    status: str  # "ok" or a rejection reason code
    reason: str = ""
    content_hash: str | None = None
    path: str | None = None


class PendingReveal(_Model):
    uids: list[int]
    values: list[int]
    salt: list[int]
    version_key: int
    commit_block: int
    reveal_epoch: int | None = None  # the epoch the chain will accept the reveal in


class RoundReport(_Model):
    """What the last round did, for ``crucible-validator status``."""

    block: int
    set_weights: str
    published: str


class CollabProgress(_Model):
    """Where one collab competition stands for this validator."""

    checkpoint: str  # id (store content hash) of the checkpoint the next round trains from
    checkpoint_round: int  # the first round that trains from it
    last_scored: int | None = None
    ratings: dict[int, float] = Field(default_factory=dict)
    rating_hotkeys: dict[int, str] = Field(default_factory=dict)  # a new hotkey starts from 0
    recent_payloads: list[str] = Field(default_factory=list)  # last round's, for replays
    history: list[str] = Field(default_factory=list)  # checkpoint ids, oldest first


class ValidatorState(_Model):
    schema_version: int = SCHEMA_VERSION
    ema: dict[str, dict[int, float]] = Field(default_factory=dict)  # competition → uid → score
    ema_hotkeys: dict[int, str] = Field(default_factory=dict)
    models: dict[int, ModelEntry] = Field(default_factory=dict)
    last_bundle: str | None = None
    last_round_block: dict[str, int] = Field(default_factory=dict)
    serving_failed: dict[str, dict[int, str]] = Field(default_factory=dict)  # at that round
    last_weights_block: int = 0
    pending_reveal: PendingReveal | None = None
    pending_anchor: str | None = None  # newest published bundle not yet anchored on chain
    anchored_bundle: str | None = None  # the bundle id the chain's commitment names
    last_report: RoundReport | None = None
    collab: dict[str, CollabProgress] = Field(default_factory=dict)  # competition id → progress


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = raw.get("schema_version", 1)
    if version == 1:  # v1 kept one EMA vector for a single competition under "scores"
        raw = dict(raw)
        scores = raw.pop("scores", {})
        raw.pop("hotkeys", None)
        raw.update(ema={"tiny": scores}, schema_version=2)
    return raw


def load_state(path: Path) -> ValidatorState:
    if not Path(path).exists():
        return ValidatorState()
    raw = json.loads(Path(path).read_text())
    return ValidatorState.model_validate(_migrate(raw))


def save_state(state: ValidatorState, path: Path) -> None:
    write_atomic(Path(path), state.model_dump_json(indent=1).encode())
