"""One collab round, as pure computation: the data it is scored on, every payload's measured
effect, the verdicts, and the next checkpoint.

The validator (``validator.collab``) fetches and decodes; the bench, ``crucible verify`` and the
tests call these very functions with in-memory payloads. Everything a number depends on comes in
as an argument: the checkpoint, the decoded payloads, the token streams and the two block hashes
(the round's first block draws assignments, a block after the deadline draws the scoring data),
so two validators given the same inputs compute the same verdicts and the same next checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from crucible.collab.aggregate import AggregateResult, aggregate_round, tensors_digest
from crucible.collab.assignment import assignment, random_windows, windows_batch
from crucible.collab.codec import Compressed, decompress, index_overlap
from crucible.collab.judge import Judged, judge_round
from crucible.collab.measure import window_losses, window_losses_with_delta
from crucible.collab.rating import Measured, improvement
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
    own: dict[int, torch.Tensor]  # uid → windows of its own assignment
    control: dict[int, torch.Tensor]  # uid → each own window's unassigned neighbour, row by row


def assigned_windows(
    spec: CollabSpec, hotkey: str, round_index: int, block_hash: str, stream_tokens: int
) -> np.ndarray:
    """The window starts a hotkey trains on in a round: what the miner and the validator use."""
    return assignment(
        hotkey, round_index, block_hash, windows=spec.inner_steps * spec.batch_size,
        stream_tokens=stream_tokens, sequence_length=spec.model.sequence_length,
    )  # fmt: skip


def _picked(starts: np.ndarray, count: int, seed: str) -> np.ndarray:
    """``count`` of ``starts``, chosen by sha256 ranks (no numpy sampling routine: the same
    choice on every numpy version)."""
    rank = [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(len(starts))]
    return np.sort(starts[sorted(range(len(starts)), key=rank.__getitem__)[:count]])


def _free(start: int, taken: np.ndarray, length: int, stream: int) -> bool:
    """A window at ``start`` lies in the stream and overlaps no assigned window."""
    if start < 0 or start + length > stream:
        return False
    i = int(np.searchsorted(taken, start))
    near = taken[max(0, i - 1) : i + 1]
    return not np.any(np.abs(near - start) < length)


def _pairs(own: np.ndarray, taken: np.ndarray, length: int, stream: int) -> tuple[list, list]:
    """(own starts, control starts): each own window with the unassigned window right after
    it (or right before): the same document, nearly the same text statistics, never trained."""
    mine, controls = [], []
    for start in own.tolist():
        for control in (start + length, start - length):
            if _free(control, taken, length, stream):
                mine.append(start)
                controls.append(control)
                break
    return mine, controls


def draw_round_data(
    spec: CollabSpec,
    train_tokens: np.ndarray,
    eval_tokens: np.ndarray,
    hotkeys: Mapping[int, str],
    round_index: int,
    assign_hash: str,
    data_hash: str,
) -> RoundData:
    """The round's scoring windows, all drawn from ``data_hash`` (a block after the deadline)."""
    length, s = spec.model.sequence_length, spec.scoring
    assigned = {
        uid: assigned_windows(spec, hk, round_index, assign_hash, len(train_tokens))
        for uid, hk in sorted(hotkeys.items())
    }
    taken = np.sort(np.concatenate([*assigned.values(), np.zeros(0, dtype=np.int64)]))
    own, control = {}, {}
    for uid, starts in assigned.items():
        picked = _picked(starts, s.proof_windows, f"{data_hash}:{hotkeys[uid]}")
        mine, controls = _pairs(picked, taken, length, len(train_tokens))
        own[uid] = windows_batch(train_tokens, np.asarray(mine, dtype=np.int64), length)
        control[uid] = windows_batch(train_tokens, np.asarray(controls, dtype=np.int64), length)
    held = random_windows(f"{data_hash}:held-out", s.eval_windows, len(eval_tokens), length,
                          np.zeros(0, dtype=np.int64))  # fmt: skip
    return RoundData(windows_batch(eval_tokens, held, length), own, control)


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


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.inf


def _gains(before: list[float], after: list[float]) -> tuple[float, ...]:
    return tuple(improvement(b, a) for b, a in zip(before, after, strict=True))


def _measure(
    spec: CollabSpec, model: torch.nn.Module, sub: Submission, delta, data: RoundData, before: dict
) -> Measured:
    # one Δ alone is judged at a fraction of the outer step: in the aggregate it is one of
    # several mostly disjoint sparse updates, and at the full step a good Δ can overshoot
    lr = spec.outer_lr * spec.scoring.score_lr_factor
    held, own, rand = window_losses_with_delta(
        model, delta, lr, [data.held_out, data.own[sub.uid], data.control[sub.uid]], EVAL_BATCH
    )
    own_before, control_before = before["own"][sub.uid], before["control"][sub.uid]
    return Measured(
        uid=sub.uid, hotkey=sub.hotkey, commit_block=sub.commit_block, payload_hash=sub.payload_hash,
        held_out_before=_mean(before["held"]), held_out_after=_mean(held),
        own_before=_mean(own_before), own_after=_mean(own),
        random_before=_mean(control_before), random_after=_mean(rand),
        own_gains=_gains(own_before, own), random_gains=_gains(control_before, rand),
        held_gains=_gains(before["held"], held),
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
    with torch.no_grad():
        before = {
            "held": window_losses(model, data.held_out, EVAL_BATCH),
            "own": {u: window_losses(model, data.own[u], EVAL_BATCH) for u in accepted},
            "control": {u: window_losses(model, data.control[u], EVAL_BATCH) for u in accepted},
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
