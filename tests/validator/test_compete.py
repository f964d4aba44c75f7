"""Competition math: worked examples computed by hand, and invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.scoring.compete import (
    Contender,
    EpsilonSchedule,
    beats,
    merge_competitions,
    score_round,
    sign_test_p,
)

EPS = EpsilonSchedule(start=0.01, floor=0.001, decay_blocks=1000)


def run(contenders, block=1000, temperature=0.5, alpha=0.5, before=None, held=()):
    return score_round(contenders, block=block, epsilon=EPS, significance_level=0.05, temperature=temperature,
                       ema_alpha=alpha, ema_before=before or {}, held=held)  # fmt: skip


def test_worked_example_better_challenger_and_a_copy() -> None:
    # A (uid 0, block 100) loses 2.0 per sample; B (uid 1, block 200) 1.9; C (uid 2, block 300) copies A.
    # ε for A at block 1000: age 900 → 0.01 − 0.009·0.9 = 0.0019; A's adjusted loss 2·(1−0.0019) = 1.9962.
    # B < 1.9962 on all 10 samples: sign test p = 1/1024 < 0.05 → B beats A.
    # Competitive set: C cannot beat A even at the floor (2.0 vs 2·0.999 = 1.998) → excluded.
    # Win rates A 0, B 1; softmax at T = 0.5: B = e²/(1+e²) = 0.8808, A = 0.1192; EMA α = 0.5 from 0.
    a, b, c = (
        Contender(0, 100, [2.0] * 10),
        Contender(1, 200, [1.9] * 10),
        Contender(2, 300, [2.0] * 10),
    )
    scores = run([a, b, c])
    assert scores.competitive == [0, 1] and 2 in scores.not_competitive
    (pair,) = scores.pairs
    assert pair.earlier == 0 and pair.later == 1 and pair.later_wins
    assert pair.epsilon == pytest.approx(0.0019) and pair.p_value == pytest.approx(1 / 1024)
    assert scores.win_rates == {0: 0.0, 1: 1.0}
    assert scores.softmax[1] == pytest.approx(0.8808, abs=1e-4) and scores.softmax[
        0
    ] == pytest.approx(0.1192, abs=1e-4)
    assert scores.ema_after == pytest.approx({0: 0.0596, 1: 0.4404, 2: 0.0}, abs=1e-4)
    weights = merge_competitions({"tiny": scores.ema_after}, {"tiny": 1.0}, {"tiny": 0.1}, {})
    assert weights == pytest.approx({0: 0.1192, 1: 0.8808}, abs=1e-4)


def test_exact_copy_of_the_leader_never_wins() -> None:
    leader = Contender(3, 10, [1.5, 1.7, 1.2, 1.9] * 5)
    copy = Contender(4, 11, list(leader.losses))
    scores = run([copy, leader], block=5000)
    assert scores.competitive == [3] and 4 in scores.not_competitive


def test_a_challenger_better_only_by_noise_does_not_take_the_crown() -> None:
    # better on 6 of 10 samples (mean lower): p = P(X ≥ 6 | n=10) = 386/1024 = 0.377 > 0.05
    incumbent = Contender(0, 0, [2.0] * 10)
    challenger = Contender(1, 10, [1.5] * 6 + [2.1] * 4)
    scores = run([incumbent, challenger])
    assert sign_test_p(6, 10) == pytest.approx(386 / 1024)
    assert scores.competitive == [0] and "sign test" in scores.not_competitive[1]


def test_serving_failure_costs_the_serving_share() -> None:
    weights = merge_competitions(
        {"tiny": {0: 0.5, 1: 0.5}}, {"tiny": 1.0}, {"tiny": 0.2}, {"tiny": {1}}
    )
    # uid 1 keeps 0.5 · 0.8 = 0.4 of its share; renormalised: 0.5/0.9 and 0.4/0.9
    assert weights == pytest.approx({0: 0.5 / 0.9, 1: 0.4 / 0.9})


def test_ema_smooths_across_rounds_and_empty_rounds_give_empty_weights() -> None:
    only = Contender(0, 0, [1.0] * 5)
    first = run([only], alpha=0.5)
    second = run([only], alpha=0.5, before=first.ema_after)
    assert first.ema_after[0] == 0.5 and second.ema_after[0] == 0.75
    assert merge_competitions({"tiny": {}}, {"tiny": 1.0}, {}, {}) == {}


def test_ties_are_deterministic() -> None:
    a, b = Contender(5, 100, [1.0] * 8), Contender(2, 100, [1.0] * 8)  # same block, same losses
    first, second = run([a, b]), run([b, a])
    assert first == second and first.competitive == [2]


losses = st.lists(st.floats(0.5, 5.0), min_size=12, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(losses, min_size=2, max_size=5), st.integers(0, 4), st.randoms(use_true_random=False)
)
def test_weights_sum_to_one_and_a_strictly_better_model_is_never_paid_less(
    table, pick, rnd
) -> None:
    n = len(table)
    blocks = [rnd.randrange(0, 900) for _ in range(n)]
    best = pick % n
    # the best model is much better on every sample and committed no later than anyone
    table[best] = [min(row[i] for row in table) * 0.5 for i in range(12)]
    blocks[best] = min(blocks)
    scores = run([Contender(uid, blocks[uid], table[uid]) for uid in range(n)])
    weights = merge_competitions({"tiny": scores.ema_after}, {"tiny": 1.0}, {"tiny": 0.0}, {})
    assert math.isclose(sum(weights.values()), 1.0) and all(
        math.isfinite(w) for w in weights.values()
    )
    assert all(weights[best] >= weights.get(uid, 0.0) for uid in range(n))


@settings(max_examples=40, deadline=None)
@given(st.lists(losses, min_size=2, max_size=5), st.randoms(use_true_random=False))
def test_uids_can_be_permuted(table, rnd) -> None:
    n = len(table)
    blocks = [rnd.randrange(0, 900) * 10 + i for i in range(n)]  # distinct: no uid tie-breaks
    perm = list(range(n))
    rnd.shuffle(perm)
    base = run([Contender(uid, blocks[uid], table[uid]) for uid in range(n)])
    moved = run([Contender(perm[uid], blocks[uid], table[uid]) for uid in range(n)])
    assert {perm[u]: w for u, w in base.win_rates.items()} == moved.win_rates


def test_ema_moves_by_alpha_towards_this_rounds_softmax() -> None:
    # α = 0.2, a lone competitive model: softmax 1.0; before 0.5 → 0.2·1.0 + 0.8·0.5 = 0.6,
    # and uid 9 (not in this round) decays 0.8·0.25 = 0.2. With α = 0.5 it would be 0.75 / 0.125.
    scores = run([Contender(1, 10, [1.0] * 4)], alpha=0.2, before={1: 0.5, 9: 0.25})
    assert scores.ema_after == pytest.approx({1: 0.6, 9: 0.2})


def test_the_sign_test_and_the_mean_must_both_agree() -> None:
    earlier = Contender(0, 0, [2.0] * 10)
    # better on 9 of 10 samples (p = 11/1024 < 0.05) but one disastrous sample: mean 2.88 > 1.9962
    spiky = Contender(1, 100, [1.9] * 9 + [11.0])
    # mean better (1.5) thanks to two huge wins, but worse on 8 of 10 samples: p = 0.989
    lucky = Contender(2, 200, [2.1] * 8 + [0.0, -5.0])
    for challenger in (spiky, lucky):
        scores = run([earlier, challenger])
        assert scores.competitive == [0], challenger
    wins, p, adjusted, mean = beats(spiky, earlier, 0.0019, 0.05)
    assert not wins and p == pytest.approx(11 / 1024) and mean > adjusted
    wins, p, adjusted, mean = beats(lucky, earlier, 0.0019, 0.05)
    assert not wins and p > 0.05 and mean < adjusted


def test_a_withheld_serving_share_goes_to_the_burn_uid() -> None:
    # a lone liar (uid 5) holding all the EMA, serving share 0.1: 0.9 stays with it and 0.1 goes
    # to the owner's uid 0; without a burn uid renormalisation would hand the liar all of it back
    ema = {"tiny": {5: 0.8}}
    burned = merge_competitions(ema, {"tiny": 1.0}, {"tiny": 0.1}, {"tiny": {5}}, burn_uid=0)
    assert burned == pytest.approx({0: 0.1, 5: 0.9})
    assert merge_competitions(ema, {"tiny": 1.0}, {"tiny": 0.1}, {"tiny": {5}}) == {5: 1.0}
    # two uids, only uid 6 fails: 0.5·0.1 = 0.05 burned, uid 6 keeps 0.45, uid 7 keeps 0.5
    two = merge_competitions(
        {"tiny": {6: 0.4, 7: 0.4}}, {"tiny": 1.0}, {"tiny": 0.1}, {"tiny": {6}}, 0
    )
    assert two == pytest.approx({0: 0.05, 6: 0.45, 7: 0.5})


def test_a_held_uid_keeps_its_ema_and_cannot_also_be_scored() -> None:
    scores = run([Contender(1, 10, [1.0] * 4)], alpha=0.5, before={1: 0.2, 3: 0.4}, held=[3])
    assert scores.ema_after[3] == 0.4 and scores.ema_after[1] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="a held uid cannot also be a contender"):
        run([Contender(1, 10, [1.0] * 4)], held=[1])
