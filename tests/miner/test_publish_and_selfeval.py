"""Publishing refuses what it must; self-evaluation equals the validator's computation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from crucible.chain.interface import SetCommitment
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.publish import publish
from crucible.miner.selfeval import self_evaluate
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import load_model_dir, save_model_dir
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import ExtrinsicRejected, ModelRejected
from crucible.scoring.losses import per_sample_losses
from crucible.scoring.windows import load_eval_pool, round_windows
from crucible.store.local import LocalStore
from tests.conftest import TEST_HYPERPARAMETERS

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
SPEC = load_competitions(specs_dir())["tiny"]
SMALL = ModelShape(layers=1, hidden=32, heads=2, ffn=64)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_model_dir(build_model(build_config(SMALL)), tmp_path / "m")


def test_publish_commits_and_reads_back(
    node, neuron_factory, model_dir: Path, tmp_path: Path
) -> None:
    miner = neuron_factory("pub")
    result = publish(model_dir, SPEC, LocalStore(tmp_path / "store"), node, 1, miner.hotkey)
    assert node.commitments(1)[miner.hotkey.ss58_address].data == str(result.commitment)
    assert result.commitment.matches(result.stored.content_hash, miner.hotkey.ss58_address)


def test_publish_refuses_a_model_over_the_limits_and_commits_nothing(
    node, neuron_factory, tmp_path: Path
) -> None:
    miner = neuron_factory("pub-big")
    spec = SPEC.model_copy(
        update={
            "model": SPEC.model.model_copy(update={"max_parameters": 1000, "min_parameters": 1})
        }
    )
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ModelRejected) as err:
        publish(
            save_model_dir(build_model(build_config(SMALL)), tmp_path / "m"),
            spec,
            store,
            node,
            1,
            miner.hotkey,
        )
    assert err.value.reason == "parameters"
    assert miner.hotkey.ss58_address not in node.commitments(1) and not store.objects.exists()


def test_rate_limited_commitment_is_a_clear_error(
    node_factory, neuron_factory, model_dir: Path, tmp_path: Path
) -> None:
    chain = node_factory(dataclasses.replace(TEST_HYPERPARAMETERS, commitment_rate_limit=100))
    miner = neuron_factory("pub-rate", chain=chain)
    chain.submit(SetCommitment(netuid=1, data="x"), miner.hotkey).raise_for_failure()
    with pytest.raises(ExtrinsicRejected) as err:
        publish(model_dir, SPEC, LocalStore(tmp_path / "store"), chain, 1, miner.hotkey)
    assert err.value.code == "commitment_rate_limited" and "stored" in str(err.value)


def test_self_evaluation_matches_the_validator(
    node, neuron_factory, model_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    other = neuron_factory("se-other")
    theirs = save_model_dir(build_model(build_config(SMALL), seed=5), tmp_path / "theirs")
    publish(theirs, SPEC, store, node, 1, other.hotkey)
    node.step(25)
    mine = neuron_factory("se-me")
    from crucible.store.resolve import model_store_resolver

    report = self_evaluate(
        node, 1, SPEC, specs_dir(), FIXTURE, model_store_resolver(store), tmp_path / "cache",
        model_dir=model_dir, hotkey=mine.hotkey.ss58_address,
    )  # fmt: skip
    tok = load_tokenizer(specs_dir() / SPEC.model.tokenizer)
    _, _, windows = round_windows(
        load_eval_pool(FIXTURE, tok), SPEC, node.block_hash(report.round_block)
    )
    expected = per_sample_losses(
        load_model_dir(model_dir, SPEC.model).model, windows, batch_size=SPEC.evaluation.batch_size
    ).losses
    assert report.mean_loss == pytest.approx(float(np.mean(expected)), abs=1e-12)
    assert other.uid in report.others and "uid" in report.verdicts[other.uid]
    assert "round block" in report.to_text()
