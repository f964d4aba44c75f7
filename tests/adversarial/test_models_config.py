"""A hostile config.json costs only its uploader: refused at publish and at fetch, naming the key.

Found by attack: ``"return_dict": false`` passed publish, then raised ``AttributeError`` inside
every validator round while it stayed committed. Now every key is allow-listed per architecture
and the behaviour-changing values are checked (``crucible.models.build.check_config``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.competitions import specs_dir
from crucible.miner.publish import publish
from crucible.models.build import ModelShape, build_config, build_model, tiny_model
from crucible.models.io import load_model_dir, save_model_dir
from crucible.protocol.competition import ModelConstraints, load_competitions
from crucible.protocol.errors import ModelRejected
from crucible.store.local import LocalStore

SPEC = load_competitions(specs_dir())["tiny"]
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


@pytest.fixture(autouse=True)
def _no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(flag, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _with(path: Path, **changes: object) -> Path:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))
    return path


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    return save_model_dir(tiny_model(), tmp_path / "llama")


@pytest.fixture
def gpt2(tmp_path: Path) -> Path:
    return save_model_dir(tiny_model(architecture="GPT2LMHeadModel"), tmp_path / "gpt2")


def test_return_dict_false_is_refused_by_publish_and_nothing_is_committed(
    node, neuron_factory, tmp_path: Path
) -> None:
    miner = neuron_factory("hostile-config")
    shape = ModelShape(layers=1, hidden=32, heads=2, ffn=64)
    model_dir = _with(
        save_model_dir(build_model(build_config(shape)), tmp_path / "m"), return_dict=False
    )
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ModelRejected, match="return_dict = False is not allowed") as err:
        publish(model_dir, SPEC, store, node, 1, miner.hotkey)
    assert err.value.reason == "bad_config"
    assert not store.objects.exists()
    assert miner.hotkey.ss58_address not in node.commitments(1)


@pytest.mark.parametrize(
    "key",
    [
        "torchscript",
        "attn_implementation",
        "_attn_implementation",
        "quantization_config",
        "output_router_logits",
        "num_labels",
        "note",
    ],
)
def test_keys_outside_the_allow_list_are_refused_by_name(llama: Path, key: str) -> None:
    _with(llama, **{key: True})
    with pytest.raises(ModelRejected, match=f"key '{key}' is not allowed") as err:
        load_model_dir(llama, CONSTRAINTS)
    assert err.value.reason == "bad_config"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("return_dict", False),
        ("output_hidden_states", True),
        ("output_attentions", True),
        ("is_encoder_decoder", True),
        ("chunk_size_feed_forward", 8),
        ("pretraining_tp", 2),
        ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        ("rope_parameters", {"rope_type": "default", "rope_theta": -1.0}),
        ("rope_scaling", {"rope_type": "dynamic", "factor": 4.0}),
        ("hidden_act", "os.system"),
        ("hidden_act", "xielu"),
        ("rms_norm_eps", 0),
        ("tie_word_embeddings", "yes"),
        ("use_cache", "no"),
        ("dtype", "int8"),
        ("num_attention_heads", 3),
        ("head_dim", 7),
        ("num_key_value_heads", 3),
        ("num_hidden_layers", 0),
        ("num_hidden_layers", 2.0),
        ("intermediate_size", 10**30),
        ("bos_token_id", -1),
        ("attention_dropout", 2.0),
        ("problem_type", "regression"),
    ],
)
def test_behaviour_changing_llama_values_are_refused(llama: Path, key: str, value: object) -> None:
    _with(llama, **{key: value})
    with pytest.raises(ModelRejected, match=f"config.json: {key} = ") as err:
        load_model_dir(llama, CONSTRAINTS)
    assert err.value.reason == "bad_config"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("add_cross_attention", True),
        ("activation_function", "eval"),
        ("n_head", 5),
        ("scale_attn_weights", "x"),
        ("layer_norm_epsilon", float("nan")),
        ("return_dict", 0),
    ],
)
def test_behaviour_changing_gpt2_values_are_refused(gpt2: Path, key: str, value: object) -> None:
    _with(gpt2, **{key: value})
    with pytest.raises(ModelRejected, match=f"config.json: {key} = ") as err:
        load_model_dir(gpt2, CONSTRAINTS)
    assert err.value.reason == "bad_config"


def test_a_key_of_the_other_architecture_is_refused(gpt2: Path) -> None:
    _with(gpt2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    with pytest.raises(ModelRejected, match="'rope_parameters' is not allowed for GPT2"):
        load_model_dir(gpt2, CONSTRAINTS)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = st.sampled_from(
    sorted(json.loads(tiny_model().config.to_json_string()))
    + ["return_dict", "torchscript", "use_cache", "rope_scaling", "head_dim", "dtype", "x"]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.dictionaries(_KEYS, _JSON, min_size=1, max_size=3))
def test_any_config_either_loads_or_is_refused_with_a_reason(
    llama: Path, changes: dict[str, object]
) -> None:
    original = (llama / "config.json").read_text()
    try:
        (llama / "config.json").write_text(json.dumps(json.loads(original) | changes))
        try:
            loaded = load_model_dir(llama, CONSTRAINTS)
        except ModelRejected as exc:
            assert exc.reason and exc.message
        else:
            assert loaded.model.config.return_dict is True
    finally:
        (llama / "config.json").write_text(original)
