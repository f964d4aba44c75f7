"""The validator's scoring primitive: the loss under θ − lr·Δ is exactly the loss of the model
built from those parameters, and θ comes back bit for bit, also when a measurement raises; a Δ
that does not fit the model is the payload's fault."""

from __future__ import annotations

import math

import pytest
import torch

from crucible.collab.measure import loss_with_delta, losses_before_after, mean_loss
from crucible.collab.shared_model import build_shared_model, genesis_params, model_params
from crucible.competitions import specs_dir
from crucible.protocol.collab import CollabSpec, load_collab_specs
from crucible.protocol.errors import ConfigError, PayloadRejected


@pytest.fixture(scope="module")
def spec() -> CollabSpec:
    return load_collab_specs(specs_dir())["collab"]


def _batches(spec: CollabSpec) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    shape = (3, spec.model.sequence_length)
    return [torch.randint(0, spec.model.vocab_size, shape, generator=gen) for _ in range(2)]


def _delta(params: dict[str, torch.Tensor], scale: float = 0.01) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {name: torch.randn(p.shape, generator=gen) * scale for name, p in params.items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_loss_under_a_delta_is_the_loss_of_the_updated_model_and_theta_comes_back(
    spec: CollabSpec,
) -> None:
    model, theta = build_shared_model(spec), genesis_params(spec)
    delta, batches = _delta(theta), _batches(spec)
    after = loss_with_delta(model, delta, 0.7, batches, batch_size=2)
    assert _same(model_params(model), theta)  # bitwise
    updated = build_shared_model(spec, {name: theta[name] - delta[name] * 0.7 for name in theta})
    assert after == [mean_loss(updated, b, 2) for b in batches]  # the same bits
    before, again = losses_before_after(model, delta, 0.7, batches)
    assert before == [mean_loss(model, b, 3) for b in batches] and again == after
    assert before != after and all(math.isfinite(x) for x in before + after)
    assert _same(model_params(model), theta) and not model.training


def test_theta_comes_back_when_a_measurement_raises(spec: CollabSpec) -> None:
    model, theta = build_shared_model(spec), genesis_params(spec)
    model.train()
    broken = [_batches(spec)[0], torch.zeros(spec.model.sequence_length, dtype=torch.int64)]
    with pytest.raises(ConfigError, match=r"a batch is int64 \[windows, tokens ≥ 2\]"):
        loss_with_delta(model, _delta(theta), 1.0, broken)
    assert _same(model_params(model), theta) and model.training


def test_a_delta_that_breaks_the_model_scores_worst_and_changes_nothing(spec: CollabSpec) -> None:
    model, theta = build_shared_model(spec), genesis_params(spec)
    poisoned = _delta(theta) | {"model.norm.weight": torch.full_like(theta["model.norm.weight"], math.nan)}  # fmt: skip
    assert loss_with_delta(model, poisoned, 1.0, _batches(spec)) == [math.inf, math.inf]
    assert _same(model_params(model), theta)


def test_a_delta_that_does_not_fit_the_model_is_the_payloads_fault(spec: CollabSpec) -> None:
    model, theta = build_shared_model(spec), genesis_params(spec)
    delta, batches = _delta(theta), _batches(spec)
    missing = {k: v for k, v in delta.items() if k != "model.norm.weight"}
    with pytest.raises(PayloadRejected, match=r"missing \['model.norm.weight'\]") as caught:
        loss_with_delta(model, missing, 1.0, batches)
    assert caught.value.code == "payload_tensors"
    with pytest.raises(PayloadRejected, match=r"unexpected \['lm_head.weight'\]"):
        loss_with_delta(model, delta | {"lm_head.weight": delta["model.embed_tokens.weight"]}, 1.0, batches)  # fmt: skip
    with pytest.raises(PayloadRejected, match="the parameter is \\(128,\\)") as caught:
        loss_with_delta(model, delta | {"model.norm.weight": torch.zeros(127)}, 1.0, batches)
    assert caught.value.code == "payload_shape"
    assert _same(model_params(model), theta)
