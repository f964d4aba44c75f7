"""How the validator puts its weights on chain: directly, or commit then reveal when asked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from crucible.validator.runtime import ValidatorConfig, ValidatorRuntime
from crucible.validator.state import ValidatorState
from crucible.validator.submit import submit_weights, try_reveal
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
    assert submit_weights(rt, node.metagraph(1), {m.uid: 1.0}, state).startswith(
        "committed; reveal due in epoch"
    )
    assert state.pending_reveal is not None and v.uid not in node.metagraph(1).weights
    assert try_reveal(rt, state).startswith("reveal waiting") and state.pending_reveal is not None
    node.step(10)
    assert try_reveal(rt, state).startswith("revealed; landed at block")
    assert state.pending_reveal is None
    assert node.metagraph(1).weights[v.uid] == {m.uid: 65535}


def test_plain_subnet_sets_directly_and_never_sets_nothing(
    node, neuron_factory, tmp_path: Path
) -> None:
    v = neuron_factory("plain-v", stake_tao=100)
    m = neuron_factory("plain-m")
    node.step(10)
    rt, state = runtime(node, v.hotkey, tmp_path), ValidatorState()
    assert submit_weights(rt, node.metagraph(1), {}, state).startswith("skipped")
    outcome = submit_weights(rt, node.metagraph(1), {m.uid: 0.6, v.uid: 0.4}, state)
    assert outcome.startswith("set; landed at block"), outcome
    assert node.metagraph(1).weights[v.uid] == {v.uid: 43690, m.uid: 65535}
    assert submit_weights(rt, node.metagraph(1), {m.uid: 1.0}, state).startswith(
        "refused: rate_limited"
    )


def test_an_expired_reveal_is_reported_loudly_and_dropped(
    node_factory, neuron_factory, tmp_path: Path
) -> None:
    node = node_factory(dataclasses.replace(TEST_HYPERPARAMETERS, commit_reveal_enabled=True))
    v = neuron_factory("crx", stake_tao=100, chain=node)
    m = neuron_factory("crxm", chain=node)
    node.step(10)
    rt, state = runtime(node, v.hotkey, tmp_path), ValidatorState()
    assert submit_weights(rt, node.metagraph(1), {m.uid: 1.0}, state).startswith("committed")
    node.step(30)  # past the reveal epoch: a validator that was down through the window
    outcome = try_reveal(rt, state)
    assert outcome.startswith("REVEAL LOST: ") and "never landed" in outcome  # expired, or pruned
    assert state.pending_reveal is None


def test_a_validator_without_a_permit_is_told_why_before_anything_is_sent(
    node, neuron_factory, tmp_path: Path
) -> None:
    v = neuron_factory("no-permit-v")  # no stake: no permit after the epoch
    m = neuron_factory("no-permit-m")
    node.step(10)
    rt, state = runtime(node, v.hotkey, tmp_path), ValidatorState()
    outcome = submit_weights(rt, node.metagraph(1), {m.uid: 1.0}, state)
    assert outcome.startswith("refused before sending: no_validator_permit")
    assert "crucible stake add" in outcome and v.uid not in node.metagraph(1).weights
