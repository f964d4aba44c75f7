"""Build GPT-2 / Llama causal LMs from a config (never downloaded), and check the config a
published model carries (``check_config``: allow-listed keys, each with a rule, see below)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)

from crucible.protocol.errors import ConfigError, ModelRejected

__all__ = [
    "ACTIVATIONS",
    "CONFIG_RULES",
    "FUSED_ACTIVATION",
    "ModelShape",
    "build_config",
    "build_model",
    "check_config",
    "count_parameters",
    "tiny_model",
]


@dataclass(frozen=True)
class ModelShape:
    architecture: str = "LlamaForCausalLM"
    vocab_size: int = 8192
    sequence_length: int = 256
    layers: int = 4
    hidden: int = 192
    heads: int = 6
    ffn: int = 512


def build_config(shape: ModelShape, *, eos_token_id: int = 0) -> PretrainedConfig:
    if shape.hidden % shape.heads:
        raise ConfigError(f"hidden size {shape.hidden} is not divisible by {shape.heads} heads")
    if shape.architecture == "LlamaForCausalLM":
        return LlamaConfig(
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden,
            intermediate_size=shape.ffn,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.heads,
            max_position_embeddings=shape.sequence_length,
            tie_word_embeddings=True,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
            architectures=["LlamaForCausalLM"],
        )
    if shape.architecture == "GPT2LMHeadModel":
        return GPT2Config(
            vocab_size=shape.vocab_size,
            n_embd=shape.hidden,
            n_layer=shape.layers,
            n_head=shape.heads,
            n_inner=shape.ffn,
            n_positions=shape.sequence_length,
            activation_function=FUSED_ACTIVATION["gelu_new"],  # GPT-2's own, as one kernel
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
            architectures=["GPT2LMHeadModel"],
        )
    raise ConfigError(
        f"unsupported architecture {shape.architecture!r}; use LlamaForCausalLM or GPT2LMHeadModel"
    )


def build_model(
    config: PretrainedConfig, *, seed: int = 0, device: str | None = None
) -> PreTrainedModel:
    """A freshly initialised model; ``device="meta"`` gives its shapes without allocating them."""
    torch.manual_seed(seed)
    arch = (config.architectures or [""])[0]
    cls = {"LlamaForCausalLM": LlamaForCausalLM, "GPT2LMHeadModel": GPT2LMHeadModel}.get(arch)
    if cls is None:
        raise ConfigError(f"unsupported architecture {arch!r}")
    if device is None:
        return cls(config).eval()
    with torch.device(device):
        return cls(config).eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def tiny_model(
    vocab_size: int = 512,
    sequence_length: int = 64,
    *,
    seed: int = 0,
    architecture: str = "LlamaForCausalLM",
) -> PreTrainedModel:
    """A real 2-layer model small enough for unit tests (tens of thousands of parameters)."""
    shape = ModelShape(
        architecture, vocab_size, sequence_length, layers=2, hidden=32, heads=2, ffn=64
    )
    return build_model(build_config(shape), seed=seed)


# ---- what a published config.json may say --------------------------------------------------
#
# A published model's config.json is untrusted input that transformers would otherwise obey.
# Only the keys transformers writes for the configs ``build_config`` makes are allowed (plus the
# spellings older transformers versions wrote: ``torch_dtype``, ``rope_theta``, ``rope_scaling``);
# any other key is refused, which also covers runtime switches such as ``torchscript`` and
# ``attn_implementation`` (the attention implementation is always the library default).
#
# Each allowed key has a rule. Rejected (``ModelRejected("bad_config")`` naming the key) when not
# exactly the safe value: ``return_dict`` (true), ``output_hidden_states``/``output_attentions``
# (false), ``is_encoder_decoder``/``add_cross_attention`` (false), ``chunk_size_feed_forward``
# (0), ``problem_type`` (null), ``pretraining_tp`` (1), rope scaling (only the default rope, with
# a finite positive theta). Rejected when out of type/range: sizes (positive ints ≤ 2**24, heads
# dividing the hidden size, ``head_dim`` = hidden / heads, kv heads dividing heads), the
# activation name (a fixed list of built-in functions), epsilons, dropouts, token ids, booleans.
# Forced to a safe value (checked for type, then replaced): ``use_cache`` (true: it never changes
# the logits, and training scripts often save false); ``dtype``/``torch_dtype``,
# ``transformers_version``, ``_name_or_path``, ``id2label``/``label2id`` and GPT-2's
# ``summary_*`` heads are dropped (the model is always evaluated in fp32; the rest is unused by a
# causal LM head). Replaced by the same function's fused kernel: GPT-2's ``gelu_new`` and
# ``gelu_fast`` (also when the key is left out) become ``gelu_pytorch_tanh`` (``FUSED_ACTIVATION``).

MAX_DIM = 1 << 24
ACTIVATIONS = frozenset(
    {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish"}
)
# The same function as one fused kernel: transformers' gelu_new and gelu_fast are the tanh
# approximation of GELU written as five to seven Python tensor ops (each a pass over the MLP's
# activations, about a quarter of a GPT-2 model's evaluation time on a CPU); gelu_pytorch_tanh
# is torch's kernel for the same formula, equal up to float rounding. Every neuron loads a model
# through ``check_config``, so every validator computes with the same kernel.
FUSED_ACTIVATION = {"gelu_new": "gelu_pytorch_tanh", "gelu_fast": "gelu_pytorch_tanh"}
# the activation key and transformers' default when a config leaves it out
ACTIVATION_KEYS = {"LlamaForCausalLM": ("hidden_act", "silu"), "GPT2LMHeadModel": ("activation_function", "gelu_new")}  # fmt: skip
_DROP = object()  # a rule's answer: leave the key out (the library default applies)
Rule = Callable[[str, Any], Any]


def _bad(key: str, value: Any, want: str) -> ModelRejected:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ModelRejected(
        "bad_config",
        f"config.json: {key} = {shown} is not allowed ({want})",
        fix="save the config with crucible's build_config / save_model_dir",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _exactly(expected: Any) -> Rule:
    def rule(key: str, value: Any) -> Any:
        if value != expected or type(value) is not type(expected):
            raise _bad(key, value, f"must be {json.dumps(expected)}")
        return value

    return rule


def _boolean(key: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise _bad(key, value, "must be true or false")
    return value


def _size(*, optional: bool = False) -> Rule:
    def rule(key: str, value: Any) -> Any:
        if optional and value is None:
            return value
        if not _is_int(value) or not 1 <= value <= MAX_DIM:
            raise _bad(key, value, f"must be an integer in [1, {MAX_DIM}]")
        return value

    return rule


def _number(low: float, high: float) -> Rule:
    def rule(key: str, value: Any) -> Any:
        if not _is_number(value) or not low <= value <= high:
            raise _bad(key, value, f"must be a number in [{low}, {high}]")
        return value

    return rule


def _choice(*options: Any) -> Rule:
    def rule(key: str, value: Any) -> Any:
        if value not in options or isinstance(value, bool):
            raise _bad(key, value, f"must be one of {sorted(map(str, options))}")
        return value

    return rule


def _forced(check: Rule, to: Any) -> Rule:
    """Check the value's type, then use ``to`` instead (``_DROP``: leave the key out)."""

    def rule(key: str, value: Any) -> Any:
        check(key, value)
        return to

    return rule


def _dropped(check: Rule) -> Rule:
    return _forced(check, _DROP)


def _text(key: str, value: Any) -> Any:
    if not isinstance(value, str) or len(value) > 256:
        raise _bad(key, value, "must be a short string")
    return value


def _token_id(key: str, value: Any) -> Any:
    ids = value if isinstance(value, list) and len(value) <= 16 else [value]
    if value is not None and not all(_is_int(i) and 0 <= i < MAX_DIM for i in ids):
        raise _bad(key, value, "must be null, a token id or a short list of token ids")
    return value


def _labels(key: str, value: Any) -> Any:
    if not isinstance(value, dict) or len(value) > 64:
        raise _bad(key, value, "must be a small mapping")
    return value


def _rope_parameters(key: str, value: Any) -> Any:
    if (
        not isinstance(value, dict)
        or set(value) - {"rope_type", "rope_theta"}
        or value.get("rope_type", "default") != "default"
        or not _is_number(value.get("rope_theta", 10000.0))
        or not 0 < value.get("rope_theta", 10000.0) <= 1e9
    ):
        raise _bad(key, value, 'only {"rope_type": "default", "rope_theta": <positive>} is allowed')
    return value


def _rope_scaling(key: str, value: Any) -> Any:
    if value is not None and value not in ({"rope_type": "default"}, {"type": "default"}):
        raise _bad(key, value, "rope scaling is not allowed: must be null")
    return value


_COMMON: dict[str, Rule] = {
    "architectures": lambda key, value: value,  # checked against the competition before
    "model_type": lambda key, value: value,
    "vocab_size": _size(),
    "tie_word_embeddings": _boolean,
    "return_dict": _exactly(True),
    "output_hidden_states": _exactly(False),
    "output_attentions": _exactly(False),
    "is_encoder_decoder": _exactly(False),
    "chunk_size_feed_forward": _exactly(0),
    "problem_type": _exactly(None),
    "use_cache": _forced(_boolean, True),
    "bos_token_id": _token_id,
    "eos_token_id": _token_id,
    "pad_token_id": _token_id,
    "initializer_range": _number(0.0, 10.0),
    "dtype": _dropped(_choice(None, "float32", "float16", "bfloat16")),
    "torch_dtype": _dropped(_choice(None, "float32", "float16", "bfloat16")),
    "transformers_version": _dropped(_text),
    "_name_or_path": _dropped(_text),
    "id2label": _dropped(_labels),
    "label2id": _dropped(_labels),
}
CONFIG_RULES: dict[str, dict[str, Rule]] = {
    "LlamaForCausalLM": _COMMON
    | {
        "hidden_size": _size(),
        "intermediate_size": _size(),
        "num_hidden_layers": _size(),
        "num_attention_heads": _size(),
        "num_key_value_heads": _size(optional=True),
        "head_dim": _size(optional=True),
        "max_position_embeddings": _size(),
        "hidden_act": _choice(*ACTIVATIONS),
        "rms_norm_eps": _number(1e-12, 1.0),
        "attention_bias": _boolean,
        "mlp_bias": _boolean,
        "attention_dropout": _number(0.0, 1.0),
        "pretraining_tp": _exactly(1),
        "rope_parameters": _rope_parameters,
        "rope_theta": _number(1e-6, 1e9),
        "rope_scaling": _rope_scaling,
    },
    "GPT2LMHeadModel": _COMMON
    | {
        "n_embd": _size(),
        "n_inner": _size(optional=True),
        "n_layer": _size(),
        "n_head": _size(),
        "n_positions": _size(),
        "activation_function": _choice(*ACTIVATIONS),
        "layer_norm_epsilon": _number(1e-12, 1.0),
        "attn_pdrop": _number(0.0, 1.0),
        "embd_pdrop": _number(0.0, 1.0),
        "resid_pdrop": _number(0.0, 1.0),
        "add_cross_attention": _exactly(False),
        "reorder_and_upcast_attn": _boolean,
        "scale_attn_by_inverse_layer_idx": _boolean,
        "scale_attn_weights": _boolean,
        "summary_activation": _dropped(_choice(None, "tanh", "linear")),
        "summary_first_dropout": _dropped(_number(0.0, 1.0)),
        "summary_proj_to_labels": _dropped(_boolean),
        "summary_type": _dropped(_choice("cls_index", "last", "first", "mean", "attn")),
        "summary_use_proj": _dropped(_boolean),
    },
}
# the keys that give the model's shape, per architecture: (hidden, heads, layers)
SHAPE_KEYS = {
    "LlamaForCausalLM": ("hidden_size", "num_attention_heads", "num_hidden_layers"),
    "GPT2LMHeadModel": ("n_embd", "n_head", "n_layer"),
}


def check_config(architecture: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every key checked by its rule (see above); refuses unknown keys."""
    rules = CONFIG_RULES.get(architecture)
    if rules is None:
        raise ModelRejected("architecture", f"unsupported architecture {architecture!r}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        rule = rules.get(key)
        if rule is None:
            raise ModelRejected(
                "bad_config",
                f"config.json: key {str(key)[:60]!r} is not allowed for {architecture}",
                fix="remove it; a published config holds only the keys build_config writes",
            )
        kept = rule(key, value)
        if kept is not _DROP:
            out[key] = kept
    hidden_key, heads_key, layers_key = SHAPE_KEYS[architecture]
    for key in (hidden_key, heads_key, layers_key):
        if key not in out:
            raise _bad(key, None, "is required")
    hidden, heads = out[hidden_key], out[heads_key]
    if hidden % heads:
        raise _bad(heads_key, heads, f"must divide {hidden_key} = {hidden}")
    if out.get("head_dim") not in (None, hidden // heads):
        raise _bad("head_dim", out["head_dim"], f"must be {hidden_key} / {heads_key}")
    if heads % (out.get("num_key_value_heads") or heads):
        raise _bad("num_key_value_heads", out["num_key_value_heads"], f"must divide {heads_key}")
    act_key, act_default = ACTIVATION_KEYS[architecture]
    act = out.get(act_key, act_default)
    out[act_key] = FUSED_ACTIVATION.get(act, act)
    return out
