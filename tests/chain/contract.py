"""Chain contract: behaviour every ``Chain`` backend must show, through the interface alone.

A backend's test module subclasses ``ChainContract`` and provides three fixtures: ``chain`` (the
backend), ``funded_coldkey`` (a keypair able to pay a registration) and ``advance`` (a callable
producing N blocks, or waiting for them on a real network).
"""

from __future__ import annotations

import re

import pytest

from crucible.chain.interface import (
    BurnedRegister,
    Chain,
    ServeEndpoint,
    SetCommitment,
    SetWeights,
)
from crucible.protocol.errors import ChainError
from tests.conftest import keypair

HASH = re.compile(r"^0x[0-9a-f]{64}$")


class ChainContract:
    netuid = 1

    def register(self, chain: Chain, coldkey, name: str):
        hotkey = keypair(f"contract-{name}")
        result = chain.submit(
            BurnedRegister(netuid=self.netuid, hotkey=hotkey.ss58_address), coldkey
        )
        result.raise_for_failure()
        return hotkey

    def test_is_a_chain(self, chain: Chain) -> None:
        assert isinstance(chain, Chain)

    def test_blocks_advance_with_chained_unpredictable_hashes(self, chain: Chain, advance) -> None:
        start = chain.block()
        advance(2)
        assert chain.block() == start + 2
        hashes = [chain.block_hash(b) for b in range(start, start + 3)]
        assert all(HASH.match(h) for h in hashes) and len(set(hashes)) == 3
        with pytest.raises(ChainError):
            chain.block_hash(start + 1000)
        assert chain.wait_for_block(start + 2, timeout_s=1) >= start + 2

    def test_waiting_for_a_future_block_times_out(self, chain: Chain) -> None:
        with pytest.raises(ChainError, match="not reached"):
            chain.wait_for_block(chain.block() + 1000, timeout_s=0.2)

    def test_registration_shows_in_the_metagraph(self, chain: Chain, funded_coldkey) -> None:
        hotkey = self.register(chain, funded_coldkey, "reg")
        mg = chain.metagraph(self.netuid)
        neuron = mg.by_hotkey(hotkey.ss58_address)
        assert neuron is not None and neuron.coldkey == funded_coldkey.ss58_address
        assert mg.block == chain.block() and HASH.match(mg.block_hash)
        assert mg.hyperparameters == chain.hyperparameters(self.netuid)

    def test_registering_twice_is_refused(self, chain: Chain, funded_coldkey) -> None:
        hotkey = self.register(chain, funded_coldkey, "twice")
        again = chain.submit(
            BurnedRegister(netuid=self.netuid, hotkey=hotkey.ss58_address), funded_coldkey
        )
        assert not again.ok and again.code == "already_registered"

    def test_serve_and_commit_round_trip(self, chain: Chain, funded_coldkey) -> None:
        hotkey = self.register(chain, funded_coldkey, "serve")
        chain.submit(
            ServeEndpoint(netuid=self.netuid, ip="127.0.0.1", port=8091), hotkey
        ).raise_for_failure()
        chain.submit(
            SetCommitment(netuid=self.netuid, data="tiny-v1:local:abc:123"), hotkey
        ).raise_for_failure()
        neuron = chain.metagraph(self.netuid).by_hotkey(hotkey.ss58_address)
        assert neuron is not None and neuron.endpoint is not None
        assert (neuron.endpoint.ip, neuron.endpoint.port) == ("127.0.0.1", 8091)
        assert neuron.commitment is not None and neuron.commitment.data == "tiny-v1:local:abc:123"
        assert chain.commitments(self.netuid)[hotkey.ss58_address].data == "tiny-v1:local:abc:123"

    def test_commitment_over_128_bytes_is_refused(self, chain: Chain, funded_coldkey) -> None:
        hotkey = self.register(chain, funded_coldkey, "long")
        result = chain.submit(SetCommitment(netuid=self.netuid, data="x" * 129), hotkey)
        assert not result.ok and result.code == "commitment_too_long"
        assert hotkey.ss58_address not in chain.commitments(self.netuid)

    def test_unregistered_hotkey_cannot_commit_or_set_weights(self, chain: Chain) -> None:
        stranger = keypair("contract-stranger")
        assert (
            chain.submit(SetCommitment(netuid=self.netuid, data="x"), stranger).code
            == "not_registered"
        )
        result = chain.submit(SetWeights(netuid=self.netuid, uids=(0,), values=(65535,)), stranger)
        assert result.code == "not_registered"

    def test_weights_on_others_need_a_validator_permit(self, chain: Chain, funded_coldkey) -> None:
        a = self.register(chain, funded_coldkey, "nopermit-a")
        b = self.register(chain, funded_coldkey, "nopermit-b")
        other = chain.metagraph(self.netuid).uid_of(b.ss58_address)
        result = chain.submit(SetWeights(netuid=self.netuid, uids=(other,), values=(65535,)), a)
        assert not result.ok and result.code in ("no_validator_permit", "rate_limited")
