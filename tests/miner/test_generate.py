"""Generation with the key/value cache equals recomputing the whole window every token."""

from __future__ import annotations

import pytest
import torch

from crucible.miner.serve import generate_tokens, token_logprobs
from crucible.models.build import ModelShape, build_config, build_model


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_cached_greedy_generation_equals_full_recompute_past_the_context(arch: str) -> None:
    model = build_model(
        build_config(ModelShape(arch, 512, 32, layers=2, hidden=32, heads=2, ffn=64))
    )
    prompt = list(range(5, 25))
    fast, finish = generate_tokens(
        model,
        prompt,
        30,
        temperature=0,
        top_p=1,
        top_k=0,
        seed=0,
        eos_token_id=None,
        max_positions=32,
    )
    ids, slow = list(prompt), []
    with torch.inference_mode():
        for _ in range(30):
            token = int(torch.argmax(model(input_ids=torch.tensor([ids[-32:]])).logits[0, -1]))
            slow.append(token)
            ids.append(token)
    assert fast == slow and finish == "length"


def test_sampling_is_reproducible_by_seed_and_logprobs_are_normalised() -> None:
    model = build_model(
        build_config(ModelShape("LlamaForCausalLM", 512, 32, layers=1, hidden=32, heads=2, ffn=64))
    )
    kwargs = dict(temperature=0.9, top_p=0.9, top_k=50, eos_token_id=None, max_positions=32)
    assert generate_tokens(model, [1, 2, 3], 8, seed=4, **kwargs) == generate_tokens(
        model, [1, 2, 3], 8, seed=4, **kwargs
    )
    values = token_logprobs(model, [1, 2, 3, 4])
    assert len(values) == 3 and all(v <= 0 for v in values)


def _tiny(seed: int = 0):
    return build_model(
        build_config(ModelShape("LlamaForCausalLM", 512, 32, layers=1, hidden=32, heads=2, ffn=64)),
        seed=seed,
    )


GREEDY = dict(temperature=0, top_p=1, top_k=0, seed=0, eos_token_id=None, max_positions=32)


def test_sampling_parameters_that_underflow_fall_back_instead_of_failing() -> None:
    """temperature 5e-324 made every probability NaN (a 500 before); top-p 1e-300 keeps only
    the most likely token, so it is exactly greedy."""
    model = _tiny()
    greedy, _ = generate_tokens(model, [1, 2, 3], 6, **GREEDY)
    tiny_p, _ = generate_tokens(
        model, [1, 2, 3], 6, **{**GREEDY, "temperature": 1.0, "top_p": 1e-300}
    )
    assert tiny_p == greedy
    tiny_t, _ = generate_tokens(
        model, [1, 2, 3], 6, **{**GREEDY, "temperature": 5e-324, "top_k": 3}
    )
    assert len(tiny_t) == 6 and all(0 <= t < 512 for t in tiny_t)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_model_with_non_finite_logits_gets_an_answer_not_an_exception(poison: float) -> None:
    model = _tiny()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(poison)
    out, finish = generate_tokens(
        model, [1, 2, 3], 4, **{**GREEDY, "temperature": 0.8, "top_p": 0.9}
    )
    assert len(out) == 4 and all(0 <= t < 512 for t in out) and finish == "length"


def test_generation_stops_at_the_next_token_once_cancelled() -> None:
    import threading

    from crucible.server.errors import WorkCancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(WorkCancelled, match="stopped after 0 tokens: abandoned"):
        generate_tokens(_tiny(), [1, 2, 3], 1000, cancel=cancel, **GREEDY)
