"""The outer step: median clipping, uid-ordered averaging, SGD / Nesterov, bit-identical digests."""

from __future__ import annotations

import math

import pytest
import torch

from crucible.collab.aggregate import (
    aggregate_round,
    average,
    clip_to_median,
    global_norm,
    outer_step,
    tensors_digest,
)
from crucible.protocol.errors import ConfigError, PayloadRejected

SHAPES = {"layer.0.weight": (48, 40), "embed": (300, 16), "layer.0.bias": (40,), "norm": (7, 3)}


def _tensors(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) * scale for name, shape in SHAPES.items()}


def _deltas() -> dict[int, dict[str, torch.Tensor]]:
    # five uids with very different norms, one of them huge
    scales = {7: 0.01, 3: 0.02, 11: 0.015, 5: 50.0, 2: 0.005}
    return {uid: _tensors(100 + uid, scale) for uid, scale in scales.items()}


def _reordered(tensors: dict, reverse_names: bool = True) -> dict:
    """The same content with the opposite insertion order of keys (and of nested keys)."""
    out = {}
    for key in sorted(tensors, reverse=True):
        value = tensors[key]
        if isinstance(value, dict) and reverse_names:
            value = {n: value[n].clone() for n in sorted(value, reverse=True)}
        elif isinstance(value, torch.Tensor):
            value = value.clone()
        out[key] = value
    return out


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


@pytest.mark.parametrize("momentum_factor,nesterov", [(0.0, False), (0.9, True), (0.9, False)])
def test_aggregate_is_bit_identical_whatever_the_input_order(momentum_factor, nesterov):
    params, momentum, deltas = _tensors(1), _tensors(2, 0.1), _deltas()
    kwargs = {"lr": 0.7, "momentum_factor": momentum_factor, "nesterov": nesterov}
    first = aggregate_round(params, momentum, deltas, **kwargs)
    again = aggregate_round(params, momentum, deltas, **kwargs)
    shuffled = aggregate_round(
        _reordered(params), _reordered(momentum), _reordered(deltas), **kwargs
    )
    for other in (again, shuffled):
        assert tensors_digest(other.params) == tensors_digest(first.params)
        assert other.norms == first.norms and other.median == first.median
        if momentum_factor:
            assert tensors_digest(other.momentum) == tensors_digest(first.momentum)
        else:
            assert other.momentum is None
    assert first.uids == (2, 3, 5, 7, 11)
    assert tensors_digest(first.params) != tensors_digest(params)


def test_aggregate_does_not_depend_on_the_thread_count():
    # element-wise ops only: splitting the work over threads cannot change a single bit
    big = {"w": torch.randn(300, 400, generator=torch.Generator().manual_seed(5))}
    deltas = {uid: {"w": big["w"] * (0.01 * uid)} for uid in (1, 2, 3, 4)}
    kwargs = {"lr": 0.7, "momentum_factor": 0.9, "nesterov": True}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = aggregate_round(big, None, deltas, **kwargs)
    finally:
        torch.set_num_threads(threads)
    many = aggregate_round(big, None, deltas, **kwargs)
    assert tensors_digest(single.params) == tensors_digest(many.params)
    assert tensors_digest(single.momentum) == tensors_digest(many.momentum)


def test_huge_delta_is_clipped_to_the_median_norm_exactly():
    # norms 1, 2, 64 → median 2; the huge one is scaled by 2/64 = 1/32 (exact in binary)
    deltas = {1: {"w": _t(1, 0, 0)}, 2: {"w": _t(0, 2, 0)}, 3: {"w": _t(0, 0, 64)}}
    clipped, norms, median = clip_to_median(deltas)
    assert norms == {1: 1.0, 2: 2.0, 3: 64.0}
    assert median == 2.0
    assert torch.equal(clipped[3]["w"], _t(0, 0, 2))
    assert torch.equal(clipped[1]["w"], deltas[1]["w"])
    assert torch.equal(clipped[2]["w"], deltas[2]["w"])


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    # norms 1, 2, 4, 8 (the last over two tensors: 3-4-5 scaled) → median (2 + 4) / 2 = 3
    deltas = {
        10: {"a": _t(1), "b": _t(0)},
        20: {"a": _t(0), "b": _t(-2)},
        30: {"a": _t(4), "b": _t(0)},
        40: {"a": _t(4.8), "b": _t(6.4)},
    }
    clipped, norms, median = clip_to_median(deltas)
    assert median == 3.0
    assert norms[40] == pytest.approx(8.0, rel=1e-7)
    assert torch.equal(clipped[30]["a"], _t(3))  # 4 · 3/4
    assert global_norm(clipped[40]) == pytest.approx(3.0, rel=1e-6)
    for uid in (10, 20):
        assert all(torch.equal(clipped[uid][n], deltas[uid][n]) for n in ("a", "b"))


def test_clipping_real_tensors_scales_only_those_above_the_median():
    deltas = _deltas()
    clipped, norms, median = clip_to_median(deltas)
    assert median == norms[11]  # scales 0.005, 0.01, 0.015, 0.02, 50: the middle one
    for uid, delta in deltas.items():
        if norms[uid] <= median:
            assert all(torch.equal(clipped[uid][n], delta[n]) for n in SHAPES)
        else:
            scale = torch.tensor(median / norms[uid], dtype=torch.float32)
            assert all(torch.equal(clipped[uid][n], delta[n] * scale) for n in SHAPES)
            assert global_norm(clipped[uid]) == pytest.approx(median, rel=1e-6)


def test_global_norm_is_exactly_rounded():
    # 10⁶ copies of 0.1f: the exact sum of squares, rounded once (math.fsum over exact squares)
    value = torch.full((1000, 1000), 0.1)
    square = float(value[0, 0]) ** 2
    assert global_norm({"x": value}) == math.sqrt(math.fsum([square] * 1_000_000))


def test_average_sums_in_uid_order_then_divides():
    deltas = {9: {"w": _t(3, 0, -1)}, 1: {"w": _t(1, 2, 1)}, 4: {"w": _t(2, 1, 3)}}
    assert torch.equal(average(deltas)["w"], _t(2, 1, 1))
    with pytest.raises(ValueError, match="at least one delta"):
        average({})


# A hand-computed 3-element outer step (every number is a dyadic fraction, so exact in fp32):
#   θ = [1, 2, 3], m = [0.5, −1, 0], u = [0.25, 0.5, −1], lr = 0.5, μ = 0.5
#   SGD:      θ − lr·u                       = [0.875, 1.75, 3.5]
#   m' = μ·m + u                             = [0.5, 0, −1]
#   Nesterov: θ − lr·(u + μ·m') = θ − 0.5·[0.5, 0.5, −1.5] = [0.75, 1.75, 3.75]
#   heavy ball: θ − lr·m'                    = [0.75, 2, 3.5]
THETA, MOM, UPDATE = {"w": _t(1, 2, 3)}, {"w": _t(0.5, -1, 0)}, {"w": _t(0.25, 0.5, -1)}


def test_sgd_outer_step_by_hand():
    params, momentum = outer_step(THETA, MOM, UPDATE, lr=0.5, momentum_factor=0.0, nesterov=False)
    assert torch.equal(params["w"], _t(0.875, 1.75, 3.5))
    assert momentum is None


def test_nesterov_outer_step_by_hand():
    params, momentum = outer_step(THETA, MOM, UPDATE, lr=0.5, momentum_factor=0.5, nesterov=True)
    assert torch.equal(momentum["w"], _t(0.5, 0, -1))
    assert torch.equal(params["w"], _t(0.75, 1.75, 3.75))


def test_heavy_ball_outer_step_by_hand():
    params, momentum = outer_step(THETA, MOM, UPDATE, lr=0.5, momentum_factor=0.5, nesterov=False)
    assert torch.equal(momentum["w"], _t(0.5, 0, -1))
    assert torch.equal(params["w"], _t(0.75, 2, 3.5))


def test_momentum_starts_at_zero():
    # m' = u; Nesterov step u + μ·u = [0.375, 0.75, −1.5]; θ − 0.5·that
    params, momentum = outer_step(THETA, None, UPDATE, lr=0.5, momentum_factor=0.5, nesterov=True)
    assert torch.equal(momentum["w"], UPDATE["w"])
    assert torch.equal(params["w"], _t(0.8125, 1.625, 3.75))


def test_aggregate_round_by_hand_and_inputs_untouched():
    # equal norms 0.5 → no clipping; mean [0.25, 0.25, 0]; SGD lr 0.5 → [0.875, 1.875, 3]
    deltas = {9: {"w": _t(0, 0.5, 0)}, 4: {"w": _t(0.5, 0, 0)}}
    before = {uid: d["w"].clone() for uid, d in deltas.items()}
    theta = THETA["w"].clone()
    result = aggregate_round(THETA, MOM, deltas, lr=0.5, momentum_factor=0.0, nesterov=False)
    assert torch.equal(result.params["w"], _t(0.875, 1.875, 3))
    assert result.momentum is None and result.uids == (4, 9) and result.median == 0.5
    assert torch.equal(THETA["w"], theta)
    assert all(torch.equal(deltas[uid]["w"], before[uid]) for uid in deltas)


def test_empty_round_leaves_the_checkpoint_unchanged():
    params, momentum = _tensors(1), _tensors(2)
    result = aggregate_round(params, momentum, {}, lr=0.7, momentum_factor=0.9, nesterov=True)
    assert tensors_digest(result.params) == tensors_digest(params)
    assert tensors_digest(result.momentum) == tensors_digest(momentum)
    assert result.norms == {} and result.median == 0.0 and result.uids == ()
    assert clip_to_median({}) == ({}, {}, 0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_delta_is_refused(bad):
    deltas = {1: {"w": _t(0.1, 0.2, 0.3)}, 2: {"w": _t(0.1, bad, 0.3)}}
    with pytest.raises(PayloadRejected, match="uid 2: delta tensor 'w' has non-finite values"):
        aggregate_round(THETA, None, deltas, lr=0.7, momentum_factor=0.0, nesterov=False)
    with pytest.raises(PayloadRejected, match="non-finite") as info:
        clip_to_median(deltas)
    assert info.value.code == "delta_not_finite"


def test_delta_that_does_not_fit_the_checkpoint_is_refused():
    kwargs = {"lr": 0.7, "momentum_factor": 0.0, "nesterov": False}
    with pytest.raises(PayloadRejected, match="uid 3: delta tensor 'w' has shape"):
        aggregate_round(THETA, None, {3: {"w": _t(1, 2)}}, **kwargs)
    with pytest.raises(PayloadRejected, match=r"uid 3: .*unexpected \['x'\]"):
        aggregate_round(THETA, None, {3: {"w": _t(1, 2, 3), "x": _t(1)}}, **kwargs)
    with pytest.raises(PayloadRejected, match="not a floating-point tensor"):
        aggregate_round(THETA, None, {3: {"w": torch.tensor([1, 2, 3])}}, **kwargs)


def test_bad_outer_settings_are_config_errors():
    with pytest.raises(ConfigError, match="outer lr must be"):
        aggregate_round(THETA, None, {}, lr=0.0, momentum_factor=0.0, nesterov=False)
    with pytest.raises(ConfigError, match="outer momentum must be"):
        outer_step(THETA, None, UPDATE, lr=0.5, momentum_factor=1.0, nesterov=True)
    with pytest.raises(ConfigError, match="momentum state does not match"):
        outer_step(THETA, {"v": _t(0)}, UPDATE, lr=0.5, momentum_factor=0.5, nesterov=True)


def test_tensors_digest_sees_every_bit_and_no_order():
    base = {"a": _t(1, 2, 3, 4), "b": _t(0.0)}
    digest = tensors_digest(base)
    assert tensors_digest({"b": _t(0.0), "a": _t(1, 2, 3, 4)}) == digest
    variants = [
        {"a": _t(1, 2, 3, 4), "b": _t(-0.0)},  # one sign bit
        {"a": _t(1, 2, 3, 4).reshape(2, 2), "b": _t(0.0)},  # same bytes, other shape
        {"a": _t(1, 2, 3, 4).double(), "b": _t(0.0)},  # other dtype
        {"A": _t(1, 2, 3, 4), "b": _t(0.0)},  # other name
        {"a": _t(1, 2, 3, 4)},  # a tensor fewer
        {"a": _t(1, 2, 3, 4).bfloat16(), "b": _t(0.0)},
    ]
    digests = {tensors_digest(v) for v in variants}
    assert digest not in digests and len(digests) == len(variants)
