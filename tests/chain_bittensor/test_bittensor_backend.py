"""The bittensor 11 backend: the Chain contract through the real SDK over a node-backed substrate.

Registration is the one write the SDK always sends MEV-shielded (an ML-KEM-768 encrypted carrier
the chain decrypts): the fake cannot decrypt it, so the contract's neurons are registered on the
node directly and ``test_registration_goes_through_the_mev_shield`` pins what the SDK does.
"""

from __future__ import annotations

import pytest

from crucible.chain.bittensor import BittensorChain, hyperparameters_from_sdk
from crucible.chain.interface import BurnedRegister, DevFaucet, SetWeights
from tests.chain.contract import ChainContract
from tests.chain_bittensor.node_substrate import NodeSubstrate
from tests.conftest import TAO, keypair


class TestBittensorBackend(ChainContract):
    @pytest.fixture(autouse=True)
    def _node(self, node):
        self.node = node

    @pytest.fixture
    def substrate(self, node):
        return NodeSubstrate(node)

    @pytest.fixture
    def chain(self, substrate):
        backend = BittensorChain("local", substrate=substrate, timeout_s=10, retries=0)
        yield backend
        backend.close()

    @pytest.fixture
    def advance(self, node):
        return node.step

    @pytest.fixture
    def funded_coldkey(self, node):
        coldkey = keypair("bt-contract-coldkey")
        node.submit(DevFaucet(amount_rao=10_000 * TAO), coldkey).raise_for_failure()
        return coldkey

    def register(self, chain, coldkey, name):
        hotkey = keypair(f"contract-{name}")
        self.node.submit(
            BurnedRegister(netuid=self.netuid, hotkey=hotkey.ss58_address), coldkey
        ).raise_for_failure()
        return hotkey

    def test_is_a_chain(self, chain) -> None:
        super().test_is_a_chain(chain)
        assert type(chain._client).__module__.startswith("bittensor")

    def test_registering_twice_is_refused(self, chain, funded_coldkey) -> None:
        hotkey = self.register(chain, funded_coldkey, "twice")
        assert (
            self.node.submit(
                BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), funded_coldkey
            ).code
            == "already_registered"
        )


def test_registration_goes_through_the_mev_shield(node, neuron_factory) -> None:
    coldkey = keypair("bt-shield-coldkey")
    node.submit(DevFaucet(amount_rao=100 * TAO), coldkey).raise_for_failure()
    backend = BittensorChain("local", substrate=NodeSubstrate(node), timeout_s=10, retries=0)
    try:
        result = backend.submit(
            BurnedRegister(netuid=1, hotkey=keypair("bt-shield-hotkey").ss58_address), coldkey
        )
    finally:
        backend.close()
    assert not result.ok and "MEV Shield" in result.message


def test_weights_go_through_the_sdk_preflight_and_reach_the_chain(node, neuron_factory) -> None:
    validator = neuron_factory("bt-validator", stake_tao=100)
    miner = neuron_factory("bt-miner")
    node.step(10)  # an epoch grants the permit
    substrate = NodeSubstrate(node)
    backend = BittensorChain("local", substrate=substrate, timeout_s=10, retries=0)
    try:
        ok = backend.submit(
            SetWeights(netuid=1, uids=(miner.uid,), values=(65535,), version_key=3),
            validator.hotkey,
        )
        assert ok.ok, ok.message
        assert substrate.submitted[-1][1] == "set_mechanism_weights"
        assert backend.metagraph(1).weights[validator.uid] == {miner.uid: 65535}
        # the SDK's own preflight refuses a second set inside the rate limit, with our code
        again = backend.submit(
            SetWeights(netuid=1, uids=(miner.uid,), values=(65535,)), validator.hotkey
        )
        assert not again.ok and again.code == "rate_limited"
        stranger = backend.submit(
            SetWeights(netuid=1, uids=(0,), values=(1,)), keypair("bt-stranger")
        )
        assert not stranger.ok and stranger.code == "not_registered"
    finally:
        backend.close()


def test_hyperparameters_map_from_the_sdk_names() -> None:
    hp = hyperparameters_from_sdk(
        {
            "tempo": 99,
            "max_validators": 7,
            "commit_reveal_weights_enabled": False,
            "yuma_version": 2,
            "bonds_moving_avg": 5,
        }
    )
    assert (
        hp.tempo,
        hp.max_allowed_validators,
        hp.commit_reveal_enabled,
        hp.yuma3_enabled,
        hp.bonds_moving_average,
    ) == (99, 7, False, False, 5)
