"""A real validator round on a real local chain with real tiny models: its events and metrics."""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, SetCommitment
from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.publish import publish
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from crucible.observe.metrics import ValidatorMetrics
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import load_competitions
from crucible.scoring.windows import load_eval_pool
from crucible.server import run_in_thread
from crucible.store.documents import DocumentStore
from crucible.store.hashing import content_hash
from crucible.store.local import LocalStore
from crucible.validator.bundle_server import build_bundle_server
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
from crucible.validator.state import ValidatorState
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SPEC = load_competitions(specs_dir())["tiny"]
SHAPE = ModelShape(layers=1, hidden=32, heads=2, ffn=64)


def _neuron(node: LocalNode, name: str, stake_tao: int = 0):
    coldkey, hotkey = keypair(f"obs-{name}-c"), keypair(f"obs-{name}-h")
    node.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
    node.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey).raise_for_failure()
    if stake_tao:
        node.submit(AddStake(1, hotkey.ss58_address, stake_tao * TAO), coldkey).raise_for_failure()
    return hotkey


def _events(caplog: pytest.LogCaptureFixture) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in caplog.records:
        if (name := getattr(record, "crucible_event", None)) is not None:
            out.setdefault(name, []).append(record.crucible_fields)
    return out


def test_a_round_emits_its_events_and_counts_rounds_models_and_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hp = dataclasses.replace(TEST_HYPERPARAMETERS, commitment_rate_limit=1)
    owner = keypair("obs-owner-h")
    node = LocalNode(
        tmp_path / "chain",
        NodeConfig(owner_coldkey=keypair("owner-coldkey").ss58_address,
                   owner_hotkey=owner.ss58_address, hyperparameters=hp),
    )  # fmt: skip
    try:
        validator = _neuron(node, "validator", stake_tao=100)
        store = LocalStore(tmp_path / "store")
        honest = _neuron(node, "honest")
        publish(save_model_dir(build_model(build_config(SHAPE), seed=1), tmp_path / "honest"),
                SPEC, store, node, 1, honest)  # fmt: skip
        hostile = _neuron(node, "hostile")  # a config publish refuses: committed by hand
        bad = save_model_dir(build_model(build_config(SHAPE), seed=2), tmp_path / "hostile")
        config = json.loads((bad / "config.json").read_text())
        (bad / "config.json").write_text(json.dumps({**config, "return_dict": False}))
        raw = ModelCommitment.for_model(
            SPEC.key, "local", store.put(bad).revision, content_hash(bad), hostile.ss58_address
        )
        node.submit(SetCommitment(netuid=1, data=str(raw)), hostile).raise_for_failure()
        node.step(25)  # an epoch for the validator's permit; past the eval delay
        tok = load_tokenizer(specs_dir() / SPEC.model.tokenizer)
        rt = ValidatorRuntime(
            node, validator, ValidatorConfig(1, tmp_path / "validator", probe_timeout_s=1.0),
            {"tiny": SPEC}, {"tiny": tok}, {"tiny": load_eval_pool(FIXTURE, tok)},
            lambda ref: store,
        )  # fmt: skip
        state = ValidatorState()
        honest_uid = node.metagraph(1).uid_of(honest.ss58_address)
        with caplog.at_level(logging.INFO, logger="crucible.validator"):
            first = run_round(rt, state)
            again = run_round(rt, state)  # same round block: skipped, never scored twice
    finally:
        node.close()

    assert first.bundle_path is not None and again.bundle_path is None
    events = _events(caplog)
    assert [e["block"] for e in events["round_started"]] == [first.block, again.block]
    finished = events["round_finished"]
    assert [(e["scored"], e["models_evaluated"]) for e in finished] == [(True, 1), (False, 0)]
    assert finished[0]["bundle"] == first.bundle_path.name
    (rejected,) = events["model_rejected"]  # rejected once: not refetched on the second round
    assert rejected["reason"] == "bad_config" and "return_dict" in rejected["message"]
    assert [e["uid"] for e in events["model_fetched"]] == [honest_uid]
    assert events["weights"][0]["outcome"] == first.set_weights

    value = rt.metrics.registry.get_sample_value
    assert value("crucible_validator_rounds_total", {"outcome": "scored"}) == 1
    assert value("crucible_validator_rounds_total", {"outcome": "skipped"}) == 1
    assert value("crucible_validator_models_evaluated_total") == 1
    assert value("crucible_validator_models_rejected_total", {"reason": "bad_config"}) == 1
    assert first.set_weights.startswith("set")
    assert value("crucible_validator_weights_total", {"outcome": "set"}) == 1
    assert value("crucible_validator_weights_total", {"outcome": "skipped"}) == 1
    assert value("crucible_validator_eval_tokens_per_second") > 0
    assert value("crucible_validator_round_block") == again.block


def test_the_bundle_endpoint_serves_the_validator_metrics_without_a_signature(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    metrics = ValidatorMetrics(registry)
    metrics.rounds.labels("scored").inc()
    metrics.weights.labels("set").inc()
    app = build_bundle_server(DocumentStore(tmp_path), lambda: None, metrics=registry)
    with run_in_thread(app) as running:
        with urllib.request.urlopen(running.url + "/metrics", timeout=10) as reply:
            assert reply.status == 200
            text = reply.read().decode()
    assert 'crucible_validator_rounds_total{outcome="scored"} 1.0' in text
    assert 'crucible_validator_weights_total{outcome="set"} 1.0' in text
    bare = build_bundle_server(DocumentStore(tmp_path), lambda: None)  # no registry: no route
    assert "/metrics" not in {getattr(r, "path", "") for r in bare.routes}
