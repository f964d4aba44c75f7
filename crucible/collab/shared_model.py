"""The shared model of a ``collab`` competition: its shape, checkpoint 0, and its parameters as
the ``name → fp32 CPU tensor`` mapping every other collab module works with.

The model is always built from the spec's config (``crucible.models.build``), never downloaded.
Checkpoint 0 ("genesis") is that model initialised under ``torch.manual_seed(init_seed)`` on the
CPU in fp32, so every miner and validator builds the same bits; the global torch RNG of the
caller is left as it was.

Parameters are the model's ``named_parameters()``: each tensor once, in ``sorted()`` name order.
A tied LM head (Llama as built here ties it: ``tie_word_embeddings=True``; GPT-2 always does) is
the input embedding itself, so it appears once, under the embedding's name
(``model.embed_tokens.weight`` / ``transformer.wte.weight``), and a pseudo-gradient for it
updates the head and the embedding together. Buffers (rotary frequencies, attention masks) are
not parameters: they follow from the config and are never trained, sent or aggregated.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import PreTrainedModel

from crucible.models.build import ModelShape, build_config, build_model
from crucible.protocol.collab import CollabSpec
from crucible.protocol.errors import ConfigError

__all__ = [
    "build_shared_model",
    "collab_shape",
    "genesis_params",
    "load_params",
    "model_params",
    "param_shapes",
]


def collab_shape(spec: CollabSpec) -> ModelShape:
    m = spec.model
    return ModelShape(m.architecture, m.vocab_size, m.sequence_length, m.layers, m.hidden, m.heads, m.ffn)  # fmt: skip


def _fresh_model(spec: CollabSpec) -> PreTrainedModel:
    """The spec's model initialised from ``init_seed`` (EOS is token 0, as in the competition
    tokenizer); the caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        return build_model(build_config(collab_shape(spec)), seed=spec.model.init_seed).float()


def genesis_params(spec: CollabSpec) -> dict[str, torch.Tensor]:
    """Checkpoint 0: bit-identical on every call and every machine with the same torch."""
    return model_params(_fresh_model(spec))


def build_shared_model(
    spec: CollabSpec, params: Mapping[str, torch.Tensor] | None = None, device: str = "cpu"
) -> PreTrainedModel:
    """The spec's model in eval mode on ``device``: genesis, or ``params`` loaded by name."""
    model = _fresh_model(spec)
    if params is not None:
        load_params(model, params)
    return model.to(device).eval()


def load_params(model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into ``model`` in place; the names, shapes and fp32 dtype must be exactly
    the model's (``ConfigError`` naming the first difference, before anything is copied)."""
    own = dict(model.named_parameters())
    missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
    if missing or extra:
        raise ConfigError(
            f"parameters do not match the model: missing {missing[:3]}, unexpected {extra[:3]}",
            code="params_mismatch",
        )
    for name in sorted(own):
        given = params[name]
        if tuple(given.shape) != tuple(own[name].shape) or given.dtype != torch.float32:
            raise ConfigError(
                f"parameter {name} is {given.dtype} {tuple(given.shape)}; the model's is "
                f"torch.float32 {tuple(own[name].shape)}",
                code="params_mismatch",
            )
    with torch.no_grad():
        for name in sorted(own):
            own[name].copy_(params[name])


def model_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """fp32 CPU copies of the parameters by name, sorted, a tied tensor once (see above)."""
    named = dict(model.named_parameters())
    return {
        name: named[name].detach().to(device="cpu", dtype=torch.float32, copy=True)
        for name in sorted(named)
    }


def param_shapes(params: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(params[name].shape) for name in sorted(params)}
