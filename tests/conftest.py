"""Shared fixtures: real sr25519 keys and a real local chain node (SQLite in a tmp dir).

``node`` is an in-process ``LocalNode`` with manual blocks, tempo 10, commit-reveal off and short
rate limits so scenarios run in a few blocks; ``neuron_factory`` registers funded neurons on it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bittensor_core import Keypair

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, Hyperparameters
from crucible.chain.local.node import LocalNode, NodeConfig

TAO = 10**9

# No test may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def keypair(name: str) -> Keypair:
    """A deterministic sr25519 keypair per name (fast: no mnemonic derivation)."""
    return Keypair.create_from_seed(hashlib.sha256(name.encode()).digest())


TEST_HYPERPARAMETERS = Hyperparameters(
    tempo=10,
    immunity_period=20,
    weights_rate_limit=2,
    commit_reveal_enabled=False,
    commitment_rate_limit=5,
    serving_rate_limit=2,
    max_allowed_validators=8,
)


@dataclass(frozen=True)
class TestNeuron:
    uid: int
    hotkey: Keypair
    coldkey: Keypair


@pytest.fixture
def owner() -> Keypair:
    return keypair("owner-coldkey")


@pytest.fixture
def node_factory(tmp_path: Path, owner: Keypair) -> Iterator[Callable[..., LocalNode]]:
    nodes: list[LocalNode] = []

    def make(
        hyperparameters: Hyperparameters = TEST_HYPERPARAMETERS, **config: object
    ) -> LocalNode:
        cfg = NodeConfig(
            owner_coldkey=owner.ss58_address, hyperparameters=hyperparameters, **config
        )
        node = LocalNode(tmp_path / f"node{len(nodes)}", cfg)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


@pytest.fixture
def node(node_factory: Callable[..., LocalNode]) -> LocalNode:
    return node_factory()


@pytest.fixture
def neuron_factory(node: LocalNode) -> Callable[..., TestNeuron]:
    def make(name: str, stake_tao: float = 0.0, *, chain: LocalNode | None = None) -> TestNeuron:
        target = chain or node
        coldkey, hotkey = keypair(f"{name}-coldkey"), keypair(f"{name}-hotkey")
        target.submit(
            DevFaucet(amount_rao=int((stake_tao + 1000) * TAO)), coldkey
        ).raise_for_failure()
        result = target.submit(
            BurnedRegister(netuid=target.netuid, hotkey=hotkey.ss58_address), coldkey
        )
        uid = result.raise_for_failure().data["uid"]
        if stake_tao > 0:
            target.submit(
                AddStake(
                    netuid=target.netuid,
                    hotkey=hotkey.ss58_address,
                    amount_rao=int(stake_tao * TAO),
                ),
                coldkey,
            ).raise_for_failure()
        return TestNeuron(uid=uid, hotkey=hotkey, coldkey=coldkey)

    return make
