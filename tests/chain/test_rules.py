"""The local chain's rules: registration, pruning, weights, commit-reveal, epochs, forged input."""

from __future__ import annotations

import dataclasses

from crucible.chain.interface import (
    AddStake,
    BurnedRegister,
    CommitWeights,
    DevFaucet,
    RevealWeights,
    SetCommitment,
    SetHyperparameter,
    SetWeights,
)
from crucible.chain.local.extrinsic import SignedExtrinsic, sign_call
from crucible.chain.local.runtime import weights_commit_hash
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair


def snapshot(node):
    mg = node.metagraph(node.netuid)
    return (mg.neurons, dict(mg.weights), node.commitments(node.netuid))


def test_registration_burns_and_raises_the_price(node) -> None:
    coldkey = keypair("reg-coldkey")
    node.submit(DevFaucet(amount_rao=100 * TAO), coldkey).raise_for_failure()
    first = node.submit(BurnedRegister(netuid=1, hotkey=keypair("h1").ss58_address), coldkey)
    second = node.submit(BurnedRegister(netuid=1, hotkey=keypair("h2").ss58_address), coldkey)
    # burn starts at 1 TAO and is multiplied by 1.26 after each registration (spec §8)
    assert first.data["burn_rao"] == TAO and second.data["burn_rao"] == 1_260_000_000
    assert node.balance(coldkey.ss58_address) == 100 * TAO - TAO - 1_260_000_000
    node.step(360)  # the price halves every 360 blocks (half-life), towards the floor
    third = node.submit(BurnedRegister(netuid=1, hotkey=keypair("h3").ss58_address), coldkey)
    assert abs(third.data["burn_rao"] - 1_260_000_000 * 1.26 / 2) < 1e4


def test_registration_without_funds_changes_nothing(node) -> None:
    poor = keypair("poor-coldkey")
    before = snapshot(node)
    result = node.submit(BurnedRegister(netuid=1, hotkey=keypair("poor-hotkey").ss58_address), poor)
    assert not result.ok and result.code == "insufficient_balance"
    assert snapshot(node) == before and node.nonce(poor.ss58_address) == 0


def test_full_subnet_prunes_the_lowest_emission_non_immune_uid(
    node_factory, neuron_factory
) -> None:
    hp = dataclasses.replace(TEST_HYPERPARAMETERS, max_allowed_uids=3, immunity_period=5)
    node = node_factory(hp, min_non_immune_uids=0)
    neurons = [neuron_factory(f"p{i}", chain=node) for i in range(3)]
    # everyone is immune right after registering: the oldest immune, lowest uid goes first
    node.step(10)  # past immunity; an epoch ran, all with zero emission
    newcomer = neuron_factory("p-new", chain=node)
    assert newcomer.uid == 0  # ties on emission → oldest registration → lowest uid
    mg = node.metagraph(1)
    assert mg.neurons[0].hotkey == newcomer.hotkey.ss58_address
    assert mg.neurons[0].block_at_registration == node.block() + 1
    # while the newcomer is immune and others are not, the next one replaces a non-immune uid
    second = neuron_factory("p-new2", chain=node)
    assert second.uid in (1, 2) and neurons[0].uid == 0


def test_weight_rules(node, neuron_factory) -> None:
    v = neuron_factory("validator", stake_tao=100)
    m = neuron_factory("miner")
    node.step(10)  # epoch: the staked neuron receives a validator permit
    assert node.metagraph(1).neurons[v.uid].validator_permit

    def weights(uids, values, version_key=0):
        return node.submit(
            SetWeights(netuid=1, uids=tuple(uids), values=tuple(values), version_key=version_key),
            v.hotkey,
        )

    assert weights([m.uid, m.uid], [1, 2]).code == "duplicate_uids"
    assert weights([m.uid, 9], [1, 2]).code == "uid_not_found"
    assert weights([m.uid], [1, 2]).code == "length_mismatch"
    owner = keypair("owner-coldkey")
    node.submit(
        SetHyperparameter(netuid=1, param="weights_version", value=7), owner
    ).raise_for_failure()
    assert weights([m.uid], [100], version_key=3).code == "version_key_too_low"
    assert weights([m.uid], [100], version_key=7).ok
    # stored max-upscaled: the largest value becomes 65535
    assert node.metagraph(1).weights[v.uid] == {m.uid: 65535}
    assert weights([m.uid], [100], version_key=7).code == "rate_limited"
    # the miner has no permit: only a self-weight is allowed
    no_permit = node.submit(
        SetWeights(netuid=1, uids=(v.uid,), values=(1,), version_key=7), m.hotkey
    )
    assert no_permit.code in ("no_validator_permit", "rate_limited")
    node.step(3)
    assert (
        node.submit(SetWeights(netuid=1, uids=(v.uid,), values=(1,), version_key=7), m.hotkey).code
        == "no_validator_permit"
    )
    assert node.submit(SetWeights(netuid=1, uids=(m.uid,), values=(1,), version_key=7), m.hotkey).ok
    node.submit(
        SetHyperparameter(netuid=1, param="min_allowed_weights", value=2), owner
    ).raise_for_failure()
    assert weights([m.uid], [5], version_key=7).code == "below_min_weights"


def test_only_the_owner_sets_hyperparameters(node) -> None:
    stranger = keypair("stranger")
    node.submit(DevFaucet(amount_rao=TAO), stranger)
    result = node.submit(SetHyperparameter(netuid=1, param="tempo", value=99), stranger)
    assert result.code == "not_subnet_owner" and node.hyperparameters(1).tempo == 10
    unknown = node.submit(
        SetHyperparameter(netuid=1, param="nope", value=1), keypair("owner-coldkey")
    )
    assert unknown.code == "unknown_hyperparameter"


def test_commit_reveal(node_factory, neuron_factory) -> None:
    node = node_factory(dataclasses.replace(TEST_HYPERPARAMETERS, commit_reveal_enabled=True))
    v = neuron_factory("cr-validator", stake_tao=100, chain=node)
    m = neuron_factory("cr-miner", chain=node)
    node.step(10)
    direct = node.submit(SetWeights(netuid=1, uids=(m.uid,), values=(65535,)), v.hotkey)
    assert direct.code == "commit_reveal_enabled"
    salt = (1, 2, 3)
    digest = weights_commit_hash(v.hotkey.ss58_address, 1, [m.uid], [65535], list(salt), 0)
    committed = node.submit(CommitWeights(netuid=1, commit_hash=digest), v.hotkey)
    assert committed.ok, committed.message
    reveal = RevealWeights(netuid=1, uids=(m.uid,), values=(65535,), salt=salt)
    assert node.submit(reveal, v.hotkey).code == "reveal_too_early"
    wrong = RevealWeights(netuid=1, uids=(m.uid,), values=(65535,), salt=(9,))
    node.step(10)  # next epoch: the reveal window
    assert node.submit(wrong, v.hotkey).code == "no_matching_commit"
    assert node.submit(reveal, v.hotkey).ok
    assert node.metagraph(1).weights[v.uid] == {m.uid: 65535}
    # a commit left unrevealed past its window expires
    digest2 = weights_commit_hash(v.hotkey.ss58_address, 1, [m.uid], [1], [4], 0)
    node.step(3)
    node.submit(CommitWeights(netuid=1, commit_hash=digest2), v.hotkey).raise_for_failure()
    node.step(25)
    late = node.submit(RevealWeights(netuid=1, uids=(m.uid,), values=(1,), salt=(4,)), v.hotkey)
    assert late.code in ("reveal_expired", "no_matching_commit")


def test_epoch_pays_miners_validators_and_owner(node, neuron_factory) -> None:
    v = neuron_factory("pay-validator", stake_tao=100)
    m1, m2 = neuron_factory("pay-m1"), neuron_factory("pay-m2")
    node.step(10)  # first epoch: permits granted, emission falls back to stake
    node.step(2)
    node.submit(
        SetWeights(netuid=1, uids=(m1.uid, m2.uid), values=(65535, 21845)), v.hotkey
    ).raise_for_failure()
    before = {n.hotkey: n.stake_rao for n in node.metagraph(1).neurons}
    owner_before = node.balance(keypair("owner-coldkey").ss58_address)
    node.step(10 - node.block() % 10)  # run to the next epoch
    mg = node.metagraph(1)
    gained = {n.uid: n.stake_rao - before[n.hotkey] for n in mg.neurons}
    # 10 blocks × 1 TAO; owner cut 11796/65535 per block; the rest split miners/validators
    per_block_cut = 10**9 * 11796 // 65535
    rest = 10 * (10**9 - per_block_cut)
    assert gained[m1.uid] > gained[m2.uid] > 0  # incentive 0.75 / 0.25
    assert abs(gained[m1.uid] + gained[m2.uid] - rest // 2) < 10
    assert abs(gained[v.uid] - (rest - rest // 2)) < 10
    assert node.balance(keypair("owner-coldkey").ss58_address) - owner_before == 10 * per_block_cut
    assert mg.neurons[m1.uid].incentive > mg.neurons[m2.uid].incentive
    assert mg.neurons[v.uid].dividends > 0.99


def test_forged_replayed_and_miskeyed_extrinsics_change_nothing(node, neuron_factory) -> None:
    n = neuron_factory("victim")
    before = snapshot(node)
    call = SetCommitment(netuid=1, data="tiny-v1:x")
    good = sign_call(call, n.hotkey, nonce=node.nonce(n.hotkey.ss58_address), genesis=node.genesis)
    # forged: signed by another key but claiming the victim as signer
    forged = sign_call(call, keypair("attacker"), nonce=good.nonce, genesis=node.genesis)
    forged = SignedExtrinsic(**{**forged.to_json(), "signer": n.hotkey.ss58_address})
    assert node.submit_extrinsic(forged).code == "bad_signature"
    # tampered after signing
    tampered = SignedExtrinsic(**{**good.to_json(), "params": {"netuid": 1, "data": "evil"}})
    assert node.submit_extrinsic(tampered).code == "bad_signature"
    # another chain's genesis
    other = sign_call(call, n.hotkey, nonce=good.nonce, genesis="0x" + "11" * 32)
    assert node.submit_extrinsic(other).code == "wrong_chain"
    # garbage signature
    garbage = SignedExtrinsic(**{**good.to_json(), "signature": "0xzz"})
    assert node.submit_extrinsic(garbage).code == "bad_signature"
    # mis-keyed: a hotkey call signed with the neuron's coldkey
    assert node.submit(call, n.coldkey).code == "wrong_signer"
    assert (
        node.submit(AddStake(netuid=1, hotkey=n.hotkey.ss58_address, amount_rao=1), n.hotkey).code
        == "wrong_signer"
    )
    assert snapshot(node) == before
    # the genuine one goes through once; replaying the same bytes answers its recorded result
    # (flagged duplicate) and changes nothing; the same call signed again is a spent nonce
    first = node.submit_extrinsic(good)
    assert first.ok and not first.duplicate
    after = snapshot(node)
    replay = node.submit_extrinsic(good)
    assert replay.ok and replay.duplicate and replay.block == first.block
    assert replay.digest == first.digest == good.digest()
    resigned = sign_call(call, n.hotkey, nonce=good.nonce, genesis=node.genesis)
    again = node.submit_extrinsic(resigned)
    assert not again.ok and again.code == "bad_nonce" and "already used" in again.message
    assert snapshot(node) == after and node.nonce(n.hotkey.ss58_address) == good.nonce + 1
