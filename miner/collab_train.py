"""A miner's share of one collaborative-training round: ``steps`` AdamW steps from the round's
checkpoint over its assigned windows, returning the pseudo-gradient Δ = θ_start − θ_end.

The pieces are the training loop's own (``crucible.miner.train``): the loss module
(``CausalLMLoss``: ``linear_cross_entropy`` through the LM head), the AdamW setup (betas 0.9 /
0.95, no weight decay on 1-D parameters, the fused kernel), gradient clipping at 1.0, bf16
autocast on a GPU, and under ``torchrun`` the DDP wrapper of ``crucible.miner.distributed``.

Batches are the assigned windows in order: step i trains on ``starts[i·B : (i+1)·B]``. Under
torchrun each rank takes its contiguous share of every such global batch and DDP averages the
gradients, so N processes compute the Δ one process would (to fp32 rounding). The model is left
at θ_end, in train mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from crucible.collab.assignment import windows_batch
from crucible.collab.measure import mean_loss
from crucible.collab.shared_model import build_shared_model, genesis_params, model_params
from crucible.miner import distributed as dist
from crucible.miner.distributed import SINGLE, Cluster
from crucible.miner.train import CausalLMLoss, adam_moments, adamw, restore_moments
from crucible.protocol.collab import CollabSpec
from crucible.protocol.errors import ConfigError
from crucible.store.tensor_file import TensorFileKind

__all__ = ["InnerMoments", "inner_train", "interleaved_windows", "one_process_curve"]

GRAD_CLIP = 1.0
_MOMENT_KINDS = ("exp_avg", "exp_avg_sq", "step")
MOMENTS_FILE_KIND = TensorFileKind(
    "crucible-collab-adam-moments/1", "moments", "moments",
    fix="delete the moments file to start the inner optimizer afresh",
)  # fmt: skip


@dataclass
class InnerMoments:
    """A miner's AdamW moments between rounds, by parameter name (``adam_moments``' keys);
    empty: a fresh optimizer."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write them atomically (a crash leaves the old file or the new one)."""
        MOMENTS_FILE_KIND.save(path, self.tensors)

    @classmethod
    def load(cls, path: Path, shapes: Mapping[str, tuple[int, ...]]) -> InnerMoments:
        """The moments in ``path``, every tensor checked against the model's ``shapes`` (fp32,
        finite, a step count ≥ 0) before any is kept; ``ConfigError`` naming what is wrong."""
        want = {f"{n}.{k}": (s if k != "step" else (1,)) for n, s in shapes.items() for k in _MOMENT_KINDS}  # fmt: skip
        tensors = MOMENTS_FILE_KIND.load(path, want)
        bad = [k for k, t in tensors.items() if not torch.isfinite(t).all() or (k.endswith(".step") and t.item() < 0)]  # fmt: skip
        if bad:
            raise ConfigError(f"{path}: {bad[0]!r} is not finite (or a negative step)",
                              fix=MOMENTS_FILE_KIND.fix)  # fmt: skip
        return cls(tensors)


def inner_train(
    model: PreTrainedModel,
    tokens: np.ndarray,
    starts: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    device: str = "cpu",
    cluster: Cluster | None = None,
    sequence_length: int | None = None,
    on_step: Callable[[int], None] | None = None,
    moments: InnerMoments | None = None,
) -> dict[str, torch.Tensor]:
    """Δ = θ_start − θ_end (fp32 CPU, keyed like ``model_params``) after ``steps`` AdamW steps
    of ``batch_size`` windows each from ``starts`` (windows of ``sequence_length`` tokens; None:
    the model's context length). Under torchrun every rank calls it with the same arguments.
    ``on_step(i)`` runs after optimizer step i (a benchmark's loss curve; it must not touch the
    parameters). ``moments``: AdamW starts from them and they are replaced by its moments at
    θ_end (None: a fresh optimizer, nothing kept)."""
    cluster = cluster or SINGLE
    length = sequence_length or model.config.max_position_embeddings
    if steps < 0 or len(starts) < steps * batch_size:
        raise ConfigError(
            f"{steps} steps of {batch_size} windows need {steps * batch_size} windows; "
            f"{len(starts)} were assigned",
            code="bad_training_config",
        )
    if not (
        math.isfinite(lr)
        and 0 < lr <= 10
        and math.isfinite(weight_decay)
        and 0 <= weight_decay <= 10
    ):
        raise ConfigError(f"inner lr {lr!r} or weight decay {weight_decay!r} out of range",
                          code="bad_training_config")  # fmt: skip
    rows = cluster.rows(batch_size)  # refuses a batch that does not split over the ranks
    device = cluster.device(device)
    start = model_params(model)
    model.to(device).train()
    net = dist.wrap(CausalLMLoss(model), cluster, "ddp", device)
    opt = adamw(model, lr, weight_decay)
    if moments is not None and moments.tensors:
        restore_moments(moments.tensors, model, opt)
    on_gpu = torch.device(device).type == "cuda"
    for step in range(steps):
        window = np.asarray(starts[step * batch_size : (step + 1) * batch_size])[rows]
        ids = windows_batch(tokens, window, length).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            loss = net(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step)
    if moments is not None:
        moments.tensors = adam_moments(model, opt)
    end = model_params(model)
    return {name: start[name] - end[name] for name in start}


def interleaved_windows(spec: CollabSpec, per_miner: Sequence[np.ndarray]) -> np.ndarray:
    """Several miners' windows of one round, step by step (step i: every miner's i-th batch in
    turn): the batches one data-parallel process would train on."""
    b = spec.batch_size
    return np.concatenate(
        [w[s * b : (s + 1) * b] for s in range(spec.inner_steps) for w in per_miner]
    )


def one_process_curve(
    spec: CollabSpec, tokens: np.ndarray, starts: np.ndarray, *, miners: int, held: torch.Tensor
) -> list[float]:
    """The reference a collab run is measured against: one process training checkpoint 0 with
    one AdamW run on the miners' windows (``interleaved_windows`` of every round, in order) at
    ``miners``× the batch, so the same tokens and inner optimizer. Its held-out loss (``held``,
    16 windows at a time) after every ``inner_steps`` steps, i.e. after each round's tokens."""
    model = build_shared_model(spec, genesis_params(spec))
    curve: list[float] = []

    def after(step: int) -> None:
        if (step + 1) % spec.inner_steps == 0:
            curve.append(mean_loss(model, held, 16))
            model.train()

    steps = len(starts) // (spec.batch_size * miners)
    inner_train(model, tokens, starts, steps=steps, batch_size=spec.batch_size * miners,
                lr=spec.inner_lr, weight_decay=spec.inner_weight_decay,
                sequence_length=spec.model.sequence_length, on_step=after)  # fmt: skip
    return curve
