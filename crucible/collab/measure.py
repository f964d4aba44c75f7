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

import torch

from crucible.protocol.errors import ConfigError, PayloadRejected
from crucible.scoring.losses import per_sample_losses

__all__ = ["loss_with_delta", "losses_before_after", "mean_loss"]


def mean_loss(model: torch.nn.Module, batch: torch.Tensor, batch_size: int) -> float:
    """Mean loss (nats) of ``model`` over the windows of ``batch`` (int64 [n, L]), scored
    ``batch_size`` windows at a time on the model's device."""
    if batch.dim() != 2 or batch.shape[1] < 2 or batch.dtype != torch.int64:
        raise ConfigError(
            f"a batch is int64 [windows, tokens ≥ 2]; got {batch.dtype} {tuple(batch.shape)}",
            code="bad_batch",
        )
    device = str(next(model.parameters()).device)
    windows = batch.detach().cpu().numpy()
    return per_sample_losses(model, windows, batch_size=batch_size, device=device).mean_loss


def loss_with_delta(
    model: torch.nn.Module,
    delta: Mapping[str, torch.Tensor],
    lr: float,
    batches: Sequence[torch.Tensor],
    *,
    batch_size: int | None = None,
) -> list[float]:
    """The mean loss of every batch under θ − lr·Δ (``batch_size`` None: a batch at a time);
    ``model`` holds θ again, bitwise, when this returns or raises. ``delta`` must name exactly
    the model's parameters with their shapes (``PayloadRejected`` otherwise, nothing touched)."""
    params = dict(model.named_parameters())
    _check_delta(params, delta)
    training = model.training
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        with torch.no_grad():
            for name in sorted(params):
                p = params[name]
                p.sub_(delta[name].to(device=p.device, dtype=p.dtype) * lr)
            return [mean_loss(model, b, batch_size or max(1, len(b))) for b in batches]
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
        model.train(training)


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
