"""A weights version key is checked as subtensor's ``check_version_key`` does.

``network_key == 0 or key >= network_key``: once the subnet's key is 7, a validator on old code
(key 6) or one sending key 0 cannot set weights; at network key 0 any key passes. Both the direct
path (``set_weights``) and the commit-reveal path (``reveal_weights``) apply it.
"""

from __future__ import annotations

import dataclasses

import pytest

from crucible.chain.interface import CommitWeights, RevealWeights, SetHyperparameter, SetWeights
from crucible.chain.weights import weights_commit_hash
from tests.conftest import TEST_HYPERPARAMETERS


def _set_network_key(node, owner, key: int) -> None:
    if key:
        node.submit(
            SetHyperparameter(netuid=1, param="weights_version", value=key), owner
        ).raise_for_failure()


@pytest.mark.parametrize(
    ("network_key", "key", "accepted"),
    [
        (7, 0, False),
        (7, 6, False),
        (7, 7, True),
        (7, 8, True),
        (0, 0, True),
        (0, 1, True),
        (0, 2**63 - 1, True),
    ],
)
def test_set_weights_version_key_boundary(
    node, owner, neuron_factory, network_key, key, accepted
) -> None:
    v = neuron_factory("vk-validator", stake_tao=100)
    m = neuron_factory("vk-miner")
    node.step(10)  # an epoch grants the permit
    _set_network_key(node, owner, network_key)
    result = node.submit(
        SetWeights(netuid=1, uids=(m.uid,), values=(65535,), version_key=key), v.hotkey
    )
    if accepted:
        assert result.ok, result.message
        assert node.metagraph(1).weights[v.uid] == {m.uid: 65535}
    else:
        assert result.code == "version_key_too_low"
        assert f"version_key {key} is below the subnet's {network_key}" in result.message
        assert v.uid not in node.metagraph(1).weights


@pytest.mark.parametrize(("key", "accepted"), [(0, False), (6, False), (7, True), (8, True)])
def test_reveal_version_key_boundary(node_factory, owner, neuron_factory, key, accepted) -> None:
    node = node_factory(dataclasses.replace(TEST_HYPERPARAMETERS, commit_reveal_enabled=True))
    v = neuron_factory("vkr-validator", stake_tao=100, chain=node)
    m = neuron_factory("vkr-miner", chain=node)
    node.step(10)
    _set_network_key(node, owner, 7)
    salt = [3, 1, 4]
    digest = weights_commit_hash(v.hotkey.ss58_address, 1, [m.uid], [65535], salt, key)
    node.submit(CommitWeights(netuid=1, commit_hash=digest), v.hotkey).raise_for_failure()
    node.step(10)  # the reveal epoch
    result = node.submit(
        RevealWeights(netuid=1, uids=(m.uid,), values=(65535,), salt=tuple(salt), version_key=key),
        v.hotkey,
    )
    if accepted:
        assert result.ok, result.message
        assert node.metagraph(1).weights[v.uid] == {m.uid: 65535}
    else:
        assert result.code == "version_key_too_low"
        assert v.uid not in node.metagraph(1).weights
