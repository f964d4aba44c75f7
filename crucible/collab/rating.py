"""What each uid's payload earned this round, and how rounds add up to weights.

Pure python floats, no tensors: the validator measures losses (``crucible.collab.measure``),
this module turns them into a score and a short verdict per uid, an EMA rating across rounds and
the weights a collab competition sets. A uid's score depends only on its own measurements and
status, except through the copy rule (a later payload that repeats an earlier one's top-k indices
earns nothing); so whatever one uid sends can only lower its own score.

Verdict strings go into public score bundles: they are short, fixed phrases (plus a uid where
the rule names one), never measured numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from crucible.protocol.errors import ConfigError

__all__ = [
    "VERDICT_NO_GAIN",
    "VERDICT_NO_PAYLOAD",
    "VERDICT_OK",
    "VERDICT_NOT_SIGNIFICANT",
    "VERDICT_PROOF_FAILED",
    "Measured",
    "RoundVerdicts",
    "collab_weights",
    "improvement",
    "proof_statistic",
    "round_scores",
    "select_contributors",
    "update_ratings",
]

VERDICT_OK = "ok"
VERDICT_NO_GAIN = "no held-out improvement"
VERDICT_PROOF_FAILED = "proof of own data failed"
VERDICT_NOT_SIGNIFICANT = "held-out gain not significant"
VERDICT_NO_PAYLOAD = "no payload"
_MAX_REASON = 120  # a rejection reason is trimmed so a bundle entry stays short


@dataclass(frozen=True)
class Measured:
    """What the validator measured for one uid's payload this round (mean losses in nats)."""

    uid: int
    hotkey: str
    commit_block: int
    payload_hash: str
    held_out_before: float  # on held-out windows drawn after the deadline
    held_out_after: float
    own_before: float  # on windows of the uid's own assignment
    own_after: float
    random_before: float  # on the control windows: each own window's unassigned neighbour
    random_after: float
    # per-window relative improvements, own[i] paired with control[i] (empty: compare means)
    own_gains: tuple[float, ...] = ()
    random_gains: tuple[float, ...] = ()
    held_gains: tuple[float, ...] = ()  # per held-out window (empty: no significance test)


@dataclass(frozen=True)
class RoundVerdicts:
    """Every uid that sent something or was expected: its score (finite, ≥ 0) and why."""

    scores: dict[int, float]
    verdicts: dict[int, str]


def improvement(before: float, after: float) -> float:
    """Relative loss improvement (before − after) / before; 0.0 when it is undefined (a
    non-finite loss, or ``before`` ≤ 0), never NaN."""
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 0:
        return 0.0
    value = (before - after) / before
    return value if math.isfinite(value) else 0.0


def _by_uid(measured: Mapping[int, Measured] | Iterable[Measured]) -> dict[int, Measured]:
    items = measured.values() if isinstance(measured, Mapping) else measured
    out: dict[int, Measured] = {}
    for m in items:
        if m.uid in out:
            raise ValueError(f"uid {m.uid} measured twice in one round")
        out[m.uid] = m
    if isinstance(measured, Mapping) and any(k != m.uid for k, m in measured.items()):
        raise ValueError("measured maps a uid to another uid's measurement")
    return out


def _copy_verdicts(
    measured: Mapping[int, Measured], overlaps: Mapping[tuple[int, int], float], threshold: float
) -> dict[int, str]:
    """uid → verdict for every uid that repeats another's indices and did not commit first.

    The earlier commit keeps its score; at the same block neither can claim to be the original,
    so both lose. A uid copying several names the earliest (then lowest) original."""
    originals: dict[int, list[tuple[int, int]]] = {}  # uid → [(block, uid)] committed earlier
    ties: dict[int, list[int]] = {}
    for (a, b), overlap in sorted(overlaps.items()):
        if a == b or a not in measured or b not in measured or not overlap >= threshold:
            continue
        block_a, block_b = measured[a].commit_block, measured[b].commit_block
        if block_a == block_b:
            ties.setdefault(a, []).append(b)
            ties.setdefault(b, []).append(a)
        else:
            later, earlier = (a, b) if block_a > block_b else (b, a)
            originals.setdefault(later, []).append((measured[earlier].commit_block, earlier))
    out = {uid: f"copy of uid {min(found)[1]}" for uid, found in originals.items()}
    for uid, partners in ties.items():
        out.setdefault(uid, f"copy tie with uid {min(partners)}")
    return out


def proof_statistic(own: Sequence[float], control: Sequence[float]) -> float:
    """The paired t of per-window gains: own window i against its control window i (the
    unassigned text right next to it). How many standard errors its own windows gained more
    than their neighbours; 0.0 when it cannot be computed (unpaired, too few, non-finite)."""
    n = len(own)
    if n < 2 or len(control) != n or not all(math.isfinite(g) for g in (*own, *control)):
        return 0.0
    diffs = [a - b for a, b in zip(own, control, strict=True)]
    mean = math.fsum(diffs) / n
    error = math.fsum((d - mean) ** 2 for d in diffs) / (n - 1) / n
    if not error > 0:
        return math.inf if mean > 0 else 0.0
    value = mean / math.sqrt(error)
    return value if math.isfinite(value) else 0.0


def _proof_holds(m: Measured, proof_z: float | None) -> bool:
    """Its Δ helps its own assignment more than the text next to it: it trained on it. With
    per-window gains and ``proof_z``, by that many standard errors of the paired difference
    (a miner that trained on other data passes by luck once in ~20 rounds at 1.645)."""
    if proof_z is not None and m.own_gains and m.random_gains:
        return proof_statistic(m.own_gains, m.random_gains) > proof_z
    return improvement(m.own_before, m.own_after) > improvement(m.random_before, m.random_after)


def _measured_verdict(
    m: Measured, proof_z: float | None = None, gain_z: float | None = None
) -> tuple[float, str]:
    if not _proof_holds(m, proof_z):
        return 0.0, VERDICT_PROOF_FAILED
    score = max(0.0, improvement(m.held_out_before, m.held_out_after))
    if score > 0 and gain_z is not None and m.held_gains:
        # a random Δ moves held-out windows up and down at random: its mean gain is not
        # ``gain_z`` standard errors above zero, an honest one's is, window after window
        if proof_statistic(m.held_gains, [0.0] * len(m.held_gains)) <= gain_z:
            return 0.0, VERDICT_NOT_SIGNIFICANT
    return score, (VERDICT_OK if score > 0 else VERDICT_NO_GAIN)


def round_scores(
    measured: Mapping[int, Measured] | Iterable[Measured],
    rejected: Mapping[int, str],
    overlaps: Mapping[tuple[int, int], float],
    replayed: Mapping[int, str],
    threshold: float,
    *,
    expected: Iterable[int] = (),
    proof_z: float | None = None,
    gain_z: float | None = None,
) -> RoundVerdicts:
    """Score every uid; the first rule that applies decides: rejected → 0; replayed (a payload
    seen in an earlier round) → 0; copy (overlap ≥ threshold with an earlier or same-block
    commit) → 0; proof of own data fails (own improvement ≤ random) → 0; else the held-out
    improvement, floored at 0. ``expected`` uids that sent nothing get 0, "no payload"."""
    if not (math.isfinite(threshold) and 0 < threshold <= 1):
        raise ConfigError(f"overlap threshold must be in (0, 1], got {threshold!r}")
    by_uid = _by_uid(measured)
    eligible = {u: m for u, m in by_uid.items() if u not in rejected and u not in replayed}
    copies = _copy_verdicts(eligible, overlaps, threshold)
    scores: dict[int, float] = {}
    verdicts: dict[int, str] = {}
    for uid in sorted(set(by_uid) | set(rejected) | set(replayed) | set(expected)):
        score, verdict = 0.0, VERDICT_NO_PAYLOAD
        if uid in rejected:
            verdict = f"rejected: {str(rejected[uid])[:_MAX_REASON]}"
        elif uid in replayed:
            verdict = f"replayed: {str(replayed[uid])[:_MAX_REASON]}"
        elif uid in copies:
            verdict = copies[uid]
        elif uid in by_uid:
            score, verdict = _measured_verdict(by_uid[uid], proof_z, gain_z)
        scores[uid], verdicts[uid] = score, verdict
    return RoundVerdicts(scores, verdicts)


def _clean(value: float) -> float:
    """A rating or score as a usable number: anything non-finite or negative counts as 0."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0


def update_ratings(
    before: Mapping[int, float], scores: Mapping[int, float], alpha: float
) -> dict[int, float]:
    """EMA: rating ← (1 − α)·rating + α·score. A uid rated before that scores nothing this
    round gets 0 for it (absent = free riding) and decays; a new uid starts from 0."""
    if not (math.isfinite(alpha) and 0 < alpha <= 1):
        raise ConfigError(f"rating EMA alpha must be in (0, 1], got {alpha!r}")
    out: dict[int, float] = {}
    for uid in sorted(set(before) | set(scores)):
        old, now = _clean(before.get(uid, 0.0)), _clean(scores.get(uid, 0.0))
        out[uid] = float((1.0 - alpha) * old + alpha * now)
    return out


def collab_weights(ratings: Mapping[int, float], min_fraction: float) -> dict[int, float]:
    """Ratings below ``min_fraction`` × the best earn 0; the rest are normalised to sum to 1.
    Every rated uid gets an entry; the result is empty when no rating is positive."""
    if not (math.isfinite(min_fraction) and 0 <= min_fraction < 1):
        raise ConfigError(f"min rating fraction must be in [0, 1), got {min_fraction!r}")
    clean = {uid: _clean(ratings[uid]) for uid in sorted(ratings)}
    best = max(clean.values(), default=0.0)
    if best <= 0:
        return {}
    kept = {uid: (r if r > 0 and r >= min_fraction * best else 0.0) for uid, r in clean.items()}
    total = math.fsum(kept.values())
    return {uid: r / total for uid, r in kept.items()}


def select_contributors(scores: Mapping[int, float], max_contributors: int) -> list[int]:
    """The uids whose payloads go into the aggregate: best positive scores first, ties by the
    lower uid, at most ``max_contributors``."""
    if max_contributors < 0:
        raise ConfigError(f"max contributors must be ≥ 0, got {max_contributors!r}")
    positive = [(-_clean(s), uid) for uid, s in scores.items() if _clean(s) > 0]
    return [uid for _, uid in sorted(positive)[:max_contributors]]
