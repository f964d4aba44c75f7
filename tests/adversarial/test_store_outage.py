"""A store the validator cannot reach costs no miner a recorded rejection; a bad model still does.

The validator's model sync (``validator.sync.sync_models``) against a real local chain: three
miners commit (a good local model, a local model with a hostile config, a model on the Hub while
this validator has the Hub switched off). Only the hostile config is recorded as a rejection; the
Hub model is simply not fetched this round, and fetched once the store is reachable.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest

from crucible.chain.interface import SetCommitment
from crucible.competitions import specs_dir
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import load_competitions
from crucible.store.hashing import content_hash
from crucible.store.hf import HuggingFaceStore
from crucible.store.local import LocalStore
from crucible.store.resolve import model_store_resolver
from crucible.validator.runtime import ValidatorConfig, ValidatorRuntime
from crucible.validator.state import ValidatorState
from crucible.validator.sync import sync_models
from tests.store.fakehub import SHA, FakeHub

SPEC = load_competitions(specs_dir())["tiny"]


def _model(path: Path, seed: int, **config: object) -> Path:
    shape = ModelShape(layers=1, hidden=32, heads=2, ffn=64)
    path = save_model_dir(build_model(build_config(shape), seed=seed), path)
    raw = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(raw | config))
    return path


def test_an_unreachable_store_records_nothing_and_a_bad_model_is_recorded(
    node, neuron_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    store = LocalStore(tmp_path / "store")
    validator = neuron_factory("outage-validator", stake_tao=100)
    miners = {name: neuron_factory(f"outage-{name}") for name in ("good", "hostile", "hub")}
    good = store.put(_model(tmp_path / "good", 1))
    hostile = store.put(_model(tmp_path / "hostile", 2, output_hidden_states=True))
    hub_dir = _model(tmp_path / "hub", 3)
    refs = {
        "good": ("local", good.revision, good.content_hash),
        "hostile": ("local", hostile.revision, hostile.content_hash),
        "hub": ("owner/model", SHA, content_hash(hub_dir)),
    }
    for name, (ref, revision, digest) in refs.items():
        hotkey = miners[name].hotkey
        commitment = ModelCommitment.for_model(SPEC.key, ref, revision, digest, hotkey.ss58_address)
        node.submit(SetCommitment(netuid=1, data=str(commitment)), hotkey).raise_for_failure()
    node.step(1)
    uid = {name: m.uid for name, m in miners.items()}
    state = ValidatorState()

    def runtime(resolve: object) -> ValidatorRuntime:
        config = ValidatorConfig(1, tmp_path / "validator")
        return ValidatorRuntime(node, validator.hotkey, config, {SPEC.id: SPEC}, {}, {}, resolve)

    offline = runtime(model_store_resolver(store, offline=True))
    synced = sync_models(offline, node.metagraph(1), state)
    assert set(synced.ok) == {uid["good"]}
    assert "(hub_offline)" in synced.held[uid["hub"]]  # held: its score is carried, not lowered
    assert state.models[uid["hostile"]].status == "bad_config"
    assert "output_hidden_states" in state.models[uid["hostile"]].reason
    assert uid["hub"] not in state.models  # nothing recorded against the Hub miner

    # the Hub comes back: the same commitment is fetched, verified and used
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub = FakeHub.serving(hub_dir)
    try:
        online = runtime(
            lambda ref: store if ref == "local" else HuggingFaceStore(ref, endpoint=hub.url)
        )
        synced = sync_models(online, node.metagraph(1), state)
    finally:
        hub.close()
    assert (
        set(synced.ok) == {uid["good"], uid["hub"]}
        and not synced.held
        and state.models[uid["hub"]].status == "ok"
    )
    assert state.models[uid["hostile"]].status == "bad_config"


def test_a_data_release_and_a_bundle_anchor_are_not_models_to_reject(
    node, neuron_factory, tmp_path: Path
) -> None:
    """The owner's release and a validator's anchor are commitments too: the model sync passes
    over them (recording a rejection would show the owner as a broken miner)."""
    from crucible.protocol.anchor import ANCHOR_PREFIX
    from crucible.protocol.release import ReleaseCommitment

    validator = neuron_factory("anchor-validator", stake_tao=100)
    publisher = neuron_factory("release-publisher")
    release = str(ReleaseCommitment("local", "ab" * 32))
    for hotkey, data in ((publisher.hotkey, release), (validator.hotkey, ANCHOR_PREFIX + "cd" * 32)):  # fmt: skip
        node.submit(SetCommitment(netuid=1, data=data), hotkey).raise_for_failure()
    node.step(1)
    config = ValidatorConfig(1, tmp_path / "validator")
    rt = ValidatorRuntime(node, validator.hotkey, config, {SPEC.id: SPEC}, {}, {}, lambda ref: None)
    state = ValidatorState()
    synced = sync_models(rt, node.metagraph(1), state)
    assert publisher.uid not in state.models and validator.uid not in state.models
    assert publisher.uid not in synced.ok and publisher.uid not in synced.held
