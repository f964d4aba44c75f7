"""How the validator puts its weights on chain: directly, or commit then reveal when asked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from crucible.validator.runtime import ValidatorConfig, ValidatorRuntime
from crucible.validator.submit import submit_weights
from crucible.validator.submit import try_reveal
from crucible.validator.state import ValidatorState
from tests.conftest import TEST_HYPERPARAMETERS


def runtime(chain, keypair, tmp_path: Path) -> ValidatorRuntime:
    return ValidatorRuntime(
        chain, keypair, ValidatorConfig(1, tmp_path), {}, {}, {}, resolve_store=lambda ref: None
    )


def test_commit_reveal_subnet_gets_a_commit_then_a_reveal_next_epoch(
    node_factory, neuron_factory, tmp_path: Path
) -> None:
    node = node_factory(dataclasses.replace(TEST_HYPERPARAMETERS, commit_reveal_enabled=True))
    v = neuron_factory("crv", stake_tao=100, chain=node)
    m = neuron_factory("crm", chain=node)
    node.step(10)
    rt, state = runtime(node, v.hotkey, tmp_path), ValidatorState()
    assert submit_weights(rt, node.metagraph(1), {m.uid: 1.0}, state) == "committed"
    assert state.pending_reveal is not None and v.uid not in node.metagraph(1).weights
    assert try_reveal(rt, state) == "reveal_too_early" and state.pending_reveal is not None
    node.step(10)
    assert try_reveal(rt, state) == "revealed" and state.pending_reveal is None
    assert node.metagraph(1).weights[v.uid] == {m.uid: 65535}


def test_plain_subnet_sets_directly_and_never_sets_nothing(
    node, neuron_factory, tmp_path: Path
) -> None:
    v = neuron_factory("plain-v", stake_tao=100)
    m = neuron_factory("plain-m")
    node.step(10)
    rt, state = runtime(node, v.hotkey, tmp_path), ValidatorState()
    assert submit_weights(rt, node.metagraph(1), {}, state).startswith("skipped")
    assert submit_weights(rt, node.metagraph(1), {m.uid: 0.6, v.uid: 0.4}, state) == "set"
    assert node.metagraph(1).weights[v.uid] == {v.uid: 43690, m.uid: 65535}
    assert submit_weights(rt, node.metagraph(1), {m.uid: 1.0}, state).startswith(
        "refused: rate_limited"
    )
