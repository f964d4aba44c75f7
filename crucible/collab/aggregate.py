"""One round's outer step: clip every contributor's pseudo-gradient to the median norm, average
them, and apply an SGD / Nesterov step to the shared checkpoint.

Two validators on two machines must produce the same checkpoint bit for bit, so everything here
runs in fp32 on CPU, over uids in ascending order and tensor names in ``sorted()`` order, with
only element-wise operations on tensors (each one correctly rounded by IEEE 754, hence identical
on every CPU). The one reduction, a uid's global L2 norm, is an exactly rounded ``math.fsum`` of
squares that are exact in float64 (an fp32 value squared needs 48 mantissa bits), so it does not
depend on how a BLAS or a SIMD unit orders a sum. No fused multiply-add either: ``a - lr·b`` is
a multiply and then a subtraction, never ``torch.sub(a, b, alpha=lr)``.

A pseudo-gradient is Δ = θ_r − θ_local, so applying an update ``u`` is θ ← θ − lr·u.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from crucible.protocol.errors import ConfigError, PayloadRejected

__all__ = [
    "AggregateResult",
    "aggregate_round",
    "average",
    "clip_to_median",
    "global_norm",
    "outer_step",
    "tensors_digest",
]

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AggregateResult:
    """Checkpoint ``r + 1`` and what went into it (norms and median go into the score bundle)."""

    params: Tensors
    momentum: Tensors | None  # None when the outer step has no momentum
    norms: dict[int, float]  # global L2 norm of every aggregated uid's Δ, before clipping
    median: float  # the clipping bound (0.0 when nobody contributed)
    uids: tuple[int, ...]  # the contributors, ascending


def _fp32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _checked_delta(uid: int, delta: Mapping[str, torch.Tensor]) -> Tensors:
    """One uid's Δ as fp32 CPU tensors in sorted name order, refusing anything non-finite.

    The codec already refuses non-finite payloads at decode time; this is the last line before a
    NaN would poison the shared checkpoint for everyone."""
    out: Tensors = {}
    for name in sorted(delta):
        tensor = delta[name]
        if not isinstance(tensor, torch.Tensor) or not torch.is_floating_point(tensor):
            raise PayloadRejected(
                f"uid {uid}: delta tensor {name!r} is not a floating-point tensor",
                code="delta_not_float",
            )
        value = _fp32(tensor)
        if not bool(torch.isfinite(value).all()):
            raise PayloadRejected(
                f"uid {uid}: delta tensor {name!r} has non-finite values",
                code="delta_not_finite",
                fix="a payload must decode to finite values; it should be rejected at decode time",
            )
        out[name] = value
    return out


def _check_layout(uid: int, delta: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple]) -> None:
    if sorted(delta) != sorted(shapes):
        missing = sorted(set(shapes) - set(delta))[:3]
        extra = sorted(set(delta) - set(shapes))[:3]
        raise PayloadRejected(
            f"uid {uid}: delta tensors do not match the checkpoint "
            f"(missing {missing}, unexpected {extra})",
            code="delta_layout_mismatch",
        )
    for name in sorted(shapes):
        if tuple(delta[name].shape) != tuple(shapes[name]):
            raise PayloadRejected(
                f"uid {uid}: delta tensor {name!r} has shape {tuple(delta[name].shape)}, "
                f"the checkpoint has {tuple(shapes[name])}",
                code="delta_layout_mismatch",
            )


def global_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """L2 norm over every value of every tensor, exactly rounded (machine independent)."""

    def squares(name: str) -> list[float]:
        values = _fp32(tensors[name]).to(torch.float64).reshape(-1)
        return (values * values).tolist()  # exact: an fp32 value squared fits a float64

    return math.sqrt(math.fsum(itertools.chain.from_iterable(map(squares, sorted(tensors)))))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def clip_to_median(
    deltas: Mapping[int, Mapping[str, torch.Tensor]],
) -> tuple[dict[int, Tensors], dict[int, float], float]:
    """Scale every Δ whose global norm exceeds the median of all norms down to that median.

    A uid at or under the median is returned unchanged (bit for bit), so one huge payload can
    move the average no further than a typical one. Returns (clipped, norms, median)."""
    checked = {uid: _checked_delta(uid, deltas[uid]) for uid in sorted(deltas)}
    norms = {uid: global_norm(delta) for uid, delta in checked.items()}
    if not checked:
        return {}, {}, 0.0
    median = _median(list(norms.values()))
    clipped: dict[int, Tensors] = {}
    for uid, delta in checked.items():
        if norms[uid] <= median:
            clipped[uid] = delta
            continue
        scale = torch.tensor(median / norms[uid], dtype=torch.float32)
        clipped[uid] = {name: value * scale for name, value in delta.items()}
    return clipped, norms, median


def average(deltas: Mapping[int, Mapping[str, torch.Tensor]]) -> Tensors:
    """Element-wise mean, summed explicitly in ascending uid order and then divided once."""
    uids = sorted(deltas)
    if not uids:
        raise ValueError("average() needs at least one delta; aggregate_round skips empty rounds")
    first = _checked_delta(uids[0], deltas[uids[0]])
    shapes = {name: tuple(value.shape) for name, value in first.items()}
    sums = {name: value.clone() for name, value in first.items()}
    for uid in uids[1:]:
        _check_layout(uid, deltas[uid], shapes)
        delta = _checked_delta(uid, deltas[uid])
        for name in sorted(sums):
            sums[name].add_(delta[name])
    count = torch.tensor(float(len(uids)), dtype=torch.float32)
    return {name: sums[name] / count for name in sorted(sums)}


def _check_settings(lr: float, momentum_factor: float) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"outer lr must be a finite number > 0, got {lr!r}")
    if not (math.isfinite(momentum_factor) and 0 <= momentum_factor < 1):
        raise ConfigError(f"outer momentum must be in [0, 1), got {momentum_factor!r}")


def outer_step(
    params: Mapping[str, torch.Tensor],
    momentum: Mapping[str, torch.Tensor] | None,
    update: Mapping[str, torch.Tensor],
    *,
    lr: float,
    momentum_factor: float,
    nesterov: bool,
) -> tuple[Tensors, Tensors | None]:
    """θ ← θ − lr·u (SGD), or with momentum m ← μ·m + u and θ ← θ − lr·(u + μ·m) (Nesterov) /
    θ ← θ − lr·m. Inputs are never mutated; momentum starts at zero when ``None``."""
    _check_settings(lr, momentum_factor)
    shapes = {name: tuple(value.shape) for name, value in params.items()}
    if sorted(update) != sorted(shapes) or any(tuple(update[n].shape) != shapes[n] for n in shapes):
        raise ValueError("the outer update's tensors do not match the checkpoint's")
    rate = torch.tensor(lr, dtype=torch.float32)
    if momentum_factor == 0:
        new = {n: _fp32(params[n]) - _fp32(update[n]) * rate for n in sorted(params)}
        return new, None
    if momentum is not None and (
        sorted(momentum) != sorted(shapes)
        or any(tuple(momentum[n].shape) != shapes[n] for n in shapes)
    ):
        raise ConfigError(
            "outer momentum state does not match the checkpoint's tensors",
            fix="start the momentum from zero (None) when the checkpoint layout changes",
        )
    mu = torch.tensor(momentum_factor, dtype=torch.float32)
    new_params: Tensors = {}
    new_momentum: Tensors = {}
    for name in sorted(params):
        u = _fp32(update[name])
        m = _fp32(momentum[name]) if momentum is not None else torch.zeros_like(u)
        m = m * mu + u
        step = (u + m * mu) if nesterov else m
        new_params[name] = _fp32(params[name]) - step * rate
        new_momentum[name] = m
    return new_params, new_momentum


def aggregate_round(
    params: Mapping[str, torch.Tensor],
    momentum: Mapping[str, torch.Tensor] | None,
    deltas_by_uid: Mapping[int, Mapping[str, torch.Tensor]],
    *,
    lr: float,
    momentum_factor: float,
    nesterov: bool,
) -> AggregateResult:
    """Clip → average → outer step. With no contributors the checkpoint (and momentum) carry
    over unchanged: an empty round costs nothing and never stalls."""
    _check_settings(lr, momentum_factor)
    current = {name: _fp32(params[name]) for name in sorted(params)}
    kept = None if momentum is None else {n: _fp32(momentum[n]) for n in sorted(momentum)}
    if momentum_factor == 0:
        kept = None
    if not deltas_by_uid:
        return AggregateResult(current, kept, {}, 0.0, ())
    shapes = {name: tuple(value.shape) for name, value in current.items()}
    for uid in sorted(deltas_by_uid):
        _check_layout(uid, deltas_by_uid[uid], shapes)
    clipped, norms, median = clip_to_median(deltas_by_uid)
    update = average(clipped)
    new_params, new_momentum = outer_step(
        current, kept, update, lr=lr, momentum_factor=momentum_factor, nesterov=nesterov
    )
    return AggregateResult(new_params, new_momentum, norms, median, tuple(sorted(clipped)))


def _field(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _little_endian_bytes(tensor: torch.Tensor) -> bytes:
    value = tensor.detach().to("cpu").contiguous()
    if value.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its 16-bit patterns
        value = value.view(torch.int16)
    array = value.numpy()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def tensors_digest(params: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) of every tensor in sorted order,
    each field length-prefixed: equal digests mean bit-identical tensor sets."""
    digest = hashlib.sha256(b"crucible-tensors-v1")
    for name in sorted(params):
        tensor = params[name]
        digest.update(_field(name.encode()))
        digest.update(_field(str(tensor.dtype).encode()))
        digest.update(_field(",".join(str(d) for d in tensor.shape).encode()))
        digest.update(_field(_little_endian_bytes(tensor)))
    return digest.hexdigest()
