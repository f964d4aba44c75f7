"""Chain + miners + validator + client together: the subnet's behaviour end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible.client.gateway import ApiKeys, build_gateway
from crucible.client.subnet import NoAnswer, Subnet
from crucible.server import run_in_thread
from crucible.validator.bundle import TamperedBundle, load_bundle, recompute
from crucible.validator.explain import explain
from crucible.validator.loop import run_round
from crucible.validator.state import ValidatorState, load_state
from tests.conftest import keypair
from tests.scenario.world import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("world"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def first_round(world: World):
    state = ValidatorState()
    outcome = run_round(world.runtime, state)
    world.node.step(10)  # an epoch turns the weights into incentive
    return outcome, state


def test_the_best_original_model_takes_the_weight(world: World, first_round) -> None:
    outcome, _ = first_round
    u = world.uids
    assert outcome.set_weights.startswith("set; landed at block"), outcome.set_weights
    assert max(outcome.weights, key=outcome.weights.get) == u["good"]
    assert outcome.weights.get(u["copy"], 0) == 0  # a later exact copy never wins
    mg = world.node.metagraph(1)
    assert mg.neurons[u["good"]].incentive > 0.5
    assert mg.neurons[u["copy"]].incentive == 0
    assert mg.neurons[u["good"]].incentive > mg.neurons[u["weak"]].incentive


def test_models_breaking_the_rules_are_rejected_with_reasons(world: World, first_round) -> None:
    outcome, state = first_round
    assert state.models[world.uids["big"]].status == "parameters"
    assert state.models[world.uids["corrupt"]].status == "corrupt"
    assert world.uids["big"] in outcome.rejections and world.uids["corrupt"] in outcome.rejections


def test_a_miner_serving_something_else_loses_its_serving_share(world: World, first_round) -> None:
    outcome, _ = first_round
    bundle = load_bundle(outcome.bundle_path)
    failed = bundle.rounds[0].serving_failed
    assert world.uids["liar"] in failed and "different model" in failed[world.uids["liar"]]
    assert world.uids["good"] not in failed


def test_the_bundle_recomputes_bit_for_bit_and_tampering_is_caught(
    world: World, first_round, tmp_path: Path
) -> None:
    outcome, _ = first_round
    bundle = load_bundle(outcome.bundle_path)
    report = recompute(bundle)
    assert report.identical, report.differences
    assert bundle.weights == outcome.weights
    tampered = json.loads(outcome.bundle_path.read_text())
    tampered["weights"][str(world.uids["weak"])] = 0.5
    fake = tmp_path / outcome.bundle_path.name
    fake.write_text(json.dumps(tampered, sort_keys=True, separators=(",", ":")))
    with pytest.raises(TamperedBundle):
        load_bundle(fake)


def test_explain_says_why(world: World, first_round) -> None:
    outcome, state = first_round
    bundle = load_bundle(outcome.bundle_path)
    copy = explain(world.uids["copy"], bundle, state).to_text()
    assert "not competitive" in copy and f"uid {world.uids['good']}" in copy
    good = explain(world.uids["good"], bundle, state).to_text()
    assert "only competitive model" in good and "win rate 1.000" in good


def test_state_survives_a_restart(world: World, first_round) -> None:
    _, state = first_round
    reloaded = load_state(world.runtime.config.state_path)
    assert reloaded.ema == state.ema and reloaded.last_bundle == state.last_bundle


def test_client_gets_the_answer_from_the_top_miner_and_skips_liars(
    world: World, first_round
) -> None:
    subnet = Subnet(world.node, 1, keypair("some-client"), top_k=8, timeout_s=20)
    answer = subnet.ask("It is a truth universally acknowledged", max_tokens=8)
    assert answer.uid == world.uids["good"] and len(answer.token_ids) >= 1
    assert "another model than its on-chain commitment" in answer.attempts[world.uids["liar"]]
    miners = {m.uid: m for m in subnet.miners()}
    assert (
        miners[world.uids["good"]].reachable
        and miners[world.uids["good"]].served_commitment == miners[world.uids["good"]].commitment
    )
    assert miners[world.uids["liar"]].served_commitment != miners[world.uids["liar"]].commitment


def test_openai_package_works_against_the_gateway(
    world: World, first_round, tmp_path: Path
) -> None:
    import openai

    subnet = Subnet(world.node, 1, keypair("gateway"), top_k=8, timeout_s=20)
    key = "k" * 32
    usage = tmp_path / "usage.jsonl"
    app = build_gateway(subnet, ApiKeys({key: "alice"}), usage_log=usage, rate_per_s=0.01, burst=2)
    with run_in_thread(app) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["crucible-subnet"]
        completion = client.completions.create(
            model="crucible-subnet", prompt="Thou art", max_tokens=4
        )
        assert completion.choices[0].text and completion.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"{gateway.url}/v1", api_key="wrong-key-wrong-key", max_retries=0
            ).completions.create(model="crucible-subnet", prompt="x", max_tokens=1)
        client.completions.create(model="crucible-subnet", prompt="Thou", max_tokens=1)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="crucible-subnet", prompt="Thou", max_tokens=1)
    entries = [json.loads(line) for line in usage.read_text().splitlines()]
    assert entries[0]["key"] == "alice" and entries[0]["served_by"][0]["uid"] == world.uids["good"]


def test_client_falls_back_when_the_best_miner_is_gone(world: World, first_round) -> None:
    world.servers.pop("good").stop()
    subnet = Subnet(world.node, 1, keypair("some-client"), top_k=1, timeout_s=5)
    answer = subnet.ask("Thou art", max_tokens=2)
    assert answer.uid != world.uids["good"] and answer.uid != world.uids["liar"]
    assert world.uids["good"] in answer.attempts


def test_nobody_answering_is_a_clear_error(world: World, first_round) -> None:
    for name in list(world.servers):
        world.servers.pop(name).stop()
    with pytest.raises(NoAnswer, match="no miner gave a valid answer"):
        Subnet(world.node, 1, keypair("some-client"), timeout_s=2).ask("x", max_tokens=1)
