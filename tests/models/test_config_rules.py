"""The config allow-list: it covers what the builder writes, accepts the older spellings and
what ``save_pretrained`` writes, and forces the harmless switches instead of refusing them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.activations import ACT2FN

from crucible.models.build import (
    ACTIVATIONS,
    CONFIG_RULES,
    ModelShape,
    build_config,
    check_config,
    tiny_model,
)
from crucible.models.io import load_model_dir, save_model_dir
from tests.models.test_models import CONSTRAINTS

ARCHS = ["LlamaForCausalLM", "GPT2LMHeadModel"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_key_the_builder_writes_has_a_rule(arch: str) -> None:
    config = build_config(ModelShape(arch)).to_dict()
    assert set(config) <= set(CONFIG_RULES[arch]), set(config) - set(CONFIG_RULES[arch])
    json_keys = json.loads(build_config(ModelShape(arch)).to_json_string())
    check_config(arch, json_keys)  # what save_model_dir writes passes unchanged in shape


def test_every_allowed_activation_is_a_builtin_function() -> None:
    assert ACTIVATIONS <= set(ACT2FN)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_transformers_save_pretrained_directory_loads(arch: str, tmp_path: Path) -> None:
    model = tiny_model(architecture=arch)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    loaded = load_model_dir(tmp_path / "m", CONSTRAINTS)
    x = torch.randint(0, 512, (1, 12))
    assert torch.equal(model(x).logits, loaded.model(x).logits)


def test_configs_of_older_transformers_versions_load(tmp_path: Path) -> None:
    model = tiny_model()
    path = save_model_dir(model, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    theta = config.pop("rope_parameters")["rope_theta"]
    config |= {"rope_theta": theta, "rope_scaling": None, "torch_dtype": "float32"}
    config["transformers_version"] = "4.46.0"
    (path / "config.json").write_text(json.dumps(config))
    x = torch.randint(0, 512, (1, 12))
    assert torch.equal(model(x).logits, load_model_dir(path, CONSTRAINTS).model(x).logits)


def test_harmless_switches_are_forced_not_refused(tmp_path: Path) -> None:
    model = tiny_model()
    path = save_model_dir(model, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    forced = {"use_cache": False, "dtype": "bfloat16", "id2label": {"0": "x"}, "_name_or_path": "a"}
    (path / "config.json").write_text(json.dumps(config | forced))
    loaded = load_model_dir(path, CONSTRAINTS).model
    assert loaded.config.use_cache is True and loaded.config.name_or_path == ""
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randint(0, 512, (1, 12))
    assert torch.equal(model(x).logits, loaded(x).logits)


@pytest.mark.parametrize("written", ["gelu_new", "gelu_fast", None])
def test_gpt2s_python_tanh_gelus_are_evaluated_by_the_fused_kernel(written, tmp_path: Path) -> None:
    config = build_config(ModelShape("GPT2LMHeadModel")).to_dict()
    if written is None:
        del config["activation_function"]  # transformers' default for GPT-2 is gelu_new
    else:
        config["activation_function"] = written
    assert check_config("GPT2LMHeadModel", config)["activation_function"] == "gelu_pytorch_tanh"
    llama = build_config(ModelShape()).to_dict()
    assert check_config("LlamaForCausalLM", llama)["hidden_act"] == "silu"


def test_a_gelu_new_model_loads_with_the_fused_kernel_and_the_same_outputs(tmp_path: Path) -> None:
    model = tiny_model(architecture="GPT2LMHeadModel")
    model.config.activation_function = "gelu_new"
    python_gelu = type(model)(model.config).eval()
    with torch.no_grad():  # weights large enough that the activation's inputs span [-10, 10]
        for p in python_gelu.parameters():
            p.normal_(0, 0.5)
    python_gelu.save_pretrained(tmp_path / "m", safe_serialization=True)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["activation_function"] == "gelu_new"  # fmt: skip
    loaded = load_model_dir(tmp_path / "m", CONSTRAINTS).model
    assert type(loaded.transformer.h[0].mlp.act).__name__ == "GELUTanh"
    assert type(python_gelu.transformer.h[0].mlp.act).__name__ == "NewGELUActivation"
    x = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        a, b = python_gelu(x).logits, loaded(x).logits
    # a different kernel, so the rounding differs, but not the function
    assert not torch.equal(a, b)
    assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(a.abs().max()))


def test_the_fused_tanh_gelu_is_the_same_function_as_gpt2s() -> None:
    x = torch.linspace(-12, 12, 100_001)
    reference = ACT2FN["gelu_new"](x.double())
    for name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        assert float((ACT2FN[name](x) - reference).abs().max()) < 2e-6, name
