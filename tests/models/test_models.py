"""Model directories: built from configs, saved as safetensors, refused when they break a rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from crucible.competitions import specs_dir
from crucible.models.build import (
    ModelShape,
    build_config,
    build_model,
    count_parameters,
    tiny_model,
)
from crucible.models.io import TOKENIZER_REF, inspect_model_dir, load_model_dir, save_model_dir
from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import ModelRejected

CONSTRAINTS = ModelConstraints(
    architectures=("LlamaForCausalLM", "GPT2LMHeadModel"),
    min_parameters=1_000,
    max_parameters=200_000,
    max_bytes=5_000_000,
    tokenizer="tok.json",
    tokenizer_sha256="0" * 64,
    vocab_size=512,
    sequence_length=64,
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_model_dir(tiny_model(), tmp_path / "model")


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_save_and_load_give_the_same_model(tmp_path: Path, arch: str) -> None:
    model = tiny_model(architecture=arch)
    loaded = load_model_dir(save_model_dir(model, tmp_path / arch), CONSTRAINTS)
    x = torch.randint(0, 512, (2, 16))
    assert torch.equal(model(x).logits, loaded.model(x).logits)
    assert loaded.report.parameters == count_parameters(model)
    assert sorted(p.name for p in (tmp_path / arch).iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_too_many_parameters_are_rejected_before_building(tmp_path: Path) -> None:
    big = build_model(
        build_config(
            ModelShape("LlamaForCausalLM", 512, 64, layers=4, hidden=128, heads=4, ffn=256)
        )
    )
    path = save_model_dir(big, tmp_path / "big")
    with pytest.raises(ModelRejected) as err:
        inspect_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "parameters"


def test_wrong_architecture_is_rejected(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = ["MistralForCausalLM"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, CONSTRAINTS)
    assert err.value.reason == "architecture"


def test_remote_code_is_refused(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, CONSTRAINTS)
    assert err.value.reason == "remote_code"


def test_pickle_files_are_refused_unopened(model_dir: Path) -> None:
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n")  # a pickle bomb
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, CONSTRAINTS)
    assert err.value.reason == "pickle_refused"


def test_non_finite_weights_are_rejected(model_dir: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    name = next(iter(state))
    state[name][0] = float("nan")
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, CONSTRAINTS)
    assert err.value.reason == "non_finite"


def test_corrupt_safetensors_is_rejected(model_dir: Path) -> None:
    (model_dir / "model.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, CONSTRAINTS)
    assert err.value.reason == "corrupt"


def test_vocab_mismatch_is_rejected(tmp_path: Path) -> None:
    path = save_model_dir(tiny_model(vocab_size=600), tmp_path / "v")
    with pytest.raises(ModelRejected) as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "tokenizer"


def test_tensors_not_matching_the_config_are_rejected(model_dir: Path) -> None:
    save_file(
        {"model.embed_tokens.weight": torch.zeros(512, 32)}, str(model_dir / "model.safetensors")
    )
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, CONSTRAINTS)
    assert err.value.reason in ("corrupt", "parameters")


def test_a_matching_tokenizer_reference_is_accepted(tmp_path: Path) -> None:
    path = save_model_dir(tiny_model(), tmp_path / "m", tokenizer_sha256="0" * 64)
    assert (path / TOKENIZER_REF).is_file()
    assert load_model_dir(path, CONSTRAINTS).report.vocab_size == 512


def test_a_model_trained_with_another_tokenizer_is_rejected(tmp_path: Path) -> None:
    path = save_model_dir(tiny_model(), tmp_path / "m", tokenizer_sha256="1" * 64)
    with pytest.raises(ModelRejected) as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "tokenizer"
    (path / TOKENIZER_REF).write_text('{"tokenizer_sha256": "' + "0" * 64 + '", "x": 1}')
    with pytest.raises(ModelRejected) as err:
        load_model_dir(path, CONSTRAINTS)
    assert err.value.reason == "bad_config"


def test_rejections_happen_before_any_model_is_built(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rejected model was instantiated")

    monkeypatch.setattr("crucible.models.io.build_model", never)
    config = json.loads((model_dir / "config.json").read_text())
    for change, reason in (
        ({"model_type": "mistral"}, "architecture"),
        ({"max_position_embeddings": 32}, "sequence_length"),
        ({"vocab_size": 1024}, "tokenizer"),
    ):
        (model_dir / "config.json").write_text(json.dumps(config | change))
        with pytest.raises(ModelRejected) as err:
            load_model_dir(model_dir, CONSTRAINTS)
        assert err.value.reason == reason
    (model_dir / "config.json").write_text(json.dumps(config))
    small = CONSTRAINTS.model_copy(update={"max_bytes": 1000})
    with pytest.raises(ModelRejected) as err:
        load_model_dir(model_dir, small)
    assert err.value.reason == "too_large"


def test_default_shape_fits_the_tiny_competition(tmp_path: Path) -> None:
    from crucible.protocol.competition import load_competitions

    tiny = load_competitions(specs_dir())["tiny"]
    shape = ModelShape(vocab_size=tiny.model.vocab_size)
    path = save_model_dir(build_model(build_config(shape)), tmp_path / "m")
    report = inspect_model_dir(path, tiny.model)[1]
    assert tiny.model.min_parameters <= report.parameters <= tiny.model.max_parameters
