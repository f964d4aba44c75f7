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


def test_epsilon_decays_linearly_from_start_to_floor_and_stays_there() -> None:
    eps = EpsilonSchedule(start=0.01, floor=0.002, decay_blocks=100)
    assert eps.epsilon(-5) == eps.epsilon(0) == 0.01
    assert eps.epsilon(1) == pytest.approx(0.01 - 0.008 / 100)
    assert eps.epsilon(50) == pytest.approx(0.006)
    assert eps.epsilon(100) == pytest.approx(0.002) and eps.epsilon(250) == pytest.approx(0.002)


def test_sign_test_p_values_by_hand() -> None:
    assert sign_test_p(0, 0) == 1.0  # no samples: no evidence
    assert sign_test_p(1, 1) == 0.5 and sign_test_p(0, 1) == 1.0
    assert sign_test_p(10, 10) == 1 / 1024 and sign_test_p(9, 10) == 11 / 1024
    assert sign_test_p(8, 10) == 56 / 1024  # C(10,8)+C(10,9)+C(10,10) = 45+10+1


def test_four_competitive_models_worked_by_hand() -> None:
    # Each later model is 10 % better than the one before on every sample: every later one beats
    # every earlier one (p = 1/1024 on 10 samples). Win counts 0, 1, 2, 3 over 3 opponents.
    means = {0: 2.0, 1: 1.8, 2: 1.62, 3: 1.458}
    models = [Contender(uid, 100 * (uid + 1), [m] * 10) for uid, m in means.items()]
    scores = run(models, block=10_000, temperature=0.5, alpha=0.5, before={0: 0.4, 9: 0.2})
    assert scores.competitive == [0, 1, 2, 3]
    assert scores.win_rates == pytest.approx({0: 0.0, 1: 1 / 3, 2: 2 / 3, 3: 1.0})
    # softmax of (0, 1/3, 2/3, 1) / 0.5 = e^(0, 2/3, 4/3, 2) / Σ; Σ = 1 + 1.9477 + 3.7937 + 7.3891
    total = 1 + math.exp(2 / 3) + math.exp(4 / 3) + math.exp(2)
    assert scores.softmax[3] == pytest.approx(math.exp(2) / total) and scores.softmax[
        0
    ] == pytest.approx(1 / total)
    # EMA: α·softmax + (1 − α)·before; uid 9 (absent) decays from 0.2 to 0.1
    assert scores.ema_after[0] == pytest.approx(0.5 / total + 0.2)
    assert scores.ema_after[9] == pytest.approx(0.1) and scores.ema_before[9] == 0.2
    assert scores.ema_before[3] == 0.0
    pair = next(p for p in scores.pairs if (p.earlier, p.later) == (0, 1))
    assert pair.later_mean == pytest.approx(1.8) and pair.earlier_adjusted_mean == pytest.approx(
        2.0 * (1 - 0.001)
    )


def test_a_failed_evaluation_is_skipped_as_an_opponent_not_as_a_gate() -> None:
    # uid 0 (earliest) failed to evaluate; uid 1 and uid 2 are compared with each other only
    failed = Contender(0, 10, [math.inf] * 10)
    a, b = Contender(1, 20, [2.0] * 10), Contender(2, 30, [1.5] * 10)
    scores = run([failed, a, b])
    assert scores.not_competitive[0] == "evaluation failed"
    assert scores.competitive == [1, 2] and scores.win_rates == {1: 0.0, 2: 1.0}


def test_one_earlier_model_it_cannot_beat_is_enough_to_exclude_it() -> None:
    strong = Contender(0, 10, [1.0] * 10)
    weak = Contender(1, 20, [3.0] * 10)
    late = Contender(2, 30, [2.0] * 10)  # beats weak, not strong
    scores = run([strong, weak, late])
    assert 2 in scores.not_competitive and "does not beat uid 0" in scores.not_competitive[2]


def test_ties_count_against_the_challenger_on_the_mean_and_the_sign_test() -> None:
    earlier = Contender(0, 0, [2.0] * 10)
    same = Contender(1, 10, [2.0] * 10)
    wins, p, adjusted, mean = beats(same, earlier, 0.0, 0.05)
    assert not wins and p == 1.0 and mean == adjusted  # no sample strictly better
    # p exactly at the level is not significant: 1 win of 1 sample at α = 0.5
    one = beats(Contender(1, 10, [1.0]), Contender(0, 0, [2.0]), 0.0, 0.5)
    assert one[1] == 0.5 and not one[0]


def test_merge_weighs_competitions_by_reward_share_and_skips_empty_ones() -> None:
    emas = {"a": {1: 3.0, 2: 1.0}, "b": {3: 2.0}, "c": {4: 0.0}}
    weights = merge_competitions(emas, {"a": 0.6, "b": 0.4, "c": 0.5}, {}, {})
    # a: 0.6·(0.75, 0.25) = (0.45, 0.15); b: 0.4·1 = 0.4; c sums to 0 and is skipped; total 1
    assert weights == pytest.approx({1: 0.45, 2: 0.15, 3: 0.4})
    assert merge_competitions({"a": {1: 1.0}}, {}, {}, {}) == {}  # no reward share: nothing
    assert merge_competitions({"a": {1: math.inf}}, {"a": 1.0}, {}, {}) == {}


def test_scores_and_schedules_are_immutable() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        EPS.start = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Contender(1, 1, [1.0]).uid = 2  # type: ignore[misc]
    alone = run([Contender(1, 1, [1.0])])
    assert alone.extra == {} and alone.win_rates == {1: 1.0} and alone.softmax == {1: 1.0}
