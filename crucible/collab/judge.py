"""A round's judgement from what was measured: scores, verdicts, contributors, ratings, weights.

One function, run by the validator when it scores a round and by ``recompute`` (audit, verify)
on the numbers a bundle records, so a published bundle is checked by the very code that made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crucible.collab.rating import (
    Measured,
    collab_weights,
    round_scores,
    select_contributors,
    update_ratings,
)
from crucible.protocol.collab import CollabScoring

__all__ = ["Judged", "judge_round"]


@dataclass(frozen=True)
class Judged:
    scores: dict[int, float]
    verdicts: dict[int, str]
    selected: list[int]  # aggregated into the next checkpoint, best first
    ratings_after: dict[int, float]
    weights: dict[int, float]  # this competition's share of the weights, per uid (sum 1)


def _above_noise(
    scores: dict[int, float], verdicts: dict[int, str], fraction: float
) -> tuple[dict[int, float], dict[int, str]]:
    """A score under ``fraction`` × the round's best is what a random Δ gets by luck: 0.

    Cheap to send and sometimes a hair better than nothing, noise must earn nothing, or a
    free rider with many hotkeys would collect crumbs of every round."""
    best = max(scores.values(), default=0.0)
    out_scores, out_verdicts = dict(scores), dict(verdicts)
    for uid, score in scores.items():
        if 0 < score < fraction * best:
            out_scores[uid] = 0.0
            out_verdicts[uid] = f"below the noise floor ({score / best:.1%} of the round's best)"
    return out_scores, out_verdicts


def judge_round(
    scoring: CollabScoring,
    measured: Mapping[int, Measured],
    rejected: Mapping[int, str],
    overlaps: Mapping[tuple[int, int], float],
    replayed: Mapping[int, str],
    ratings_before: Mapping[int, float],
    held: Mapping[int, str],
) -> Judged:
    """``held`` uids (the validator could not judge them: its store was down) keep their
    rating untouched; every other rated uid that sent nothing scores 0 for the round."""
    verdicts = round_scores(
        measured,
        rejected,
        overlaps,
        replayed,
        scoring.overlap_threshold,
        proof_z=scoring.proof_z,
        gain_z=scoring.gain_z,
    )
    scores, said = _above_noise(
        {u: s for u, s in verdicts.scores.items() if u not in held},
        {u: v for u, v in verdicts.verdicts.items() if u not in held},
        scoring.min_score_fraction,
    )
    ratings = update_ratings(
        {u: r for u, r in ratings_before.items() if u not in held}, scores, scoring.ema_alpha
    )
    ratings.update({u: ratings_before[u] for u in held if u in ratings_before})
    return Judged(
        scores=scores,
        verdicts=said,
        selected=select_contributors(scores, scoring.max_contributors),
        ratings_after=dict(sorted(ratings.items())),
        weights=collab_weights(ratings, scoring.min_rating_fraction),
    )
