"""Build GPT-2 / Llama causal LMs from a config (never downloaded)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)

from crucible.protocol.errors import ConfigError

__all__ = ["ModelShape", "build_config", "build_model", "count_parameters", "tiny_model"]


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
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
            architectures=["GPT2LMHeadModel"],
        )
    raise ConfigError(
        f"unsupported architecture {shape.architecture!r}; use LlamaForCausalLM or GPT2LMHeadModel"
    )


def build_model(config: PretrainedConfig, *, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    arch = (config.architectures or [""])[0]
    cls = {"LlamaForCausalLM": LlamaForCausalLM, "GPT2LMHeadModel": GPT2LMHeadModel}.get(arch)
    if cls is None:
        raise ConfigError(f"unsupported architecture {arch!r}")
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
