"""The validator's scoring primitive: the loss of the shared model with one miner's
pseudo-gradient applied, θ − lr·Δ, measured in place and undone exactly.

Losses are ``crucible.scoring.losses.per_sample_losses``: fp32, deterministic, a batch's loss the
mean over its windows of each window's mean next-token NLL (nats); a model that yields a
non-finite loss scores ``inf``. The update is a multiply then a subtraction (``θ − (lr·Δ)``, the
same element-wise arithmetic as ``crucible.collab.aggregate``), so the model measured here is
bit for bit the one those parameters build. Afterwards every parameter holds its original bits
again, also when a measurement raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch

from crucible.protocol.errors import ConfigError, PayloadRejected
from crucible.scoring.losses import per_sample_losses

__all__ = [
    "delta_applied",
    "loss_with_delta",
    "losses_before_after",
    "mean_loss",
    "window_losses",
    "window_losses_with_delta",
]


def _checked_batch(batch: torch.Tensor) -> None:
    if batch.dim() != 2 or batch.shape[1] < 2 or batch.dtype != torch.int64:
        raise ConfigError(
            f"a batch is int64 [windows, tokens ≥ 2]; got {batch.dtype} {tuple(batch.shape)}",
            code="bad_batch",
        )


def window_losses(model: torch.nn.Module, batch: torch.Tensor, batch_size: int) -> list[float]:
    """Each window's mean loss (nats) under ``model``, ``batch_size`` windows at a time."""
    _checked_batch(batch)
    if len(batch) == 0:
        return []
    device = str(next(model.parameters()).device)
    windows = batch.detach().cpu().numpy()
    return list(per_sample_losses(model, windows, batch_size=batch_size, device=device).losses)


def mean_loss(model: torch.nn.Module, batch: torch.Tensor, batch_size: int) -> float:
    """Mean loss (nats) of ``model`` over the windows of ``batch`` (int64 [n, L]), scored
    ``batch_size`` windows at a time on the model's device."""
    _checked_batch(batch)
    device = str(next(model.parameters()).device)
    windows = batch.detach().cpu().numpy()
    return per_sample_losses(model, windows, batch_size=batch_size, device=device).mean_loss


@contextmanager
def delta_applied(model: torch.nn.Module, delta: Mapping[str, torch.Tensor], lr: float):
    """``model`` holds θ − lr·Δ inside the block and θ again, bitwise, after it (also when the
    block raises). ``delta`` must name exactly the model's parameters with their shapes
    (``PayloadRejected`` otherwise, nothing touched)."""
    params = dict(model.named_parameters())
    _check_delta(params, delta)
    training = model.training
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        with torch.no_grad():
            for name in sorted(params):
                p = params[name]
                p.sub_(delta[name].to(device=p.device, dtype=p.dtype) * lr)
        yield model
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
        model.train(training)


def loss_with_delta(
    model: torch.nn.Module,
    delta: Mapping[str, torch.Tensor],
    lr: float,
    batches: Sequence[torch.Tensor],
    *,
    batch_size: int | None = None,
) -> list[float]:
    """The mean loss of every batch under θ − lr·Δ (``batch_size`` None: a batch at a time)."""
    with delta_applied(model, delta, lr), torch.no_grad():
        return [mean_loss(model, b, batch_size or max(1, len(b))) for b in batches]


def window_losses_with_delta(
    model: torch.nn.Module,
    delta: Mapping[str, torch.Tensor],
    lr: float,
    batches: Sequence[torch.Tensor],
    batch_size: int,
) -> list[list[float]]:
    """Every window's loss of every batch under θ − lr·Δ, ``batch_size`` windows at a time
    (the size the losses before were computed with: the same arithmetic on both sides)."""
    with delta_applied(model, delta, lr), torch.no_grad():
        return [window_losses(model, b, batch_size) for b in batches]


def losses_before_after(
    model: torch.nn.Module,
    delta: Mapping[str, torch.Tensor],
    lr: float,
    batches: Sequence[torch.Tensor],
    *,
    batch_size: int | None = None,
) -> tuple[list[float], list[float]]:
    """(loss of every batch under θ, under θ − lr·Δ)."""
    training = model.training
    try:
        before = [mean_loss(model, b, batch_size or max(1, len(b))) for b in batches]
    finally:
        model.train(training)
    return before, loss_with_delta(model, delta, lr, batches, batch_size=batch_size)


def _check_delta(params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> None:
    if set(delta) != set(params):
        missing, extra = sorted(set(params) - set(delta)), sorted(set(delta) - set(params))
        raise PayloadRejected(
            f"pseudo-gradient tensors differ from the model's: missing {missing[:3]}, "
            f"unexpected {extra[:3]}",
            code="payload_tensors",
        )
    for name, p in params.items():
        if tuple(delta[name].shape) != tuple(p.shape) or not delta[name].is_floating_point():
            raise PayloadRejected(
                f"pseudo-gradient {name} is {delta[name].dtype} {tuple(delta[name].shape)}; "
                f"the parameter is {tuple(p.shape)}",
                code="payload_shape",
            )
