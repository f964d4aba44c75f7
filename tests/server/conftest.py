"""Keys and a real local chain for the server tests: a server hotkey, a validator (permit +
stake), a miner (registered, no permit, no stake) and a stranger (never registered)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from bittensor_core import Keypair

from crucible.chain.interface import AddStake, BurnedRegister, Chain, DevFaucet
from crucible.chain.local.node import LocalNode, NodeConfig
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair


@dataclass(frozen=True)
class Net:
    chain: Chain
    netuid: int
    server_kp: Keypair
    validator_kp: Keypair
    miner_kp: Keypair
    stranger_kp: Keypair
    min_stake_rao: int

    def uid_of(self, kp: Keypair) -> int | None:
        return self.chain.metagraph(self.netuid).uid_of(kp.ss58_address)


@contextmanager
def open_net(path: Path) -> Iterator[Net]:
    """A fresh chain in ``path`` with the four keys of ``Net``; closed on exit."""
    owner = keypair("owner-coldkey")
    node = LocalNode(
        path, NodeConfig(owner_coldkey=owner.ss58_address, hyperparameters=TEST_HYPERPARAMETERS)
    )
    coldkey = keypair("server-tests-coldkey")
    node.submit(DevFaucet(amount_rao=10_000 * TAO), coldkey).raise_for_failure()
    server_kp, validator_kp, miner_kp = (
        keypair(f"server-tests-{r}") for r in ("server", "validator", "miner")
    )
    for kp in (server_kp, validator_kp, miner_kp):
        node.submit(
            BurnedRegister(netuid=node.netuid, hotkey=kp.ss58_address), coldkey
        ).raise_for_failure()
    node.submit(
        AddStake(netuid=node.netuid, hotkey=validator_kp.ss58_address, amount_rao=100 * TAO),
        coldkey,
    ).raise_for_failure()
    node.step(TEST_HYPERPARAMETERS.tempo)  # an epoch hands the staked validator its permit
    mg = node.metagraph(node.netuid)
    assert mg.by_hotkey(validator_kp.ss58_address).validator_permit
    assert not mg.by_hotkey(miner_kp.ss58_address).validator_permit
    try:
        yield Net(
            node,
            node.netuid,
            server_kp,
            validator_kp,
            miner_kp,
            keypair("server-tests-stranger"),
            10**9,
        )
    finally:
        node.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with open_net(Path(tmp_path_factory.mktemp("server-chain"))) as opened:
        yield opened
