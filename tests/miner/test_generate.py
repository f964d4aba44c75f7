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
