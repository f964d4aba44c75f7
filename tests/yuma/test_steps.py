"""Single epoch steps (spec §4.3–4.12), each pinned by a small case worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.chain.yuma import EpochInput, EpochInputError, run_epoch
from crucible.chain.yuma import fixed as q
from crucible.chain.yuma.epoch import weighted_median_columns
from crucible.chain.yuma.reference import reference_epoch
from crucible.protocol.errors import CrucibleError, RequestError
from tests.yuma.test_epoch import TAO, make_input

# α_fixed for the default bonds_moving_average 900 000: 1 − ⌊0.9·2^32⌋/2^32 (spec §4.11).
ALPHA = q.ONE - ((900_000 << 32) // 1_000_000)
HALF = q.ONE // 2


def _median_by_support(scores: list[int], u: list[int], kappa: int) -> int:
    """The spec's second closed form: the largest v that ≥ κ of the stake supports (x_i ≥ v)."""

    def support(v: int) -> int:
        return sum(ui for x, ui in zip(scores, u, strict=True) if x >= v)

    supported = [v for v in set(scores) if support(v) >= kappa]
    return max(supported) if supported else min(scores)


# --- 4.6 consensus ----------------------------------------------------------------------------


def test_weighted_median_picks_the_level_half_the_stake_supports() -> None:
    # Scores (0.1, 0.5, 0.9) with stake (0.2, 0.3, 0.5). κ ≈ 0.5 (32767/65535, a hair below):
    # 0.9 is supported by 0.5 ≥ κ ⇒ C = 0.9. With κ = 0.6 only 0.5 (support 0.8) qualifies.
    scores = np.array([[q.ONE // 10], [HALF], [9 * q.ONE // 10]], dtype=np.int64)
    u = np.array([q.ONE // 5, 3 * q.ONE // 10, HALF], dtype=np.int64)
    assert weighted_median_columns(scores, u, q.ratio_u16(32767)).tolist() == [9 * q.ONE // 10]
    assert weighted_median_columns(scores, u, 6 * q.ONE // 10).tolist() == [HALF]
    # κ above the total stake: no level qualifies ⇒ the smallest score; κ = 0 ⇒ the largest.
    assert weighted_median_columns(scores, u, 2 * q.ONE).tolist() == [q.ONE // 10]
    assert weighted_median_columns(scores, u, 0).tolist() == [9 * q.ONE // 10]
    # Boundary: stake split exactly ½/½ on (0.25, 0.75) with κ = ½ exactly: 0.75 has support
    # ½ ≥ κ ⇒ C = 0.75 (the cumulative ½ at 0.25 is not *strictly* above T − κ = ½).
    even = np.array([[q.ONE // 4], [3 * q.ONE // 4]], dtype=np.int64)
    halves = np.array([HALF, HALF], dtype=np.int64)
    assert weighted_median_columns(even, halves, HALF).tolist() == [3 * q.ONE // 4]
    # No validators ⇒ 0 for every column.
    assert weighted_median_columns(
        np.zeros((0, 3), np.int64), np.zeros(0, np.int64), HALF
    ).tolist() == [0, 0, 0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 8).map(lambda k: k * q.ONE // 8), st.integers(1, q.ONE)),
        min_size=1,
        max_size=9,
    ),
    st.integers(0, 2 * q.ONE),
)
def test_weighted_median_equals_the_support_form(pairs: list[tuple[int, int]], kappa: int) -> None:
    # Few distinct score levels, so ties (the delicate case for a sort-based median) are common.
    scores = [x for x, _ in pairs]
    u = [w for _, w in pairs]
    got = weighted_median_columns(np.array([[x] for x in scores]), np.array(u), kappa)
    assert got.tolist() == [_median_by_support(scores, u, kappa)]


# --- 4.3 permits and their one-epoch lag ------------------------------------------------------


def test_permit_lag_first_epoch_pays_stake_and_the_next_pays_weights() -> None:
    stake, weights = [TAO, 3 * TAO, 0], [[(2, 65535)], [(2, 65535)], []]
    first = run_epoch(make_input(stake, weights, permit=[]))
    assert first.incentive == [0, 0, 0]  # nobody's weights count without an old permit
    assert first.validator_permit == [True, True, False]
    second = run_epoch(make_input(stake, weights, permit=first.validator_permit))
    assert second.incentive == [0, 0, 65535]
    # miner 2 gets E·I/Σ = E/2 (Σ = I + D = 2), floored
    assert second.server_emission == [0, 0, 500_000_000]


def test_a_validator_losing_its_permit_still_counts_this_epoch() -> None:
    # K = 2 of stakes (1, 2, 3): uid 0 loses its permit for the *next* epoch, but this epoch it
    # still holds the old one, so its bonds earn dividends; its stored bond row is emptied (§4.13).
    stake = [TAO, 2 * TAO, 3 * TAO, 0]
    weights = [[(3, 65535)]] * 3 + [[]]
    out = run_epoch(make_input(stake, weights, max_allowed_validators=2))
    assert out.validator_permit == [False, True, True, False]
    assert out.dividends[0] > 0
    assert out.bonds[0] == [] and out.bonds[1] != []


def test_stake_below_threshold_is_zeroed_except_for_the_owner() -> None:
    stake = [TAO, 5 * 10**8, 2 * 10**8]
    out = run_epoch(make_input(stake, [[], [], []], stake_threshold=TAO // 2, owner_uid=2))
    # uid 1 holds exactly θ (not below) and keeps it; uid 2 is below θ but is the owner.
    assert out.stake_weight[0] > out.stake_weight[1] > out.stake_weight[2] > 0
    out = run_epoch(make_input(stake, [[], [], []], stake_threshold=TAO // 2))
    assert out.stake_weight[2] == 0 and out.validator_permit[2] is False


# --- 4.12 emission fallbacks and rao floors --------------------------------------------------


def test_no_usable_weights_pays_active_stake() -> None:
    # Only self-weights (dropped, §4.5): I = D = 0 ⇒ validators are paid by active stake A.
    # S = (1/8, 3/8, 1/2) exactly; uid 2 has no permit so A = (1/4, 3/4, 0) ⇒ 250M / 750M / 0
    # (paying S would have given 125M / 375M / 500M).
    stake = [TAO, 3 * TAO, 4 * TAO]
    out = run_epoch(make_input(stake, [[(0, 65535)], [(1, 65535)], []], permit=[True, True, False]))
    assert out.incentive == [0, 0, 0] and out.dividends == [0, 0, 0]
    assert out.emission == [250_000_000, 750_000_000, 0]
    assert out.validator_emission == [250_000_000, 750_000_000, 0]
    assert out.server_emission == [0, 0, 0]


def test_rao_amounts_are_floored() -> None:
    # Fallback to S with stakes 11:29. S_0 = ⌊0.275·2^32⌋ = 1181116006 (0.275·2^32 = …006.4),
    # so E·S_0 = 274 999 999.9… rao ⇒ 274 999 999 (spec §5 item 7); uid 1 likewise 724 999 999.
    out = run_epoch(make_input([11 * TAO, 29 * TAO], [[], []], permit=[]))
    assert out.emission == [274_999_999, 724_999_999]


def test_zero_emission_pays_nothing_but_keeps_the_shares() -> None:
    out = run_epoch(make_input([TAO, 0], [[(1, 65535)], []], permit=[True, False], rao_emission=0))
    assert out.incentive == [0, 65535]
    assert out.emission == [0, 0] and out.server_emission == [0, 0]


# --- 4.9 bonds penalty -----------------------------------------------------------------------


def _two_validator_case(**params: object):
    # v0 (¼ stake) weights (0.5, 0.5), v1 (¾) weights (0.75, 0.25) on miners 2 and 3 ⇒ consensus
    # (0.75, 0.25): v0's 0.5 on miner 3 is clipped to 0.25 (see test_epoch's worked scenario).
    return run_epoch(
        make_input(
            [TAO, 3 * TAO, 0, 0],
            [[(2, 65535), (3, 65535)], [(2, 65535), (3, 21845)], [], []],
            **params,
        )
    )


def test_bonds_penalty_interpolates_between_weight_and_clipped_weight() -> None:
    # β = 1 (default): bond on miner 3 = α·0.25 ⇒ 0.025 ⇒ 1638.
    # β = 0: the unclipped 0.5 ⇒ α·0.5 ⇒ 3276.
    # β = 32767/65535 ≈ ½: W̃ = 0.5 + β(0.25 − 0.5) ≈ 0.375 ⇒ α·0.375 ≈ 0.0375 ⇒ 2457–2458.
    assert dict(_two_validator_case().bonds[0])[3] == 1638
    assert dict(_two_validator_case(bonds_penalty=0).bonds[0])[3] == 3276
    half = dict(_two_validator_case(bonds_penalty=32767).bonds[0])[3]
    assert abs(half - 0.0375 * 65535) <= 1.5
    # the unclipped miner 2 (0.5 ≤ C = 0.75) is the same under every β
    assert {dict(_two_validator_case(bonds_penalty=b).bonds[0])[2] for b in (0, 32767)} == {3276}


def test_yuma3_dividends_follow_stake_times_bond_share() -> None:
    # Continuing the scenario: bonds v0 (0.05, 0.025), v1 (0.075, 0.025); column-normalised
    # B̂ = (0.4, 0.5) and (0.6, 0.5); I = (0.7333, 0.2667).
    # t0 = 0.4·0.7333 + 0.5·0.2667 = 0.42667, t1 = 0.6·0.7333 + 0.5·0.2667 = 0.57333;
    # D ∝ A·t = (0.25·0.42667, 0.75·0.57333) = (0.10667, 0.43) ⇒ (0.19876, 0.80124)
    # ⇒ u16 ≈ 13025.8 and 52509.6, floored in Q to 13025 and 52509.
    out = _two_validator_case()
    assert out.dividends == [13025, 52509, 0, 0]
    # validator emission = E·D/2 ≈ 99 378 882 and 400 621 118; floors in Q land one below.
    assert out.validator_emission[:2] == [99_378_881, 400_621_117]


# --- 4.10 bonds masking and 4.11 explicit zeros ---------------------------------------------


def test_bonds_on_a_miner_registered_since_the_last_epoch_are_dropped() -> None:
    # Last step at 640 ⇒ last_tempo = 641. Miner 2 registered at 700 ≥ 641: v0's old full bond
    # on it belonged to the uid's previous owner and is dropped; miner 1 (reg 1) keeps its bond.
    # W = (0.5, 0.5) ⇒ miner 1: α·0.5 + (1 − α)·1 ≈ 0.95 ⇒ 62258; miner 2: α·0.5 ≈ 0.05 ⇒ 3276.
    inp = make_input(
        [TAO, 0, 0],
        [[(1, 65535), (2, 65535)], [], []],
        bonds=[[(1, 65535), (2, 65535)], [], []],
        reg=[1, 1, 700],
    )
    out = run_epoch(inp)
    fresh = q.to_u16(q.q_mul(ALPHA, HALF))
    kept = q.to_u16(q.q_mul(ALPHA, HALF) + q.q_mul(q.ONE - ALPHA, q.ONE))
    assert (fresh, kept) == (3276, 62258)
    assert out.bonds[0] == [(1, kept), (2, fresh)]


def test_fixed_alpha_decays_a_bond_with_no_weight_entry() -> None:
    # Without liquid alpha the EMA runs over every column in either row: v0 stopped weighting
    # miner 2 entirely (no entry), its bond 0.5 decays to (1 − α)·0.5 ≈ 0.45 ⇒ 29490–29491.
    bonds = [[(1, 0), (2, 32768)], [], []]
    out = run_epoch(make_input([TAO, 0, 0], [[(1, 65535)], [], []], bonds=bonds))
    assert abs(dict(out.bonds[0])[2] - 0.45 * 65535) <= 2


def test_liquid_alpha_near_consensus_is_alpha_low_and_selling_is_near_alpha_high() -> None:
    # lo = 6554/65535 ≈ 0.1, hi = 19661/65535 ≈ 0.3, k = 1000 (spec §4.11.2 test values).
    # Miner 1: W = 1 = C, no old bond ⇒ d = 0 ⇒ σ = logistic(−5) = 0.006693 ⇒
    #   α = 0.1 + 0.2·0.006693 = 0.10134 ⇒ B' = α·1 ⇒ 0.10134·65535 ≈ 6641.
    # Miner 2: explicit zero weight, old bond 1 ⇒ selling, d = 1 ⇒ σ = logistic(5) = 0.993307 ⇒
    #   α = 0.29866 ⇒ B' = (1 − α)·1 = 0.70134 ⇒ ≈ 45962 (floors in Q give 45961).
    inp = make_input(
        [TAO, 0, 0],
        [[(1, 65535), (2, 0)], [], []],
        permit=[True, False, False],
        bonds=[[(2, 65535)], [], []],
        liquid_alpha=True,
        alpha_low=6554,
        alpha_high=19661,
    )
    out = run_epoch(inp)
    assert out.bonds[0] == [(1, 6641), (2, 45961)]
    assert out == reference_epoch(inp)


def test_classic_explicit_zero_keeps_an_entry_that_decays() -> None:
    # Classic: v0 weights miner 1 fully and miner 2 with an explicit zero; v1 weights miner 2.
    # v0's old bond on miner 2 decays but stays, stored relative to the column max (v1's).
    inp = make_input(
        [TAO, TAO, 0, 0],
        [[(2, 65535), (3, 0)], [(3, 65535)], [], []],
        variant="classic",
        bonds=[[(3, 65535)], [(3, 65535)], [], []],
    )
    out = run_epoch(inp)
    # column 3: old B = (0.5, 0.5), ΔB = (0, 1) ⇒ B' ∝ (0.9·0.5, 0.1 + 0.9·0.5) = (0.45, 0.55)
    # ⇒ max-upscaled (0.8182, 1) ⇒ ≈ 53620 and 65535.
    assert dict(out.bonds[1])[3] == 65535
    assert abs(dict(out.bonds[0])[3] - 0.45 / 0.55 * 65535) <= 3


# --- 4.5 weights -----------------------------------------------------------------------------


def test_weights_on_uids_beyond_n_are_ignored() -> None:
    out = run_epoch(make_input([TAO, 0], [[(1, 65535), (7, 65535)], []]))
    assert out.incentive == [0, 65535]


def test_input_errors_belong_to_the_project_error_tree() -> None:
    with pytest.raises(EpochInputError) as caught:
        EpochInput.from_json({"variant": "yuma3", "block": -1})
    assert isinstance(caught.value, RequestError | CrucibleError)
    assert isinstance(caught.value, ValueError)


# --- boundaries the oracle and the vectorised epoch share (the +1s and the ≤ / <) -------------


@pytest.mark.parametrize("epoch", [run_epoch, reference_epoch])
def test_bond_masking_boundary_is_the_block_after_the_last_step(epoch) -> None:
    # last step 640 ⇒ last_tempo = 641 (§4.10: "LastMechansimStepBlock + 1"); a miner registered
    # at 641 registered since the last epoch (641 ≤ reg) and loses its old bonds; one at 640 keeps
    # them. Same bond and weight arithmetic as the worked example above: 3276 fresh, 62258 kept.
    for reg, expected in ((641, 3276), (640, 62258)):
        single = make_input(
            [TAO, 0, 0],
            [[(1, 65535), (2, 65535)], [], []],
            bonds=[[(1, 65535), (2, 65535)], [], []],
            reg=[1, 1, reg],
        )
        assert epoch(single).bonds[0][1] == (2, expected), reg


@pytest.mark.parametrize("epoch", [run_epoch, reference_epoch])
def test_a_weight_set_in_the_registration_block_is_outdated_one_block_later_is_not(epoch) -> None:
    # §4.5 step 4: drop (i, j) if last_update_i ≤ reg_j. Validator 0 set weights at block 990.
    for reg, counted in ((990, False), (989, True)):
        inp = make_input([TAO, 0], [[(1, 65535)], []], reg=[1, reg], last_update=[990, 990])
        assert (epoch(inp).incentive[1] > 0) is counted, reg


@pytest.mark.parametrize("epoch", [run_epoch, reference_epoch])
def test_activity_cutoff_boundary(epoch) -> None:
    # §4.1: inactive ⇔ last_update + cutoff < block. Block 1000, cutoff 100: 900 is active, 899 not.
    for last, active in ((900, True), (899, False)):
        inp = make_input(
            [TAO, 0], [[(1, 65535)], []], last_update=[last, last], activity_cutoff_blocks=100
        )
        assert bool(epoch(inp).active[0]) is active, last


@pytest.mark.parametrize("epoch", [run_epoch, reference_epoch])
def test_commit_reveal_mask_boundary(epoch) -> None:
    # §4.5 step 5: drop (i, j) if commit_block_i < reg_j. Miner 1 registered at 950.
    for commit, counted in ((950, True), (949, False)):
        inp = make_input([TAO, 0], [[(1, 65535)], []], reg=[1, 950], last_update=[990, 990])
        inp = EpochInput(**{**inp.__dict__, "commit_block": [commit, None]})
        assert (epoch(inp).incentive[1] > 0) is counted, commit
