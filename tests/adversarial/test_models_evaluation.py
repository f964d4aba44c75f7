"""The validator's own failures are not the miner's fault; the model's failures are.

Found by attack: ``per_sample_losses`` turned every ``RuntimeError`` into "model failed" (worst
score), so a validator running out of GPU memory blamed whichever miner it was evaluating, and a
``MemoryError`` escaped and aborted the round. Now exhausted memory raises ``ResourceExhausted``
(the validator retries next round), while a real model bug still scores the model worst.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crucible.models.build import tiny_model
from crucible.models.io import load_model_dir, save_model_dir
from crucible.protocol.competition import ModelConstraints
from crucible.protocol.errors import ResourceExhausted
from crucible.scoring.losses import WORST_LOSS, per_sample_losses, token_logprobs

WINDOWS = np.random.default_rng(0).integers(0, 512, size=(4, 16))


def _raising(error: BaseException) -> torch.nn.Module:
    """A real tiny model whose second decoder layer raises ``error`` when it runs."""
    model = tiny_model()

    def hook(module: torch.nn.Module, args: object) -> None:
        raise error

    model.model.layers[1].register_forward_pre_hook(hook)
    return model


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total)"),
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
    ],
    ids=["MemoryError", "OutOfMemoryError", "cuda-oom", "cuda-error-oom", "cpu-alloc"],
)
def test_out_of_memory_is_the_validators_problem(error: BaseException) -> None:
    with pytest.raises(ResourceExhausted, match="out of memory evaluating 4 samples") as err:
        per_sample_losses(_raising(error), WINDOWS, batch_size=2)
    assert err.value.code == "validator_out_of_memory" and err.value.transient
    assert err.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (32x64 and 32x32)"),
        ValueError("not enough values to unpack"),
        IndexError("index out of range in self"),
    ],
)
def test_a_real_model_bug_still_scores_the_model_worst(error: Exception) -> None:
    result = per_sample_losses(_raising(error), WINDOWS, batch_size=2)
    assert result.losses == [WORST_LOSS] * 4 and result.error == f"model failed: {error}"


def test_nan_weights_still_score_the_model_worst() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    result = per_sample_losses(model, WINDOWS, batch_size=2)
    assert result.losses == [WORST_LOSS] * 4 and result.error == "non-finite loss"


def test_evaluation_is_fp32_whatever_precision_the_model_arrives_in() -> None:
    """Same numbers on every validator: a half-precision model is evaluated in fp32."""
    reference = per_sample_losses(tiny_model(), WINDOWS, batch_size=2).losses
    halved = tiny_model().to(torch.bfloat16).to(torch.float32)  # the weights bf16 can hold
    arrived = tiny_model().to(torch.bfloat16)
    result = per_sample_losses(arrived, WINDOWS, batch_size=2)
    assert all(p.dtype == torch.float32 for p in arrived.parameters())
    assert result.losses == per_sample_losses(halved, WINDOWS, batch_size=2).losses
    assert result.losses != reference  # the rounding happened, the arithmetic is still fp32


def test_token_logprobs_are_cpu_floats_from_the_models_device() -> None:
    model = tiny_model()
    values = token_logprobs(model, [1, 2, 3, 4, 5])
    assert len(values) == 4 and all(type(v) is float and v < 0 for v in values)
    batched = per_sample_losses(model, np.array([[1, 2, 3, 4, 5]]), batch_size=1).losses[0]
    assert -sum(values) / 4 == pytest.approx(batched, abs=1e-5)


def test_running_out_of_memory_while_loading_is_the_validators_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is within its limits (all checks passed); only the real build fails."""
    from crucible.models import io

    constraints = ModelConstraints(
        architectures=("LlamaForCausalLM",), min_parameters=1_000, max_parameters=200_000,
        max_bytes=5_000_000, tokenizer="t.json", tokenizer_sha256="0" * 64, vocab_size=512,
        sequence_length=64,
    )  # fmt: skip
    path = save_model_dir(tiny_model(), tmp_path / "m")
    real_build = io.build_model

    def build_until_memory_runs_out(config: object, **kwargs: object) -> torch.nn.Module:
        if kwargs.get("device") == "meta":
            return real_build(config, **kwargs)
        raise MemoryError("Cannot allocate memory")

    monkeypatch.setattr(io, "build_model", build_until_memory_runs_out)
    with pytest.raises(ResourceExhausted, match="out of memory loading a") as err:
        load_model_dir(path, constraints)
    assert err.value.code == "validator_out_of_memory"
