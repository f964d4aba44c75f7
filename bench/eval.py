"""Evaluation throughput (tokens/s per model) against the machine's limit and a naive loop.

Limit: 2 × parameters × tokens / measured fp32 matmul FLOP/s (same run, same threads). Naive:
one sample at a time without inference_mode (autograd tracking on). Also estimates a full round
of 16 tiny models.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import matmul_flops  # noqa: E402
from crucible.competitions import specs_dir
from crucible.models.build import ModelShape, build_config, build_model, count_parameters  # noqa: E402
from crucible.protocol.competition import load_competitions  # noqa: E402
from crucible.scoring.losses import per_sample_losses  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def naive(model, windows: np.ndarray) -> float:
    start = time.perf_counter()
    for row in windows:
        ids = torch.from_numpy(row[None])
        logits = model(input_ids=ids).logits[:, :-1]
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
    return time.perf_counter() - start


def main() -> None:
    specs = load_competitions(specs_dir())
    flops = matmul_flops()
    figures: dict[str, float] = {
        "matmul_gflops": round(flops / 1e9, 1),
        "threads": torch.get_num_threads(),
    }
    rows = []
    cases = [
        ("tiny", specs["tiny"], ModelShape(), specs["tiny"].evaluation.samples_per_round, True),
        (
            "small",
            specs["small"],
            ModelShape("GPT2LMHeadModel", 8192, 1024, layers=12, hidden=768, heads=12, ffn=3072),
            2,
            False,
        ),
    ]
    rng = np.random.default_rng(0)
    for name, spec, shape, samples, with_naive in cases:
        model = build_model(build_config(shape))
        params = count_parameters(model)
        length = spec.model.sequence_length
        windows = rng.integers(0, spec.model.vocab_size, size=(samples, length))
        batch = min(spec.evaluation.batch_size, samples)
        per_sample_losses(model, windows[:batch], batch_size=batch)  # warm-up
        result = per_sample_losses(model, windows, batch_size=batch)
        tokens = samples * length
        tok_s = tokens / result.seconds
        limit = flops / (2 * params)
        figures[f"{name}_params"] = params
        figures[f"{name}_tokens_per_s"] = round(tok_s, 1)
        figures[f"{name}_fraction_of_limit"] = round(tok_s / limit, 3)
        note = ""
        if with_naive:
            naive_s = naive(model, windows[:16]) * samples / 16
            figures[f"{name}_speedup_vs_naive"] = round(naive_s / result.seconds, 2)
            figures[f"{name}_round_16_models_s"] = round(16 * result.seconds, 1)
            note = f"{naive_s / result.seconds:.1f}x naive; 16 models/round ≈ {16 * result.seconds:.0f} s"
        rows.append((name, f"{params / 1e6:.1f}M", f"{tok_s:,.0f}", f"{tok_s / limit:.0%}", note))
    print(f"fp32 matmul: {flops / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads")
    print(f"{'model':6} {'params':>7} {'tokens/s':>10} {'of limit':>9}  note")
    for row in rows:
        print(f"{row[0]:6} {row[1]:>7} {row[2]:>10} {row[3]:>9}  {row[4]}")
    print("targets: >= 50% of the limit, >= 5x the naive loop")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
