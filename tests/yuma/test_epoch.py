"""The Yuma epoch: hand-worked scenarios, the scalar oracle, and invariants."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.chain.yuma import EpochInput, EpochParams, run_epoch
from crucible.chain.yuma.reference import reference_epoch
from tests.yuma.strategies import epoch_inputs

ROOT = Path(__file__).resolve().parents[2]
TAO = 10**9


def make_input(
    stake: list[int],
    weights: list[list[tuple[int, int]]],
    *,
    variant: str = "yuma3",
    permit: list[bool] | None = None,
    bonds: list[list[tuple[int, int]]] | None = None,
    block: int = 1000,
    last_update: list[int] | None = None,
    reg: list[int] | None = None,
    **params: object,
) -> EpochInput:
    n = len(stake)
    defaults = {"last_mechanism_step_block": 640, "rao_emission": TAO}
    defaults.update(params)
    return EpochInput(
        variant=variant,
        block=block,
        params=EpochParams(**defaults),  # type: ignore[arg-type]
        stake=stake,
        last_update=last_update or [block - 10] * n,
        block_at_registration=reg or [1] * n,
        validator_permit=permit if permit is not None else [s > 0 for s in stake],
        weights=weights,
        bonds=bonds or [[] for _ in range(n)],
    )


def test_two_validators_two_miners_worked_by_hand() -> None:
    # Validators 0 and 1 hold 1/4 and 3/4 of the stake. Row-normalised weights:
    #   v0 → (m2, m3) = (0.5, 0.5);  v1 → (0.75, 0.25).
    # Consensus (κ ≈ 0.5): m2: 0.75 has support 3/4 ≥ κ ⇒ C2 = 0.75 ⇒ 49151
    #                      m3: 0.5 has support 1/4 < κ, 0.25 has 1 ⇒ C3 = 0.25 ⇒ 16383
    # Clipped: v0 → (0.5, 0.25), VT = 0.75 ⇒ 49151; v1 unchanged, VT = 1 ⇒ 65535.
    # Ranks: m2 = .25·.5 + .75·.75 = .6875, m3 = .25·.25 + .75·.25 = .25; I = (.7333, .2667),
    #   floored in Q ⇒ 48058 and 17475.
    # Fresh Yuma3 bonds = α·W̄ with α = 0.1 (a hair above): v0 (0.05, 0.025) ⇒ (3276, 1638).
    out = run_epoch(
        make_input(
            [TAO, 3 * TAO, 0, 0], [[(2, 65535), (3, 65535)], [(2, 65535), (3, 21845)], [], []]
        )
    )
    assert out.consensus == [0, 0, 49151, 16383]
    assert out.validator_trust == [49151, 65535, 0, 0]
    assert out.incentive == [0, 0, 48058, 17475]
    assert out.bonds[0] == [(2, 3276), (3, 1638)]
    assert out.bonds[1] == [(2, 4915), (3, 1638)]
    # miners get I/2 of the emission, validators D/2: the halves add up to at most E
    assert out.server_emission[2:] == [366666666, 133333333]
    assert sum(out.emission) <= TAO and sum(out.emission) >= TAO - 4


def test_first_epoch_without_permits_pays_stake() -> None:
    # Nobody holds a permit yet (spec §11): active stake is 0, so the fallback pays S:
    # S = (1/4, 3/4) ⇒ ⌊2^30 · 1e9 / 2^32⌋ = 250 000 000 and 750 000 000; miners get 0.
    out = run_epoch(make_input([TAO, 3 * TAO], [[(1, 65535)], [(0, 65535)]], permit=[]))
    assert out.emission == [250_000_000, 750_000_000]
    assert out.validator_emission == [250_000_000, 750_000_000]
    assert out.server_emission == [0, 0]
    assert out.incentive == [0, 0] and out.dividends == [0, 0]
    # ...and the new permits (top-K by stake) are written for the next epoch
    assert out.validator_permit == [True, True]


def test_permits_are_top_k_by_stake_ties_to_the_higher_uid() -> None:
    # K = 2 of stakes (5, 9, 5, 0): uid 3 (zero) is never permitted; sorted ascending
    # (5@0, 5@2, 9@1) the first n−K = 2 entries (uid 3 and uid 0) lose theirs.
    out = run_epoch(make_input([5 * TAO, 9 * TAO, 5 * TAO, 0], [[]] * 4, max_allowed_validators=2))
    assert out.validator_permit == [False, True, True, False]


def test_classic_bonds_are_stored_max_upscaled() -> None:
    # Four validators with stake 1:2:3:4 all weight miner 4. ΔB column = (.1,.2,.3,.4);
    # with no old bonds the EMA is α·ΔB, column-normalised back to (.1,.2,.3,.4), then
    # max-upscaled to (.25,.5,.75,1) ⇒ 16383, 32767, 49151, 65535 (spec §5 item 6).
    stake = [TAO, 2 * TAO, 3 * TAO, 4 * TAO, 0]
    weights = [[(4, 65535)]] * 4 + [[]]
    out = run_epoch(make_input(stake, weights, variant="classic"))
    assert [row[0][1] for row in out.bonds[:4]] == [16383, 32767, 49151, 65535]
    # all dividends follow the bonds: D ∝ (.1,.2,.3,.4); 0.2·65535 = 13107 exactly, but 0.2 in
    # Q is ⌊0.2·2^32⌋/2^32 (a hair under), so the floored u16 is 13106 — as on the chain.
    assert out.dividends[:4] == [6553, 13106, 19660, 26214]


def test_weights_set_before_a_registration_are_outdated() -> None:
    # v0's weights were set at block 500; miner 2 was re-registered at 600 (after), miner 1 at 100.
    # Only the weight on miner 1 survives, so it takes all the incentive.
    inp = make_input(
        [TAO, 0, 0], [[(1, 65535), (2, 65535)], [], []], last_update=[500, 0, 0], reg=[1, 100, 600]
    )
    out = run_epoch(inp)
    assert out.incentive == [0, 65535, 0]


def test_weight_set_in_the_registration_block_is_outdated() -> None:
    inp = make_input([TAO, 0], [[(1, 65535)], []], last_update=[600, 0], reg=[1, 600])
    assert run_epoch(inp).incentive == [0, 0]


def test_inactive_validator_is_ignored() -> None:
    # v1 last set weights 6000 blocks ago (cutoff 5000): only v0's vote counts.
    inp = make_input(
        [TAO, TAO, 0, 0],
        [[(2, 65535)], [(3, 65535)], [], []],
        block=7000,
        last_update=[6990, 1000, 0, 0],
    )
    out = run_epoch(inp)
    assert out.active[:2] == [True, False]
    assert out.incentive == [0, 0, 65535, 0]


def test_self_weight_is_dropped_except_for_the_owner() -> None:
    weights = [[(0, 65535)], [(1, 65535)]]
    plain = run_epoch(make_input([TAO, TAO], weights))
    owned = run_epoch(make_input([TAO, TAO], weights, owner_uid=0))
    assert plain.incentive == [0, 0]
    assert owned.incentive[0] == 65535


def test_liquid_alpha_explicit_zero_decays_the_bond_and_absence_drops_it() -> None:
    # Spec §4.11.2: with liquid alpha a bond survives only where the new row has an entry;
    # an explicit zero keeps the entry, so the old bond decays as (1 − α)·B.
    old_bonds = [[(1, 30000), (2, 30000)], [], []]
    common = dict(permit=[True, False, False], bonds=old_bonds, liquid_alpha=True)
    with_zero = run_epoch(make_input([TAO, 0, 0], [[(1, 65535), (2, 0)], [], []], **common))
    without = run_epoch(make_input([TAO, 0, 0], [[(1, 65535)], [], []], **common))
    decayed = dict(with_zero.bonds[0])
    assert 0 < decayed[2] < 30000
    assert 2 not in dict(without.bonds[0])


def test_reference_equals_vectorised_on_a_dense_subnet() -> None:
    import random

    rng = random.Random(7)
    n = 40
    stake = [rng.randrange(0, 10**13) for _ in range(n)]
    weights = [
        sorted({rng.randrange(n): rng.randrange(65536) for _ in range(20)}.items())
        for _ in range(n)
    ]
    bonds = [
        sorted({rng.randrange(n): rng.randrange(65536) for _ in range(10)}.items())
        for _ in range(n)
    ]
    for variant in ("yuma3", "classic"):
        for liquid in (False, True):
            inp = make_input(
                stake,
                weights,
                bonds=bonds,
                variant=variant,
                permit=[rng.random() < 0.5 for _ in range(n)],
                liquid_alpha=liquid,
                max_allowed_validators=16,
                reg=[rng.randrange(1000) for _ in range(n)],
                last_update=[rng.randrange(1000) for _ in range(n)],
            )
            assert run_epoch(inp) == reference_epoch(inp)


@settings(max_examples=150, deadline=None)
@given(epoch_inputs())
def test_vectorised_epoch_equals_the_scalar_oracle(inp: EpochInput) -> None:
    assert run_epoch(inp) == reference_epoch(inp)


@settings(max_examples=100, deadline=None)
@given(epoch_inputs())
def test_incentive_and_dividends_sum_to_one_or_zero(inp: EpochInput) -> None:
    out = run_epoch(inp)
    n = inp.n
    for vector in (out.incentive, out.dividends):
        total = sum(vector)
        assert total == 0 or 65535 - n <= total <= 65535
        assert all(0 <= x <= 65535 for x in vector)
    assert all(e >= 0 for e in out.emission)
    assert sum(out.emission) <= inp.params.rao_emission
    assert sum(out.server_emission) + sum(out.validator_emission) <= inp.params.rao_emission


@settings(max_examples=60, deadline=None)
@given(epoch_inputs(max_n=6), st.randoms(use_true_random=False))
def test_uid_permutation_permutes_the_outputs(inp: EpochInput, rnd) -> None:
    n = inp.n
    # Stakes distinct even after Q normalisation (≥ 10^6 rao apart, the Q resolution of the total
    # is ~2·10^4 rao): the permit sort breaks stake ties by uid, which no permutation preserves.
    stake = [(s // 10**6 + 1) * 10**7 + i * 10**6 for i, s in enumerate(inp.stake)]
    inp = dataclasses.replace(
        inp, stake=stake, params=dataclasses.replace(inp.params, owner_uid=None)
    )
    perm = list(range(n))
    rnd.shuffle(perm)  # new uid of old uid i is perm[i]
    inverse = [perm.index(k) for k in range(n)]

    def move_rows(rows):
        return [sorted((perm[j], v) for j, v in rows[inverse[k]] if j < n) for k in range(n)]

    permit = [inp.validator_permit[i] if i < len(inp.validator_permit) else False for i in range(n)]
    moved = dataclasses.replace(
        inp,
        stake=[stake[inverse[k]] for k in range(n)],
        last_update=[inp.last_update[inverse[k]] for k in range(n)],
        block_at_registration=[inp.block_at_registration[inverse[k]] for k in range(n)],
        validator_permit=[permit[inverse[k]] for k in range(n)],
        weights=move_rows(inp.weights),
        bonds=move_rows(inp.bonds),
        commit_block=None
        if inp.commit_block is None
        else [inp.commit_block[inverse[k]] for k in range(n)],
    )
    a, b = run_epoch(inp), run_epoch(moved)
    for name in (
        "incentive",
        "dividends",
        "consensus",
        "validator_trust",
        "validator_permit",
        "active",
    ):
        va, vb = getattr(a, name), getattr(b, name)
        assert [vb[perm[i]] for i in range(n)] == va, name
    assert [sorted((inverse[j], v) for j, v in b.bonds[perm[i]]) for i in range(n)] == a.bonds


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 65535), min_size=3, max_size=3),
    st.lists(st.integers(0, 65535), min_size=3, max_size=3),
    st.sampled_from(["yuma3", "classic"]),
    st.lists(st.integers(0, 65535), min_size=3, max_size=3),
    st.lists(st.integers(0, 65535), min_size=3, max_size=3),
)
def test_agreeing_with_consensus_never_earns_less(
    honest: list[int], deviant: list[int], variant: str, shared: list[int], other: list[int]
) -> None:
    # v0 and v1 vote the same, v2 deviates; equal stake, and v0 and v2 hold equal old bonds
    # (v1's are arbitrary): v0 ≥ v2 in dividends. Why: with 2 of 3 equal stakes agreeing the
    # median is the honest vote, so v0's clipped weights dominate v2's entry by entry, hence its
    # new bonds (same EMA, same old bonds) and its share of every column.
    miners = [3, 4, 5]
    bonds = [
        list(zip(miners, shared, strict=True)),
        list(zip(miners, other, strict=True)),
        list(zip(miners, shared, strict=True)),
        [],
        [],
        [],
    ]
    weights = [
        list(zip(miners, honest, strict=True)),
        list(zip(miners, honest, strict=True)),
        list(zip(miners, deviant, strict=True)),
        [],
        [],
        [],
    ]
    out = run_epoch(make_input([TAO, TAO, TAO, 0, 0, 0], weights, variant=variant, bonds=bonds))
    assert out.dividends[0] >= out.dividends[2]
    assert out.validator_trust[0] >= out.validator_trust[2]


def _cli(payload: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crucible.chain.yuma"],
        input=payload,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def _payload(inp: EpochInput) -> dict:
    return {
        "variant": inp.variant,
        "block": inp.block,
        "params": dataclasses.asdict(inp.params),
        "stake": list(inp.stake),
        "last_update": list(inp.last_update),
        "block_at_registration": list(inp.block_at_registration),
        "validator_permit": list(inp.validator_permit),
        "weights": [[list(e) for e in row] for row in inp.weights],
        "bonds": [[] for _ in inp.weights],
    }


def test_json_cli_round_trips_an_epoch() -> None:
    inp = make_input([TAO, 3 * TAO, 0], [[(2, 65535)], [(2, 65535)], []])
    result = _cli(json.dumps(_payload(inp)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == run_epoch(inp).to_json()


def test_json_cli_rejects_bad_input_clearly() -> None:
    assert _cli("not json").returncode == 2
    deep = _cli("[" * 100_000)
    assert deep.returncode == 2 and deep.stderr.count("\n") == 1, deep.stderr
    assert "block is missing" in _cli(json.dumps({"variant": "yuma3"})).stderr
    payload = _payload(make_input([TAO, 0], [[(1, 65535)], []]))
    for key, value, phrase in [
        ("variant", "yuma9", "variant"),
        ("stake", [1, -1], "stake"),
        ("stake", [2**64, 0], "stake[0]"),
        ("params", {"kappa": 1}, "params.bonds_penalty is missing"),
        ("weights", [[[1, 70000]], []], "weights[0][0]"),
        ("weights", [[[1, 5], [1, 6]], []], "destination uid twice"),
        ("last_update", [1], "last_update has 1 entries"),
    ]:
        bad = _cli(json.dumps({**payload, key: value}))
        assert bad.returncode == 2 and phrase in bad.stderr, (key, bad.stderr)
