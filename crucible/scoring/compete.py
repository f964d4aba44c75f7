"""Win rates → weights: the pure competition math of one round (no chain, no disk, no clock).

For one competition and the models evaluated on the same samples:

1. **Time priority.** In every pair, the model committed earlier gets an advantage: its per-sample
   losses count as ``(1 − ε(age)) × loss``, where ``age`` is how many blocks ago it committed and
   ε decays linearly from the spec's ``start`` to its ``floor`` over ``decay_blocks``.
2. **Significance.** The later model beats the earlier one only if its mean loss is below the
   earlier one's adjusted mean **and** a one-sided sign test says it is better on significantly more
   than half of the samples (p < ``significance_level``). A sign test is exact, needs no
   distributional assumption and cannot be swung by a few outlier samples, so a challenger that
   wins only by noise keeps losing to the incumbent. Ties in the sign test count as losses for the
   challenger.
3. **Competitive set.** A model that cannot beat every earlier model even at the floor ε is not
   competitive: exact copies and "spoilers" never enter it and earn nothing.
4. **Win rates** over the competitive set (the fraction of the other competitive models a model
   beats), **softmax** with the spec's temperature, then per-competition **EMA**, then a merge by
   reward share. A uid that failed the serving probe loses the competition's serving share of its
   weight, and that share goes to the burn uid (the subnet owner's), so renormalising the weight
   vector cannot hand it back (a lone liar keeps 1 − serving_share, not 1.0).
5. **Held uids.** A uid the validator could not evaluate through no fault of its own (the store
   was unreachable, the validator ran out of memory) keeps its EMA unchanged this round instead
   of decaying: a validator-side failure never lowers a miner's score.

Everything a score bundle needs (ε per pair, wins, the competitive set, win rates, EMA before and
after) is returned in ``RoundScores``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Contender",
    "EpsilonSchedule",
    "PairResult",
    "RoundScores",
    "beats",
    "merge_competitions",
    "score_round",
    "sign_test_p",
]


@dataclass(frozen=True)
class EpsilonSchedule:
    start: float
    floor: float
    decay_blocks: int

    def epsilon(self, age_blocks: int) -> float:
        if age_blocks <= 0:
            return self.start
        progress = min(1.0, age_blocks / self.decay_blocks)
        return self.start - (self.start - self.floor) * progress


@dataclass(frozen=True)
class Contender:
    uid: int
    commit_block: int
    losses: Sequence[float]


@dataclass(frozen=True)
class PairResult:
    earlier: int
    later: int
    epsilon: float
    later_wins: bool
    p_value: float
    earlier_adjusted_mean: float
    later_mean: float


@dataclass(frozen=True)
class RoundScores:
    competitive: list[int]
    not_competitive: dict[int, str]
    pairs: list[PairResult]
    win_rates: dict[int, float]
    softmax: dict[int, float]
    ema_before: dict[int, float]
    ema_after: dict[int, float]
    extra: dict[str, float] = field(default_factory=dict)


def sign_test_p(wins: int, trials: int) -> float:
    """P(X ≥ wins) for X ~ Binomial(trials, ½): the one-sided sign test's p-value."""
    if trials == 0:
        return 1.0
    return sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2**trials


def _earlier_first(a: Contender, b: Contender) -> tuple[Contender, Contender]:
    return (a, b) if (a.commit_block, a.uid) <= (b.commit_block, b.uid) else (b, a)


def beats(
    later: Contender, earlier: Contender, epsilon: float, significance_level: float
) -> tuple[bool, float, float, float]:
    """Does ``later`` beat ``earlier`` whose losses get ``(1 − ε)``? Returns (wins, p, adj, mean)."""
    adjusted = [(1.0 - epsilon) * x for x in earlier.losses]
    later_mean = _mean(later.losses)
    adjusted_mean = _mean(adjusted)
    better = sum(1 for mine, theirs in zip(later.losses, adjusted, strict=True) if mine < theirs)
    p_value = sign_test_p(better, len(adjusted))
    return (
        later_mean < adjusted_mean and p_value < significance_level,
        p_value,
        adjusted_mean,
        later_mean,
    )


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.inf


def _softmax(values: Mapping[int, float], temperature: float) -> dict[int, float]:
    if not values:
        return {}
    top = max(values.values())
    exps = {uid: math.exp((v - top) / temperature) for uid, v in sorted(values.items())}
    total = math.fsum(exps.values())
    return {uid: e / total for uid, e in exps.items()}


def score_round(
    contenders: Sequence[Contender],
    *,
    block: int,
    epsilon: EpsilonSchedule,
    significance_level: float,
    temperature: float,
    ema_alpha: float,
    ema_before: Mapping[int, float],
    held: Collection[int] = (),
) -> RoundScores:
    """``held``: uids not evaluated for a validator-side reason; their EMA is carried over."""
    by_uid = {c.uid: c for c in contenders}
    if set(held) & set(by_uid):
        raise ValueError("a held uid cannot also be a contender")
    if len(by_uid) != len(contenders):
        raise ValueError("a uid appears twice among the contenders")
    lengths = {len(c.losses) for c in contenders}
    if len(lengths) > 1:
        raise ValueError("every contender must be scored on the same samples")
    ordered = sorted(contenders, key=lambda c: (c.commit_block, c.uid))

    not_competitive: dict[int, str] = {}
    for i, model in enumerate(ordered):
        if not all(math.isfinite(x) for x in model.losses):
            not_competitive[model.uid] = "evaluation failed"
            continue
        for earlier in ordered[:i]:
            if (
                earlier.uid in not_competitive
                and not_competitive[earlier.uid] == "evaluation failed"
            ):
                continue
            wins, p_value, _, _ = beats(model, earlier, epsilon.floor, significance_level)
            if not wins:
                not_competitive[model.uid] = (
                    f"does not beat uid {earlier.uid} (committed earlier) even at the floor "
                    f"ε={epsilon.floor} (sign test p={p_value:.3g})"
                )
                break
    competitive = [c.uid for c in ordered if c.uid not in not_competitive]

    pairs: list[PairResult] = []
    wins = {uid: 0 for uid in competitive}
    for i, a_uid in enumerate(competitive):
        for b_uid in competitive[i + 1 :]:
            earlier, later = _earlier_first(by_uid[a_uid], by_uid[b_uid])
            eps = epsilon.epsilon(block - earlier.commit_block)
            later_wins, p_value, adjusted_mean, later_mean = beats(
                later, earlier, eps, significance_level
            )
            pairs.append(
                PairResult(
                    earlier.uid, later.uid, eps, later_wins, p_value, adjusted_mean, later_mean
                )
            )
            wins[later.uid if later_wins else earlier.uid] += 1
    opponents = max(1, len(competitive) - 1)
    win_rates = (
        {uid: wins[uid] / opponents for uid in competitive}
        if len(competitive) > 1
        else {uid: 1.0 for uid in competitive}
    )
    soft = _softmax(win_rates, temperature)
    uids = sorted(set(by_uid) | set(ema_before))
    kept = set(held)
    ema_after = {
        uid: ema_before.get(uid, 0.0)
        if uid in kept
        else ema_alpha * soft.get(uid, 0.0) + (1.0 - ema_alpha) * ema_before.get(uid, 0.0)
        for uid in uids
    }
    return RoundScores(
        competitive=competitive,
        not_competitive=not_competitive,
        pairs=pairs,
        win_rates=win_rates,
        softmax=soft,
        ema_before={uid: ema_before.get(uid, 0.0) for uid in uids},
        ema_after=ema_after,
    )


def merge_competitions(
    emas: Mapping[str, Mapping[int, float]],
    reward_shares: Mapping[str, float],
    serving_shares: Mapping[str, float],
    serving_failed: Mapping[str, set[int]],
    burn_uid: int | None = None,
) -> dict[int, float]:
    """Per-competition EMA scores → one weight vector over uids (sums to 1, or empty).

    The serving share withheld from a uid that failed the probe goes to ``burn_uid`` (the subnet
    owner's uid: emission to it is burned); without one it is spread over the others by
    renormalisation, and a lone failing uid keeps its weight (nobody else to give it to)."""
    weights: dict[int, float] = {}
    for competition, ema in sorted(emas.items()):
        total = math.fsum(ema.values())
        if total <= 0:
            continue
        failed = serving_failed.get(competition, set())
        reward = reward_shares.get(competition, 0.0)
        for uid, value in ema.items():
            share = value / total
            if uid in failed:
                withheld = share * serving_shares.get(competition, 0.0)
                share -= withheld
                if burn_uid is not None and withheld > 0:
                    weights[burn_uid] = weights.get(burn_uid, 0.0) + reward * withheld
            weights[uid] = weights.get(uid, 0.0) + reward * share
    total = math.fsum(weights.values())
    if total <= 0 or not math.isfinite(total):
        return {}
    return {uid: w / total for uid, w in sorted(weights.items()) if w > 0}
