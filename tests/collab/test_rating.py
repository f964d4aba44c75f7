"""Round scores, verdicts, EMA ratings and weights of a collab competition."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.collab.rating import (
    VERDICT_NO_GAIN,
    VERDICT_NO_PAYLOAD,
    VERDICT_OK,
    VERDICT_PROOF_FAILED,
    Measured,
    collab_weights,
    improvement,
    round_scores,
    select_contributors,
    update_ratings,
)
from crucible.protocol.errors import ConfigError

THRESHOLD = 0.4


def _m(
    uid: int,
    block: int = 100,
    held: tuple[float, float] = (4.0, 3.0),  # improvement 0.25, exact
    own: tuple[float, float] = (4.0, 2.0),  # 0.5
    rand: tuple[float, float] = (4.0, 3.5),  # 0.125
) -> Measured:
    return Measured(uid, f"hotkey-{uid}", block, f"{uid:064x}", *held, *own, *rand)


def _score(measured, rejected=None, overlaps=None, replayed=None, **kwargs):
    return round_scores(
        measured, rejected or {}, overlaps or {}, replayed or {}, THRESHOLD, **kwargs
    )


def test_honest_payload_scores_its_held_out_improvement():
    result = _score([_m(1), _m(2, held=(2.0, 1.5))])
    assert result.scores == {1: 0.25, 2: 0.25}
    assert result.verdicts == {1: VERDICT_OK, 2: VERDICT_OK}


def test_measurements_may_come_as_a_mapping():
    assert _score({1: _m(1)}).scores == {1: 0.25}
    with pytest.raises(ValueError, match="another uid's measurement"):
        _score({2: _m(1)})
    with pytest.raises(ValueError, match="measured twice"):
        _score([_m(1), _m(1)])


def test_rejected_payload_scores_zero_with_its_reason():
    result = _score([_m(1), _m(2)], rejected={2: "bad_scale", 5: "payload_too_large"})
    assert result.scores == {1: 0.25, 2: 0.0, 5: 0.0}
    assert result.verdicts[2] == "rejected: bad_scale"
    assert result.verdicts[5] == "rejected: payload_too_large"


def test_rejection_reason_is_kept_short():
    result = _score([], rejected={3: "x" * 5000})
    assert result.verdicts[3] == "rejected: " + "x" * 120


def test_replayed_payload_scores_zero():
    result = _score([_m(1), _m(2)], replayed={2: "seen in round 4 from uid 1"})
    assert result.scores == {1: 0.25, 2: 0.0}
    assert result.verdicts[2] == "replayed: seen in round 4 from uid 1"


@pytest.mark.parametrize("pair", [(1, 2), (2, 1)])
def test_copy_penalises_the_later_uploader(pair):
    # uid 2 commits at block 105 indices that overlap uid 1's (block 100): uid 2 copied
    result = _score([_m(1, block=100), _m(2, block=105)], overlaps={pair: 0.9})
    assert result.scores == {1: 0.25, 2: 0.0}
    assert result.verdicts == {1: VERDICT_OK, 2: "copy of uid 1"}


def test_copy_threshold_is_inclusive():
    at = _score([_m(1, block=100), _m(2, block=101)], overlaps={(1, 2): THRESHOLD})
    below = _score([_m(1, block=100), _m(2, block=101)], overlaps={(1, 2): 0.399})
    assert at.verdicts[2] == "copy of uid 1"
    assert below.scores == {1: 0.25, 2: 0.25}


def test_same_block_copy_is_a_tie_both_lose():
    result = _score([_m(4, block=100), _m(7, block=100), _m(9)], overlaps={(7, 4): 0.8})
    assert result.scores == {4: 0.0, 7: 0.0, 9: 0.25}  # uid 9: same block, no overlap
    assert result.verdicts == {4: "copy tie with uid 7", 7: "copy tie with uid 4", 9: VERDICT_OK}


def test_copy_of_several_names_the_earliest_original():
    measured = [_m(1, block=103), _m(2, block=101), _m(3, block=110)]
    result = _score(measured, overlaps={(3, 1): 0.9, (3, 2): 0.5})
    assert result.verdicts[3] == "copy of uid 2"
    assert result.scores[1] == result.scores[2] == 0.25


def test_copy_of_a_rejected_payload_is_not_a_copy():
    # the rejected uid's payload never counted, so nothing was taken from it
    result = _score([_m(1, block=100), _m(2, block=105)], rejected={1: "bad"}, overlaps={(1, 2): 1})
    assert result.verdicts == {1: "rejected: bad", 2: VERDICT_OK}


@pytest.mark.parametrize("own", [(4.0, 3.5), (4.0, 3.9)])  # equal to random, then worse
def test_failed_proof_of_own_data_scores_zero(own):
    result = _score([_m(1, own=own)])
    assert result.scores == {1: 0.0}
    assert result.verdicts == {1: VERDICT_PROOF_FAILED}


def test_non_finite_proof_losses_fail_the_proof():
    result = _score([_m(1, own=(math.nan, 1.0)), _m(2, rand=(math.inf, 1.0))])
    assert result.verdicts == {1: VERDICT_PROOF_FAILED, 2: VERDICT_OK}


def test_negative_improvement_scores_zero():
    result = _score([_m(1, held=(3.0, 3.3)), _m(2, held=(3.0, 3.0))])
    assert result.scores == {1: 0.0, 2: 0.0}
    assert result.verdicts == {1: VERDICT_NO_GAIN, 2: VERDICT_NO_GAIN}


def test_expected_uid_that_sent_nothing_has_a_verdict():
    result = _score([_m(1)], expected=[1, 6])
    assert result.scores == {1: 0.25, 6: 0.0}
    assert result.verdicts[6] == VERDICT_NO_PAYLOAD


def test_bad_threshold_is_a_config_error():
    with pytest.raises(ConfigError, match="overlap threshold must be in"):
        round_scores([], {}, {}, {}, 0.0)


def test_improvement_guards():
    assert improvement(4.0, 3.0) == 0.25
    assert improvement(4.0, 5.0) == -0.25
    for before, after in [(0.0, 1.0), (-2.0, -3.0), (math.nan, 1.0), (1.0, math.nan)]:
        assert improvement(before, after) == 0.0
    for before, after in [(math.inf, 1.0), (1.0, -math.inf), (1e308, -1.7e308)]:
        assert improvement(before, after) == 0.0


def test_ema_arithmetic():
    # uid 1: 0.5·0.5 + 0.5·0.25; uid 2 absent: 0.5·0.25; uid 3 new: 0.5·1
    ratings = update_ratings({1: 0.5, 2: 0.25}, {1: 0.25, 3: 1.0}, alpha=0.5)
    assert ratings == {1: 0.375, 2: 0.125, 3: 0.5}
    assert update_ratings({1: 0.5}, {1: 1.0}, alpha=1.0) == {1: 1.0}
    assert update_ratings({1: math.nan}, {1: -1.0, 2: math.inf}, alpha=0.5) == {1: 0.0, 2: 0.0}
    with pytest.raises(ConfigError, match="alpha must be in"):
        update_ratings({}, {}, alpha=0.0)


def test_free_rider_reaches_zero_weight_within_five_rounds():
    # Three uids at the honest steady state s = 0.25. From round 1 on uid 3 sends nothing and
    # uid 4 sends a late copy of uid 1's payload. A free rider decays as s·0.5^k against the
    # honest s, so it falls under min_fraction·best = 0.05·s at k = 5 (0.5⁴ = 0.0625 > 0.05).
    alpha, min_fraction = 0.5, 0.05
    ratings = {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}
    history = []
    for round_index in range(1, 7):
        measured = [_m(1, block=100), _m(2, block=101), _m(4, block=102)]
        verdicts = round_scores(measured, {}, {(4, 1): 0.97}, {}, THRESHOLD, expected=[1, 2, 3, 4])
        assert verdicts.verdicts[3] == VERDICT_NO_PAYLOAD
        assert verdicts.verdicts[4] == "copy of uid 1"
        ratings = update_ratings(ratings, verdicts.scores, alpha)
        weights = collab_weights(ratings, min_fraction)
        history.append(weights)
        assert math.isclose(math.fsum(weights.values()), 1.0, rel_tol=0, abs_tol=1e-12)
        assert weights[1] > 0.3 and weights[2] > 0.3, round_index
    assert all(w[3] > 0 and w[4] > 0 for w in history[:4])
    assert all(w[3] == 0.0 and w[4] == 0.0 for w in history[4:])
    assert history[-1][1] == history[-1][2] == 0.5


def test_free_rider_dropped_from_the_scores_also_decays():
    ratings = update_ratings({1: 0.25, 3: 0.25}, {1: 0.25}, alpha=0.5)
    assert ratings == {1: 0.25, 3: 0.125}


def test_weights_sum_to_one_and_small_ratings_earn_nothing():
    ratings = {1: 0.3, 2: 0.1, 3: 0.014, 4: 0.016, 5: 0.0, 6: math.nan, 7: -1.0, 8: 0.07}
    weights = collab_weights(ratings, min_fraction=0.05)  # cut: 0.05 · 0.3 = 0.015
    assert set(weights) == set(ratings)
    assert math.isclose(math.fsum(weights.values()), 1.0, rel_tol=0, abs_tol=1e-12)
    assert [uid for uid, w in weights.items() if w > 0] == [1, 2, 4, 8]
    assert weights[1] == pytest.approx(0.3 / 0.486)
    assert collab_weights({1: 0.0, 2: math.nan}, 0.05) == {}
    assert collab_weights({}, 0.05) == {}
    with pytest.raises(ConfigError, match="min rating fraction"):
        collab_weights({1: 1.0}, 1.0)


def test_select_contributors_best_first_ties_by_uid_capped():
    scores = {5: 0.1, 9: 0.3, 2: 0.3, 1: 0.0, 7: -1.0, 8: math.nan, 3: 0.2, 4: math.inf}
    assert select_contributors(scores, 3) == [2, 9, 3]
    assert select_contributors(scores, 10) == [2, 9, 3, 5]
    assert select_contributors(scores, 0) == []
    with pytest.raises(ConfigError, match="max contributors"):
        select_contributors(scores, -1)


# ---- properties: finite non-negative scores; a uid's numbers only touch its own score ----

_loss = st.one_of(
    st.floats(min_value=-5.0, max_value=20.0, allow_nan=False),
    st.sampled_from([0.0, math.nan, math.inf, -math.inf, 1e308]),
)
_UIDS = range(6)


@st.composite
def _rounds(draw: st.DrawFn) -> dict:
    uids = draw(st.lists(st.sampled_from(_UIDS), unique=True, max_size=6))
    measured = {
        uid: Measured(
            uid, f"hk{uid}", draw(st.integers(100, 103)), "0" * 64, *draw(st.tuples(*[_loss] * 6))
        )
        for uid in uids
    }
    pairs = st.tuples(st.sampled_from(_UIDS), st.sampled_from(_UIDS))
    overlaps = draw(st.dictionaries(pairs, st.floats(0.0, 1.0), max_size=6))
    rejected = draw(st.dictionaries(st.sampled_from(_UIDS), st.just("bad"), max_size=2))
    replayed = draw(st.dictionaries(st.sampled_from(_UIDS), st.just("old"), max_size=2))
    return {"measured": measured, "rejected": rejected, "overlaps": overlaps, "replayed": replayed}


def _run(case: dict):
    return round_scores(
        case["measured"], case["rejected"], case["overlaps"], case["replayed"], THRESHOLD
    )


def _copy_partners(case: dict, uid: int) -> set[int]:
    return {
        b if a == uid else a
        for (a, b), v in case["overlaps"].items()
        if uid in (a, b) and v >= THRESHOLD
    }


@settings(max_examples=100, deadline=None)
@given(case=_rounds(), data=st.data())
def test_scores_are_finite_and_a_uids_numbers_only_move_its_own_score(case, data):
    result = _run(case)
    everyone = set(case["measured"]) | set(case["rejected"]) | set(case["replayed"])
    assert set(result.scores) == set(result.verdicts) == everyone
    assert all(math.isfinite(s) and s >= 0 for s in result.scores.values())
    if not case["measured"]:
        return
    uid = data.draw(st.sampled_from(sorted(case["measured"])))
    losses = data.draw(st.tuples(*[_loss] * 6))
    changed = dict(case["measured"])
    changed[uid] = Measured(uid, f"hk{uid}", changed[uid].commit_block, "0" * 64, *losses)
    after = _run({**case, "measured": changed})
    assert {u: s for u, s in after.scores.items() if u != uid} == {
        u: s for u, s in result.scores.items() if u != uid
    }
    # moving its commit block can only touch the uids it overlaps with (the copy rule)
    block = data.draw(st.integers(100, 103))
    changed[uid] = dataclasses.replace(changed[uid], commit_block=block)
    moved = _run({**case, "measured": changed})
    untouched = set(after.scores) - {uid} - _copy_partners(case, uid)
    assert all(moved.scores[u] == after.scores[u] for u in untouched)


def _paired(uid: int, own: list[float], control: list[float], held: list[float]) -> Measured:
    return Measured(
        uid=uid, hotkey=f"hk{uid}", commit_block=uid, payload_hash=f"{uid:064x}",
        held_out_before=4.0, held_out_after=4.0 * (1 - sum(held) / len(held)),
        own_before=4.0, own_after=3.9, random_before=4.0, random_after=3.95,
        own_gains=tuple(own), random_gains=tuple(control), held_gains=tuple(held),
    )  # fmt: skip


def test_the_paired_proof_and_the_held_out_significance_decide_with_the_thresholds() -> None:
    from crucible.collab.rating import VERDICT_NOT_SIGNIFICANT, proof_statistic

    steady = [0.02, 0.021, 0.019, 0.022, 0.018, 0.02]
    honest = _paired(1, [g + 0.01 for g in steady], steady, steady)
    lazy = _paired(2, steady, [g + 0.0005 * (-1) ** i for i, g in enumerate(steady)], steady)
    lucky = _paired(
        3, [g + 0.01 for g in steady], steady, [0.01, -0.009, 0.012, -0.011, 0.008, -0.006]
    )
    assert proof_statistic(honest.own_gains, honest.random_gains) > 1e6  # the same lift
    assert abs(proof_statistic(lazy.own_gains, lazy.random_gains)) < 1.0
    v = round_scores([honest, lazy, lucky], {}, {}, {}, THRESHOLD, proof_z=1.645, gain_z=2.0)
    assert v.verdicts == {1: "ok", 2: "proof of own data failed", 3: VERDICT_NOT_SIGNIFICANT}
    assert v.scores[1] > 0 and v.scores[2] == v.scores[3] == 0.0
    # without thresholds the means decide (the lucky one's held-out mean is a hair positive)
    plain = round_scores([honest, lucky], {}, {}, {}, THRESHOLD)
    assert plain.verdicts == {1: "ok", 3: "ok"}
