"""One collab round, as pure computation: the data it is scored on, every payload's measured
effect, the verdicts, and the next checkpoint.

The validator (``validator.collab``) fetches and decodes; the bench, ``crucible verify`` and the
tests call these very functions with in-memory payloads. Everything a number depends on comes in
as an argument: the checkpoint, the decoded payloads, the token streams and the two block hashes
(the round's first block draws assignments, a block after the deadline draws the scoring data),
so two validators given the same inputs compute the same verdicts and the same next checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from crucible.collab.aggregate import AggregateResult, aggregate_round, tensors_digest
from crucible.collab.assignment import assignment, random_windows, windows_batch
from crucible.collab.codec import Compressed, decompress, index_overlap
from crucible.collab.judge import Judged, judge_round
from crucible.collab.measure import loss_with_delta, mean_loss
from crucible.collab.rating import Measured
from crucible.protocol.collab import CollabSpec

__all__ = [
    "RoundData",
    "RoundResult",
    "Submission",
    "assigned_windows",
    "draw_round_data",
    "score_payloads",
]

EVAL_BATCH = 16


@dataclass(frozen=True)
class Submission:
    """One uid's entry for a round: a decoded payload, or why it has none."""

    uid: int
    hotkey: str
    commit_block: int
    payload_hash: str
    compressed: Compressed | None = None
    rejected: str | None = None
    payload_bytes: int = 0


@dataclass(frozen=True)
class RoundData:
    held_out: torch.Tensor  # [n, L] windows of the held-out split
    random: torch.Tensor  # training windows nobody was assigned this round
    own: dict[int, torch.Tensor]  # uid → windows of its own assignment


def assigned_windows(
    spec: CollabSpec, hotkey: str, round_index: int, block_hash: str, stream_tokens: int
) -> np.ndarray:
    """The window starts a hotkey trains on in a round: what the miner and the validator use."""
    return assignment(
        hotkey, round_index, block_hash, windows=spec.inner_steps * spec.batch_size,
        stream_tokens=stream_tokens, sequence_length=spec.model.sequence_length,
    )  # fmt: skip


def draw_round_data(
    spec: CollabSpec,
    train_tokens: np.ndarray,
    eval_tokens: np.ndarray,
    hotkeys: Mapping[int, str],
    round_index: int,
    assign_hash: str,
    data_hash: str,
) -> RoundData:
    length, s = spec.model.sequence_length, spec.scoring
    assigned = {
        uid: assigned_windows(spec, hk, round_index, assign_hash, len(train_tokens))
        for uid, hk in sorted(hotkeys.items())
    }
    rng = np.random.Generator(np.random.PCG64(int(data_hash.removeprefix("0x")[:16], 16)))
    own = {}
    for uid, starts in assigned.items():
        picked = np.sort(
            rng.choice(len(starts), size=min(s.proof_windows, len(starts)), replace=False)
        )
        own[uid] = windows_batch(train_tokens, starts[picked], length)
    everyone = np.concatenate(list(assigned.values())) if assigned else np.zeros(0, dtype=np.int64)
    rand = random_windows(
        f"{data_hash}:random", s.proof_windows, len(train_tokens), length, everyone
    )
    held = random_windows(
        f"{data_hash}:held-out",
        s.eval_windows,
        len(eval_tokens),
        length,
        np.zeros(0, dtype=np.int64),
    )
    return RoundData(
        held_out=windows_batch(eval_tokens, held, length),
        random=windows_batch(train_tokens, rand, length),
        own=own,
    )


@dataclass(frozen=True)
class RoundResult:
    measured: dict[int, Measured]
    judged: Judged
    overlaps: dict[tuple[int, int], float]
    replayed: dict[int, str]
    rejected: dict[int, str]
    aggregate: AggregateResult
    next_digest: str


def _overlaps(accepted: Mapping[int, Compressed]) -> dict[tuple[int, int], float]:
    uids = sorted(accepted)
    return {
        (a, b): index_overlap(accepted[a], accepted[b])
        for i, a in enumerate(uids)
        for b in uids[i + 1 :]
    }


def _replays(
    accepted: Mapping[int, Submission], previous: Mapping[str, Compressed], threshold: float
) -> dict[int, str]:
    """A payload seen in an earlier round (the same bytes, or the same kept indices)."""
    out: dict[int, str] = {}
    for uid, sub in sorted(accepted.items()):
        if sub.payload_hash in previous:
            out[uid] = "replay of an earlier round's payload"
            continue
        for old_hash, old in sorted(previous.items()):
            if index_overlap(sub.compressed, old) >= threshold:
                out[uid] = f"replay: overlaps {old_hash[:12]}… from an earlier round"
                break
    return out


def _measure(
    spec: CollabSpec, model: torch.nn.Module, sub: Submission, delta, data: RoundData, before: dict
) -> Measured:
    # one Δ alone is judged at a fraction of the outer step: in the aggregate it is one of
    # several mostly disjoint sparse updates, and at the full step a good Δ can overshoot
    lr = spec.outer_lr * spec.scoring.score_lr_factor
    held, own, rand = loss_with_delta(
        model, delta, lr, [data.held_out, data.own[sub.uid], data.random]
    )
    return Measured(
        uid=sub.uid, hotkey=sub.hotkey, commit_block=sub.commit_block, payload_hash=sub.payload_hash,
        held_out_before=before["held"], held_out_after=held,
        own_before=before["own"][sub.uid], own_after=own,
        random_before=before["random"], random_after=rand,
    )  # fmt: skip


def score_payloads(
    spec: CollabSpec,
    model: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    momentum: Mapping[str, torch.Tensor] | None,
    submissions: Mapping[int, Submission],
    data: RoundData,
    previous: Mapping[str, Compressed],
    ratings_before: Mapping[int, float],
    held: Mapping[int, str],
) -> RoundResult:
    """Measure every accepted payload alone on ``model`` (holding ``params``), judge them all,
    and aggregate the best into the next checkpoint. ``previous``: earlier rounds' payloads by
    hash (replay detection); ``held``: uids the validator could not judge (rating kept)."""
    shapes = {name: tuple(t.shape) for name, t in params.items()}
    accepted = {u: s for u, s in sorted(submissions.items()) if s.compressed is not None}
    rejected = {
        u: s.rejected or "no payload" for u, s in submissions.items() if s.compressed is None
    }
    before = {
        "held": mean_loss(model, data.held_out, EVAL_BATCH),
        "random": mean_loss(model, data.random, EVAL_BATCH),
        "own": {u: mean_loss(model, data.own[u], EVAL_BATCH) for u in accepted},
    }
    deltas = {u: decompress(s.compressed, shapes, spec.codec) for u, s in accepted.items()}
    measured = {u: _measure(spec, model, s, deltas[u], data, before) for u, s in accepted.items()}
    overlaps = _overlaps({u: s.compressed for u, s in accepted.items()})
    replayed = _replays(accepted, previous, spec.scoring.overlap_threshold)
    judged = judge_round(spec.scoring, measured, rejected, overlaps, replayed, ratings_before, held)
    result = aggregate_round(
        params, momentum, {u: deltas[u] for u in judged.selected},
        lr=spec.outer_lr, momentum_factor=spec.outer_momentum, nesterov=spec.nesterov,
    )  # fmt: skip
    return RoundResult(
        measured=measured, judged=judged, overlaps=overlaps, replayed=replayed, rejected=rejected,
        aggregate=result, next_digest=tensors_digest(result.params),
    )  # fmt: skip
