"""A hostile subnet owner (or operator) cannot break the local chain through hyperparameters.

Values found when tried as an attacker would — ``bonds_moving_average=1e20`` (and overflowing
``activity_cutoff_factor_milli``, ``min_burn_rao``, ``commit_reveal_period``) killed the block
clock; ``owner_cut=1e6`` minted 13.2 TAO a block with negative emission; ``kappa=70000`` and
``tempo=0`` were accepted. Each is now refused with subtensor's rule named, nothing changes, and
the chain keeps producing blocks and paying exactly what it issues.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from bittensor_core import Keypair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.chain.hyperparameters import RULES, genesis_refusal, refusal
from crucible.chain.interface import DevFaucet, Hyperparameters, SetHyperparameter, SetWeights
from crucible.chain.local.node import LocalNode, NodeConfig, dev_root_coldkey
from crucible.protocol.errors import ConfigError
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair

ROOT = Keypair.create_from_uri("//Alice")

# (param, value, code, key phrase of the message) — what the subnet owner sends
OWNER_ATTACKS = [
    ("bonds_moving_average", 10**20, "hyperparameter_out_of_range", "a u64 holds 0..9223372"),
    ("bonds_moving_average", 975_001, "hyperparameter_out_of_range", "may set 0..975000"),
    ("activity_cutoff_factor_milli", 2**40, "hyperparameter_out_of_range", "a u32 holds"),
    ("activity_cutoff_factor_milli", 50_001, "hyperparameter_out_of_range", "1000..50000"),
    ("activity_cutoff_factor_milli", 999, "hyperparameter_out_of_range", "1000..50000"),
    ("min_burn_rao", 10**20, "hyperparameter_out_of_range", "a u64 holds"),
    ("commit_reveal_period", 2**64, "hyperparameter_out_of_range", "a u64 holds"),
    ("commit_reveal_period", 2**40, "hyperparameter_out_of_range", "1..100"),
    ("commit_reveal_period", 0, "hyperparameter_out_of_range", "1..100"),
    ("owner_cut", 10**6, "hyperparameter_out_of_range", "a u16 holds 0..65535"),
    ("owner_cut", 65535, "root_only", "sudo_set_subnet_owner_cut"),
    ("kappa", 70_000, "hyperparameter_out_of_range", "kappa=70000 is out of range: a u16 holds"),
    ("kappa", 40_000, "root_only", "sudo_set_kappa"),
    ("tempo", 0, "hyperparameter_out_of_range", "may set 360..50400"),
    ("tempo", 99, "hyperparameter_out_of_range", "may set 360..50400"),
    ("max_allowed_validators", 3, "root_only", "sudo_set_max_allowed_validators"),
    ("weights_rate_limit", 0, "root_only", "root only"),
    ("registration_allowed", False, "root_only", "root only"),
    ("alpha_low", 1000, "hyperparameter_out_of_range", "1638..65535"),
    ("alpha_low", 60_000, "hyperparameter_out_of_range", "must not exceed alpha_high"),
    ("alpha_sigmoid_steepness", -1, "hyperparameter_out_of_range", "0..32767"),
    ("burn_half_life", 0, "hyperparameter_out_of_range", "1..36100"),
    ("burn_increase_mult_milli", 10**9, "hyperparameter_out_of_range", "1000..3000"),
    ("max_burn_rao", 1000, "hyperparameter_out_of_range", "100000001.."),
    ("min_burn_rao", 200 * TAO, "hyperparameter_out_of_range", "0..999999999"),
    ("max_allowed_uids", 10, "hyperparameter_out_of_range", "may set 64..256"),
    ("immunity_period", 2**16, "hyperparameter_out_of_range", "0..65535"),
    ("commit_reveal_enabled", 1, "malformed", "is a bool"),
    ("immunity_period", True, "malformed", "is an integer"),
    ("bonds_moving_average", 1e20, "malformed", "is an integer"),
    ("tempo", "360", "malformed", "is an integer"),
    ("nope", 1, "unknown_hyperparameter", "not a hyperparameter"),
]


def _set(node: LocalNode, signer, param: str, value):
    return node.submit(SetHyperparameter(netuid=1, param=param, value=value), signer)


@pytest.mark.parametrize(("param", "value", "code", "phrase"), OWNER_ATTACKS)
def test_owner_values_outside_subtensors_rules_are_refused(
    node, owner, param, value, code, phrase
) -> None:
    before, nonce = node.hyperparameters(1), node.nonce(owner.ss58_address)
    result = _set(node, owner, param, value)
    assert not result.ok and result.code == code, result
    assert phrase in result.message
    assert node.hyperparameters(1) == before and node.nonce(owner.ss58_address) == nonce


@pytest.mark.parametrize(
    ("param", "value", "phrase"),
    [
        ("kappa", 70_000, "a u16 holds 0..65535"),
        ("owner_cut", 10**6, "a u16 holds 0..65535"),
        ("tempo", 0, "root may set 1..65535"),
        ("bonds_moving_average", 1_000_001, "root may set 0..1000000"),
        ("bonds_moving_average", 10**20, "a u64 holds"),
        ("stake_threshold_rao", 2**63, "0..9223372036854775807"),
        ("activity_cutoff_factor_milli", 50_001, "1000..50000"),
    ],
)
def test_root_is_bounded_too(node, param, value, phrase) -> None:
    before = node.hyperparameters(1)
    result = _set(node, ROOT, param, value)
    assert result.code == "hyperparameter_out_of_range" and phrase in result.message
    assert node.hyperparameters(1) == before


def test_root_sets_root_only_parameters_and_the_owner_its_own(node, owner) -> None:
    assert node.config.root_coldkey == ROOT.ss58_address == dev_root_coldkey()
    for param, value in [("kappa", 40_000), ("owner_cut", 0), ("tempo", 20)]:
        assert _set(node, ROOT, param, value).ok
    for param, value in [("bonds_moving_average", 975_000), ("tempo", 360), ("alpha_low", 1638)]:
        assert _set(node, owner, param, value).ok
    hp = node.hyperparameters(1)
    assert (hp.kappa, hp.owner_cut, hp.tempo, hp.bonds_moving_average, hp.alpha_low) == (
        40_000,
        0,
        360,
        975_000,
        1638,
    )
    stranger = keypair("hp-stranger")
    assert _set(node, stranger, "immunity_period", 1).code == "not_subnet_owner"


def _issued(node: LocalNode) -> int:
    """Every rao the chain holds: free balances plus stake."""
    db = node._db  # read-only audit of the whole ledger
    with node._lock:
        balances = db.execute("SELECT COALESCE(SUM(balance), 0) FROM accounts").fetchone()[0]
        stake = db.execute("SELECT COALESCE(SUM(amount), 0) FROM stake").fetchone()[0]
        pending = db.execute(
            "SELECT pending_server + pending_validator + pending_owner FROM subnets"
        ).fetchone()[0]
    return balances + stake + pending


def test_after_every_attack_the_chain_keeps_producing_and_issues_exactly_its_emission(
    node, owner, neuron_factory
) -> None:
    v = neuron_factory("hp-validator", stake_tao=100)
    m = neuron_factory("hp-miner")
    node.step(10)
    for param, value, _, _ in OWNER_ATTACKS:
        _set(node, owner, param, value)
    # even root's most extreme owner cut cannot mint: the cut is at most the block's emission
    assert _set(node, ROOT, "owner_cut", 65535).ok
    node.submit(SetWeights(netuid=1, uids=(m.uid,), values=(65535,)), v.hotkey).raise_for_failure()
    start_block, start_issued = node.block(), _issued(node)
    node.step(30)  # three epochs
    assert node.health().ok and node.block() == start_block + 30
    # 1 TAO a block, all of it to the owner: nothing more, nothing negative
    assert _issued(node) - start_issued == 30 * node.config.emission_per_block_rao
    mg = node.metagraph(1)
    assert all(n.emission_rao >= 0 for n in mg.neurons)


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"kappa": 70_000}, "kappa=70000 is out of range: a u16 holds 0..65535"),
        ({"tempo": 0}, "tempo=0 is out of range: root may set 1..65535"),
        ({"bonds_moving_average": 2_000_000}, "root may set 0..1000000"),
        ({"owner_cut": 10**6}, "owner_cut=1000000 is out of range"),
        ({"tempo": "10"}, "tempo is an integer"),
        ({"alpha_low": 60_000}, "must not exceed alpha_high"),
        ({"min_burn_rao": 600_000_000, "max_burn_rao": 500_000_000}, "below max_burn_rao"),
    ],
)
def test_node_config_out_of_bounds_is_refused_at_creation(change, phrase) -> None:
    with pytest.raises(ConfigError, match="cannot start with these hyperparameters") as info:
        NodeConfig(
            owner_coldkey="x", hyperparameters=dataclasses.replace(Hyperparameters(), **change)
        )
    assert phrase in str(info.value)


def test_node_config_refuses_settings_the_chain_cannot_store() -> None:
    with pytest.raises(ConfigError, match="emission_per_block_rao=.* must be an integer"):
        NodeConfig(emission_per_block_rao=2**64)
    with pytest.raises(ConfigError, match="netuid=-1"):
        NodeConfig(netuid=-1)


def test_apply_hyperparameters_as_root_changes_only_what_differs(node) -> None:
    node.step(3)
    changed = node.apply_hyperparameters(1, {"tempo": 25, "kappa": 40_000, "immunity_period": 20})
    assert changed == {"tempo": (10, 25), "kappa": (32767, 40_000)}  # immunity was already 20
    hp = node.hyperparameters(1)
    assert (hp.tempo, hp.kappa, hp.immunity_period) == (25, 40_000, 20)
    assert node.apply_hyperparameters(1, {"tempo": 25}) == {}
    # a tempo change restarts the cycle, as set_tempo does: the next epoch is 25 blocks later
    version = node.state_version
    node.step(24)
    assert (
        all(n.last_update <= 4 for n in node.metagraph(1).neurons) and version < node.state_version
    )


def test_apply_hyperparameters_is_all_or_nothing(node) -> None:
    before = node.hyperparameters(1)
    with pytest.raises(ConfigError, match="kappa=70000 is out of range") as info:
        node.apply_hyperparameters(1, {"tempo": 30, "kappa": 70_000})
    assert info.value.code == "hyperparameter_out_of_range"
    with pytest.raises(ConfigError, match="not a hyperparameter") as unknown:
        node.apply_hyperparameters(1, {"tempo": 30, "bogus": 1})
    assert unknown.value.code == "unknown_hyperparameter"
    assert node.hyperparameters(1) == before


def test_root_key_survives_a_restart(tmp_path: Path, owner) -> None:
    other_root = keypair("custom-root")
    cfg = NodeConfig(
        owner_coldkey=owner.ss58_address,
        hyperparameters=TEST_HYPERPARAMETERS,
        root_coldkey=other_root.ss58_address,
    )
    LocalNode(tmp_path / "n", cfg).close()
    node = LocalNode(tmp_path / "n", NodeConfig(owner_coldkey=owner.ss58_address))
    try:
        assert node.config.root_coldkey == other_root.ss58_address
        node.submit(DevFaucet(amount_rao=TAO), other_root).raise_for_failure()
        assert _set(node, other_root, "kappa", 1).ok
        assert _set(node, ROOT, "kappa", 2).code == "not_subnet_owner"
    finally:
        node.close()


def test_the_rules_cover_every_hyperparameter_and_owner_bounds_sit_inside_roots() -> None:
    fields = {f.name for f in dataclasses.fields(Hyperparameters)}
    assert set(RULES) == fields
    assert genesis_refusal(Hyperparameters()) is None
    assert genesis_refusal(TEST_HYPERPARAMETERS) is None
    for name, rule in RULES.items():
        if rule.kind == "bool":
            continue
        (rlo, rhi), (olo, ohi) = rule.bounds("root"), rule.bounds("owner")
        assert rlo <= olo <= ohi <= rhi, name
        default = getattr(Hyperparameters(), name)
        origin = "root" if rule.setter == "root" else "owner"
        assert refusal(Hyperparameters(), {name: default}, origin=origin) is None, name


def _root_values() -> st.SearchStrategy[tuple[str, object]]:
    def values(name: str) -> st.SearchStrategy[object]:
        rule = RULES[name]
        if rule.kind == "bool":
            return st.booleans()
        lo, hi = rule.bounds("root")
        return st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi))

    return st.sampled_from(sorted(RULES)).flatmap(lambda n: st.tuples(st.just(n), values(n)))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(_root_values(), min_size=1, max_size=6))
def test_no_value_root_may_set_stops_the_clock(owner, changes) -> None:
    overrides = dict(changes)
    with tempfile.TemporaryDirectory() as tmp:
        node = LocalNode(
            tmp, NodeConfig(owner_coldkey=owner.ss58_address, hyperparameters=TEST_HYPERPARAMETERS)
        )
        try:
            validator, vcold = keypair("fz-validator-hot"), keypair("fz-validator-cold")
            node.submit(DevFaucet(amount_rao=1000 * TAO), vcold).raise_for_failure()
            from crucible.chain.interface import AddStake, BurnedRegister

            node.submit(
                BurnedRegister(netuid=1, hotkey=validator.ss58_address), vcold
            ).raise_for_failure()
            node.submit(
                AddStake(netuid=1, hotkey=validator.ss58_address, amount_rao=100 * TAO), vcold
            ).raise_for_failure()
            if refusal(node.hyperparameters(1), overrides, origin="root", n_uids=1) is not None:
                with pytest.raises(ConfigError):
                    node.apply_hyperparameters(1, overrides)
                return
            node.apply_hyperparameters(1, overrides)
            node.submit(SetWeights(netuid=1, uids=(0,), values=(65535,)), validator)
            start = _issued(node)
            node.step(25)  # two epochs at the test tempo, or none at a long one: never a failure
            assert node.health().ok and node.health().total_failed_blocks == 0
            # never more than the emission (some is burned when no one can receive it)
            assert 0 <= _issued(node) - start <= 25 * node.config.emission_per_block_rao
        finally:
            node.close()
