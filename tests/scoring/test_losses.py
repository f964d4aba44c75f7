"""The shared evaluation is exact (thread count, repetition, the plain cross-entropy, models
side by side) and the training loss is the plain cross-entropy without the logits tensor."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from crucible.models.build import tiny_model
from crucible.protocol.errors import ResourceExhausted
from crucible.scoring.losses import (
    chunk_positions,
    linear_cross_entropy,
    next_token_nll,
    per_sample_losses,
    per_sample_losses_many,
    token_logprobs,
)

VOCAB = 8192  # the competitions' vocabulary: the head runs in several chunks of 256 positions
WINDOWS = np.random.default_rng(3).integers(0, VOCAB, size=(6, 96))  # 576 positions: 3 chunks


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _plain(model: torch.nn.Module, windows: np.ndarray) -> list[float]:
    """The obvious computation: full logits, then the cross-entropy, sample by sample."""
    with torch.no_grad():
        ids = torch.from_numpy(windows)
        logits = model(input_ids=ids).logits[:, :-1]
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return nll.mean(dim=1).tolist()


def test_the_head_runs_in_chunks_of_positions_sized_by_the_vocabulary() -> None:
    assert chunk_positions(8192) == 256  # 2**21 logits: 8 MiB of fp32
    assert chunk_positions(50_257) == 64  # never fewer rows than that
    assert chunk_positions(512) == 4096


def test_losses_are_the_same_bits_on_one_and_two_threads_and_on_every_run(threads) -> None:
    model = tiny_model(VOCAB, 96)
    torch.set_num_threads(1)
    one = per_sample_losses(model, WINDOWS, batch_size=4).losses
    torch.set_num_threads(2)
    two = per_sample_losses(model, WINDOWS, batch_size=4).losses
    assert one == two  # max |Δ| = 0
    assert per_sample_losses(model, WINDOWS, batch_size=4).losses == two


def test_chunked_losses_equal_the_plain_cross_entropy() -> None:
    model = tiny_model(VOCAB, 96)
    ours = per_sample_losses(model, WINDOWS, batch_size=4).losses
    assert np.max(np.abs(np.subtract(ours, _plain(model, WINDOWS)))) <= 1e-5


def test_a_sample_scores_the_same_alone_and_in_a_batch() -> None:
    model = tiny_model(VOCAB, 96)
    batched = per_sample_losses(model, WINDOWS, batch_size=6).losses
    alone = [per_sample_losses(model, WINDOWS[i : i + 1], batch_size=1).losses[0] for i in range(6)]
    assert np.allclose(batched, alone, rtol=0, atol=1e-6)


def test_the_last_position_has_nothing_to_predict() -> None:
    model = tiny_model(VOCAB, 96)
    with torch.inference_mode():
        nll = next_token_nll(model, torch.from_numpy(WINDOWS[:2]))
    assert nll.shape == (2, 96) and torch.all(nll[:, -1] == 0) and torch.all(nll[:, :-1] > 0)


def test_served_logprobs_are_the_negated_evaluation_nll() -> None:
    model = tiny_model(VOCAB, 96)
    ids = WINDOWS[0].tolist()
    values = token_logprobs(model, ids)
    with torch.inference_mode():
        nll = next_token_nll(model, torch.tensor([ids]))[0, :-1].tolist()
    assert values == [-x for x in nll]
    loss = per_sample_losses(model, WINDOWS[:1], batch_size=1).losses[0]
    assert -np.mean(values) == pytest.approx(loss, abs=1e-6)


def _plain_loss_and_grads(hidden, weight, targets):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = F.cross_entropy(h @ w.t(), targets)
    loss.backward()
    return loss, h.grad, w.grad


def _ours_loss_and_grads(hidden, weight, targets, chunk):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, targets, chunk=chunk)
    (loss * 3.0).backward()  # the incoming gradient scales both results
    return loss, h.grad / 3.0, w.grad / 3.0


def test_linear_cross_entropy_is_the_plain_loss_with_its_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(50, 16, generator=g), torch.randn(300, 16, generator=g)
    targets = torch.randint(0, 300, (50,), generator=g)
    targets[[0, 7, 49]] = -100  # ignored, like the last position of every sequence
    want = _plain_loss_and_grads(hidden, weight, targets)
    got = _ours_loss_and_grads(hidden, weight, targets, chunk=7)  # 8 chunks, the last partial
    assert got[0].item() == pytest.approx(want[0].item(), rel=1e-6)
    assert torch.allclose(got[1], want[1], rtol=1e-5, atol=1e-7)
    assert torch.allclose(got[2], want[2], rtol=1e-5, atol=1e-7)
    assert torch.all(got[1][[0, 7, 49]] == 0)  # an ignored position gets no gradient


def test_linear_cross_entropy_is_stable_on_huge_logits() -> None:
    g = torch.Generator().manual_seed(1)
    hidden, weight = 300 * torch.randn(20, 8, generator=g), 300 * torch.randn(64, 8, generator=g)
    targets = torch.randint(0, 64, (20,), generator=g)
    want = _plain_loss_and_grads(hidden, weight, targets)
    got = _ours_loss_and_grads(hidden, weight, targets, chunk=6)
    assert torch.isfinite(got[0]) and got[0].item() == pytest.approx(want[0].item(), rel=1e-5)
    assert torch.isfinite(got[1]).all() and torch.isfinite(got[2]).all()


def test_linear_cross_entropy_without_gradients_computes_only_the_loss() -> None:
    g = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(30, 8, generator=g), torch.randn(40, 8, generator=g)
    targets = torch.randint(0, 40, (30,), generator=g)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets, chunk=4)
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(
        F.cross_entropy(hidden @ weight.t(), targets).item(), rel=1e-6
    )


@settings(max_examples=25, deadline=None)
@given(
    positions=st.integers(1, 40),
    vocab=st.integers(2, 70),
    chunk=st.integers(1, 45),
    ignored=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_linear_cross_entropy_equals_the_plain_loss_for_any_shape_and_chunk(
    positions: int, vocab: int, chunk: int, ignored: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    hidden, weight = torch.randn(positions, 8, generator=g), torch.randn(vocab, 8, generator=g)
    targets = torch.randint(0, vocab, (positions,), generator=g)
    targets[torch.rand(positions, generator=g) < ignored] = -100
    targets[0] = 0  # at least one position counts
    want = _plain_loss_and_grads(hidden, weight, targets)
    got = _ours_loss_and_grads(hidden, weight, targets, chunk)
    assert got[0].item() == pytest.approx(want[0].item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(got[1], want[1], rtol=1e-4, atol=1e-6)
    assert torch.allclose(got[2], want[2], rtol=1e-4, atol=1e-6)


def test_models_evaluated_side_by_side_score_the_same_bits_in_order(threads) -> None:
    torch.set_num_threads(2)
    models = [tiny_model(VOCAB, 96, seed=s) for s in range(3)]
    alone = [per_sample_losses(m, WINDOWS, batch_size=4).losses for m in models]
    outcomes = per_sample_losses_many(models, WINDOWS, batch_size=4, workers=2)
    assert [o.losses for o in outcomes] == alone
    assert torch.get_num_threads() == 2  # the caller's setting is back


def test_side_by_side_one_models_failure_is_its_own() -> None:
    broken, exhausted, fine = tiny_model(), tiny_model(), tiny_model()
    with torch.no_grad():
        broken.model.norm.weight.fill_(float("nan"))

    def out_of_memory(module: torch.nn.Module, args: object) -> None:
        raise MemoryError()

    exhausted.model.layers[0].register_forward_pre_hook(out_of_memory)
    windows = np.random.default_rng(4).integers(0, 512, size=(4, 16))
    outcomes = per_sample_losses_many([broken, exhausted, fine], windows, batch_size=2, workers=2)
    assert outcomes[0].error == "non-finite loss"
    assert (
        isinstance(outcomes[1], ResourceExhausted) and outcomes[1].code == "validator_out_of_memory"
    )
    assert outcomes[2].losses == per_sample_losses(tiny_model(), windows, batch_size=2).losses
