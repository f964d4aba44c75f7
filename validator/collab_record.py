"""A collab round as a score bundle records it: everything its payments depend on, and the
recomputation an auditor runs on it (``rejudge``: the validator's own ``judge_round``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crucible.collab.judge import Judged, judge_round
from crucible.collab.rating import Measured
from crucible.protocol.collab import CollabScoring

__all__ = ["CollabRound", "MeasuredLosses", "rejudge", "rejudge_differences"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeasuredLosses(_Model):
    held_out_before: float
    held_out_after: float
    own_before: float
    own_after: float
    random_before: float
    random_after: float
    own_gains: list[float] = Field(default_factory=list)  # per window: the proof's inputs
    random_gains: list[float] = Field(default_factory=list)
    held_gains: list[float] = Field(default_factory=list)


class CollabRound(_Model):
    competition: str  # "collab@2"
    spec_hash: str
    round_index: int
    window: tuple[int, int]  # first block, deadline
    assign_block_hash: str  # the round's first block: draws every miner's assignment
    data_block: int  # after the deadline: its hash draws the scoring windows
    data_block_hash: str
    base_checkpoint: str  # the checkpoint this round trained from
    next_checkpoint: str  # the aggregate's checkpoint id (store content hash)
    next_digest: str  # sha256 over its parameters (crucible.collab.aggregate.tensors_digest)
    pointer_id: str | None = None  # the signed checkpoint pointer, when this is the aggregator
    aggregator_checkpoint: str | None = None  # else: what the aggregator's pointer named, if out
    hotkeys: dict[int, str]
    commitments: dict[int, str]
    commit_blocks: dict[int, int]
    payload_bytes: dict[int, int] = Field(default_factory=dict)
    measured: dict[int, MeasuredLosses]
    rejected: dict[int, str]
    held: dict[int, str] = Field(default_factory=dict)  # validator-side: rating kept
    overlaps: list[tuple[int, int, float]]  # every pair of accepted payloads
    replayed: dict[int, str]
    scoring: CollabScoring
    outer_lr: float
    outer_momentum: float
    nesterov: bool
    clip_norms: dict[int, float]
    clip_median: float
    ratings_before: dict[int, float]
    scores: dict[int, float]
    verdicts: dict[int, str]
    selected: list[int]
    ratings_after: dict[int, float]
    weights: dict[int, float]
    reward_share: float


_GAINS = ("own_gains", "random_gains", "held_gains")


def _measured(r: CollabRound) -> dict[int, Measured]:
    out = {}
    for uid, m in sorted(r.measured.items()):
        values = m.model_dump()
        values.update({k: tuple(values[k]) for k in _GAINS})
        out[uid] = Measured(uid=uid, hotkey=r.hotkeys.get(uid, ""),
                            commit_block=r.commit_blocks.get(uid, 0), payload_hash="", **values)  # fmt: skip
    return out


def rejudge(r: CollabRound) -> Judged:
    """The round's judgement recomputed from the numbers the bundle records."""
    overlaps = {(a, b): v for a, b, v in r.overlaps}
    return judge_round(
        r.scoring, _measured(r), r.rejected, overlaps, r.replayed, r.ratings_before, r.held
    )


def rejudge_differences(r: CollabRound) -> list[str]:
    got = rejudge(r)
    out = []
    for name in ("scores", "verdicts", "selected", "ratings_after", "weights"):
        if getattr(got, name) != getattr(r, name):
            out.append(
                f"{r.competition}.{name}: bundle {getattr(r, name)} != recomputed {getattr(got, name)}"
            )
    return out
