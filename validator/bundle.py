"""Score bundles: everything needed to recompute a round's weights, content-addressed.

A bundle is canonical JSON named by its sha256, so anyone can check it was not altered and rerun
``recompute`` (the same ``score_round``/``merge_competitions`` the validator ran) to get the same
weights bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from crucible.scoring.compete import Contender, EpsilonSchedule, merge_competitions, score_round
from crucible.store.atomic import write_atomic

__all__ = [
    "BUNDLE_SCHEMA",
    "Bundle",
    "CompetitionRound",
    "RecomputeReport",
    "load_bundle",
    "recompute",
    "write_bundle",
]

BUNDLE_SCHEMA = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompetitionRound(_Model):
    competition: str
    spec_hash: str
    round_block: int
    block_hash: str
    seed: int
    sample_ids: list[str]
    epsilon_start: float
    epsilon_floor: float
    epsilon_decay_blocks: int
    significance_level: float
    softmax_temperature: float
    ema_alpha: float
    reward_share: float
    serving_share: float
    commit_blocks: dict[int, int]
    model_hashes: dict[int, str]
    losses: dict[int, list[float]]
    eval_errors: dict[int, str] = Field(default_factory=dict)
    competitive: list[int]
    not_competitive: dict[int, str]
    pairs: list[dict]
    win_rates: dict[int, float]
    softmax: dict[int, float]
    ema_before: dict[int, float]
    ema_after: dict[int, float]
    serving_failed: dict[int, str] = Field(default_factory=dict)


class Bundle(_Model):
    schema_version: int = BUNDLE_SCHEMA
    code_version: str
    validator_hotkey: str
    netuid: int
    block: int
    rounds: list[CompetitionRound]
    rejections: dict[int, str]
    weights: dict[int, float]
    weights_u16: dict[int, int]

    def canonical(self) -> bytes:
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()

    @property
    def bundle_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def write_bundle(bundle: Bundle, directory: Path) -> Path:
    return write_atomic(Path(directory) / f"{bundle.bundle_id}.json", bundle.canonical())


class TamperedBundle(ValueError):
    pass


def load_bundle(path: Path) -> Bundle:
    path = Path(path)
    raw = path.read_bytes()
    bundle = Bundle.model_validate_json(raw)
    digest = hashlib.sha256(bundle.canonical()).hexdigest()
    if hashlib.sha256(raw).hexdigest() != digest or path.stem != digest:
        raise TamperedBundle(f"{path.name} does not hash to its name: the bundle was altered")
    return bundle


class RecomputeReport(BaseModel):
    identical: bool
    differences: list[str]
    weights: dict[int, float]


def recompute(bundle: Bundle) -> RecomputeReport:
    differences: list[str] = []
    emas: dict[str, dict[int, float]] = {}
    shares, serving, failed = {}, {}, {}
    for r in bundle.rounds:
        contenders = [
            Contender(uid, r.commit_blocks[uid], r.losses[uid]) for uid in sorted(r.losses)
        ]
        scores = score_round(
            contenders,
            block=r.round_block,
            epsilon=EpsilonSchedule(r.epsilon_start, r.epsilon_floor, r.epsilon_decay_blocks),
            significance_level=r.significance_level,
            temperature=r.softmax_temperature,
            ema_alpha=r.ema_alpha,
            ema_before=r.ema_before,
        )
        for name in ("competitive", "win_rates", "softmax", "ema_after", "not_competitive"):
            if getattr(scores, name) != getattr(r, name):
                differences.append(
                    f"{r.competition}.{name}: bundle {getattr(r, name)} != recomputed {getattr(scores, name)}"
                )
        emas[r.competition] = scores.ema_after
        shares[r.competition], serving[r.competition] = r.reward_share, r.serving_share
        failed[r.competition] = set(r.serving_failed)
    weights = merge_competitions(emas, shares, serving, failed)
    if weights != bundle.weights:
        differences.append(f"weights: bundle {bundle.weights} != recomputed {weights}")
    return RecomputeReport(identical=not differences, differences=differences, weights=weights)
