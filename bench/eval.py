"""Evaluation throughput (tokens/s per model) against the machine's limit and two baselines.

Limit: 2 × parameters × tokens / measured fp32 matmul FLOP/s (same run, same threads, same
device); the fraction of it reached is the model FLOPs utilisation (MFU). Baselines, same run:
*plain* is the obvious batched loop (``inference_mode``, full logits, ``F.cross_entropy``), what
``per_sample_losses`` replaced; *naive* is one sample at a time with autograd on. Also: a round
of 16 tiny models, one after the other and side by side (``per_sample_losses_many``: as many
models at a time as threads, one thread each), and the exactness checks (per-sample losses identical on 1 and 2 threads and
across runs, equal to the plain cross-entropy within 1e-5; on a GPU, equal to the CPU's).

    python bench/eval.py                      # CPU, 1 and 2 threads
    python bench/eval.py --device cuda        # one GPU (IEEE fp32, no TF32)
    python bench/eval.py --compile            # also time torch.compile (slow to compile)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from bench.common import matmul_flops, synchronize  # noqa: E402
from crucible.competitions import specs_dir  # noqa: E402
from crucible.models.build import ModelShape, build_config, build_model, count_parameters  # noqa: E402
from crucible.protocol.competition import load_competitions  # noqa: E402
from crucible.scoring.losses import per_sample_losses, per_sample_losses_many  # noqa: E402

SMALL_SHAPE = ModelShape("GPT2LMHeadModel", 8192, 1024, layers=12, hidden=768, heads=12, ffn=3072)


def plain(model, windows: np.ndarray, batch: int, device: str) -> list[float]:
    """The obvious batched evaluation: full logits, then the cross-entropy."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            ids = torch.from_numpy(windows[i : i + batch]).to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            out.extend(nll.mean(dim=1).cpu().tolist())
    return out


def naive_seconds(model, windows: np.ndarray, device: str) -> float:
    start = time.perf_counter()
    for row in windows:
        ids = torch.from_numpy(row[None]).to(device)
        logits = model(input_ids=ids).logits[:, :-1]
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()
    return time.perf_counter() - start


def timed(fn, repeats: int, device: str) -> tuple[float, list]:
    """Best wall time of ``repeats`` calls (after one warm-up call), and every call's result."""
    results = [fn()]
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        results.append(fn())
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, results


def cases(device: str) -> list[tuple[str, ModelShape, int, int, int]]:
    """(name, shape, samples, batch, repeats): the competitions' models and round sizes (the
    small model on a CPU: 2 samples, it runs at ~100 tokens/s)."""
    specs = load_competitions(specs_dir())
    tiny, small = specs["tiny"], specs["small"]
    on_gpu = torch.device(device).type == "cuda"
    small_samples = small.evaluation.samples_per_round if on_gpu else 2
    return [
        ("tiny", ModelShape(), tiny.evaluation.samples_per_round, tiny.evaluation.batch_size, 3),
        ("small", SMALL_SHAPE, small_samples, min(small.evaluation.batch_size, small_samples), 2),
    ]


def measure(name, shape, samples, batch, repeats, device, threads, figures, rows) -> dict:
    """Ours and the plain loop at each thread count; returns each thread count's losses."""
    model = build_model(build_config(shape)).to(device)
    params = count_parameters(model)
    windows = np.random.default_rng(0).integers(
        0, shape.vocab_size, size=(samples, shape.sequence_length)
    )
    tokens = samples * shape.sequence_length
    # PaLM's MFU (appendix B), forward only: the parameters' 2 FLOPs per token plus attention's
    # two (length × length) matmuls per layer, 4·layers·hidden·length, counted at full length
    with_attention = (2 * params + 4 * shape.layers * shape.hidden * shape.sequence_length) / (2 * params)  # fmt: skip
    figures[f"{name}_params"] = params
    losses = {}
    for t in threads:
        torch.set_num_threads(t)
        before = matmul_flops(device=device)
        ours_s, results = timed(lambda: per_sample_losses(model, windows, batch_size=batch, device=device), repeats, device)  # fmt: skip
        plain_s, references = timed(lambda: plain(model, windows, batch, device), 1 if name == "small" else repeats, device)  # fmt: skip
        # the machine's rate before and after, the higher of the two: a load that comes and
        # goes cannot make the fraction look better than it is
        limit = max(before, matmul_flops(device=device)) / (2 * params)  # tokens/s
        result, reference = results[-1], references[-1]
        losses[t] = result.losses
        key = f"{name}_t{t}" if device == "cpu" else name
        figures[f"{key}_tokens_per_s"] = round(tokens / ours_s, 1)
        figures[f"{key}_fraction_of_limit"] = round(tokens / ours_s / limit, 3)
        figures[f"{key}_mfu_with_attention"] = round(tokens / ours_s / limit * with_attention, 3)
        figures[f"{key}_plain_fraction_of_limit"] = round(tokens / plain_s / limit, 3)
        figures[f"{key}_speedup_vs_plain"] = round(plain_s / ours_s, 2)
        figures[f"{key}_seconds_per_model"] = round(ours_s, 3)
        figures[f"{name}_max_abs_diff_vs_plain_ce"] = max(
            figures.get(f"{name}_max_abs_diff_vs_plain_ce", 0.0),
            float(np.max(np.abs(np.subtract(result.losses, reference)))),
        )
        same = all(r.losses == result.losses for r in results)  # every run, warm-up included
        figures[f"{name}_repeat_identical"] = figures.get(f"{name}_repeat_identical", True) and same
        where = f"{t} thr" if device == "cpu" else device
        rows.append((name, f"{params / 1e6:.1f}M", where, f"{tokens / ours_s:,.0f}", f"{tokens / ours_s / limit:.0%}", f"{tokens / ours_s / limit * with_attention:.0%}", f"{tokens / plain_s / limit:.0%}", f"{plain_s / ours_s:.2f}x"))  # fmt: skip
    if len(losses) > 1:
        a, b = (losses[t] for t in threads[:2])
        figures[f"{name}_max_abs_diff_1_vs_2_threads"] = float(np.max(np.abs(np.subtract(a, b))))
    if torch.device(device).type == "cuda":  # the first 4 samples again on the CPU (slow there)
        cpu = per_sample_losses(
            build_model(build_config(shape)), windows[:4], batch_size=batch
        ).losses
        gpu = losses[threads[0]][:4]
        figures[f"{name}_max_abs_diff_gpu_vs_cpu"] = float(np.max(np.abs(np.subtract(gpu, cpu))))
    return {"model": model, "windows": windows, "batch": batch}


def side_by_side(tiny: dict, device: str, threads: int, figures: dict) -> None:
    """A round of 16 tiny models evaluated ``threads`` at a time, one thread each
    (``per_sample_losses_many``), against the same models one after the other."""
    torch.set_num_threads(threads)
    models = [tiny["model"]] + [build_model(build_config(ModelShape()), seed=s).to(device) for s in range(1, 16)]  # fmt: skip
    alone = per_sample_losses(models[0], tiny["windows"], batch_size=tiny["batch"], device=device)
    start = time.perf_counter()
    outcomes = per_sample_losses_many(models, tiny["windows"], batch_size=tiny["batch"], device=device)  # fmt: skip
    figures["tiny_round_16_models_side_by_side_s"] = round(time.perf_counter() - start, 1)
    figures["tiny_round_side_by_side_threads"] = threads
    figures["tiny_round_side_by_side_same_losses"] = outcomes[0].losses == alone.losses


def compiled(model, windows: np.ndarray, batch: int, device: str, figures: dict) -> None:
    """torch.compile of the model body: compile seconds (paid once per model shape and process)
    against the time it saves, and whether the losses change."""
    eager_s, (eager, *_) = timed(lambda: per_sample_losses(model, windows, batch_size=batch, device=device), 2, device)  # fmt: skip
    body = model.base_model
    fast = torch.compile(body, dynamic=False)
    setattr(model, model.base_model_prefix, fast)
    try:
        start = time.perf_counter()
        per_sample_losses(model, windows[:batch], batch_size=batch, device=device)
        compile_s = time.perf_counter() - start
        fast_s, (result, *_) = timed(lambda: per_sample_losses(model, windows, batch_size=batch, device=device), 2, device)  # fmt: skip
    finally:
        setattr(model, model.base_model_prefix, body)
    figures["tiny_compile_s"] = round(compile_s, 1)
    figures["tiny_compiled_seconds_per_model"] = round(fast_s, 3)
    figures["tiny_eager_seconds_per_model"] = round(eager_s, 3)
    figures["tiny_compiled_max_abs_diff_vs_eager"] = float(np.max(np.abs(np.subtract(result.losses, eager.losses))))  # fmt: skip
    figures["tiny_compile_pays_after_models"] = (
        round(compile_s / (eager_s - fast_s), 1) if eager_s > fast_s else None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to measure at")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    device = args.device
    threads = [int(t) for t in args.threads.split(",")] if device == "cpu" else [torch.get_num_threads()]  # fmt: skip
    figures: dict = {"device": device if device == "cpu" else torch.cuda.get_device_name(device)}
    rows: list[tuple] = []
    kept = {}
    for case in cases(device):
        kept[case[0]] = measure(*case, device, threads, figures, rows)
    tiny = kept["tiny"]
    best = min((t for t in threads), key=lambda t: figures[f"tiny_t{t}_seconds_per_model" if device == "cpu" else "tiny_seconds_per_model"])  # fmt: skip
    per_model = figures[f"tiny_t{best}_seconds_per_model" if device == "cpu" else "tiny_seconds_per_model"]  # fmt: skip
    torch.set_num_threads(best)
    figures["tiny_round_16_models_s"] = round(16 * per_model, 1)
    figures["tiny_round_threads"] = best
    naive_s = naive_seconds(tiny["model"], tiny["windows"][:16], device) * len(tiny["windows"]) / 16
    figures["tiny_speedup_vs_naive"] = round(naive_s / per_model, 2)
    side_by_side(tiny, device, max(threads), figures)
    if args.compile:
        compiled(tiny["model"], tiny["windows"], tiny["batch"], device, figures)
    print(f"evaluation on {figures['device']}: ours vs the plain batched loop, as a fraction of the fp32 matmul limit (MFU)")  # fmt: skip
    print(
        f"{'model':6} {'params':>7} {'on':>7} {'tokens/s':>10} {'ours':>6} {'+attn':>6} {'plain':>6} {'speedup':>8}"
    )
    for r in rows:
        print(f"{r[0]:6} {r[1]:>7} {r[2]:>7} {r[3]:>10} {r[4]:>6} {r[5]:>6} {r[6]:>6} {r[7]:>8}")
    print("ours, plain: 2 x parameters FLOPs per token; +attn: ours with attention's matmuls counted too (PaLM's MFU)")  # fmt: skip
    print(f"16 tiny models per round ≈ {figures['tiny_round_16_models_s']:.1f} s one after the other ({best} threads); {figures['tiny_round_16_models_side_by_side_s']:.1f} s side by side ({figures['tiny_round_side_by_side_threads']} at a time, 1 thread each; same losses: {figures['tiny_round_side_by_side_same_losses']}); {figures['tiny_speedup_vs_naive']:.1f}x the naive loop")  # fmt: skip
    for name in ("tiny", "small"):
        checks = [f"vs plain CE max |Δ| {figures[f'{name}_max_abs_diff_vs_plain_ce']:.1e}", f"repeat identical: {figures[f'{name}_repeat_identical']}"]  # fmt: skip
        if f"{name}_max_abs_diff_1_vs_2_threads" in figures:
            checks.append(f"1 vs 2 threads max |Δ| {figures[f'{name}_max_abs_diff_1_vs_2_threads']:.1e}")  # fmt: skip
        if f"{name}_max_abs_diff_gpu_vs_cpu" in figures:
            checks.append(f"GPU vs CPU max |Δ| {figures[f'{name}_max_abs_diff_gpu_vs_cpu']:.1e}")
        print(f"exactness {name}: " + "; ".join(checks))
    if args.compile:
        print(f"torch.compile: {figures['tiny_compile_s']:.0f} s to compile, {figures['tiny_eager_seconds_per_model']:.2f} -> {figures['tiny_compiled_seconds_per_model']:.2f} s per model; pays after {figures['tiny_compile_pays_after_models']} models; max |Δ| vs eager {figures['tiny_compiled_max_abs_diff_vs_eager']:.1e}")  # fmt: skip
    print("targets: tiny >= 50% of the limit, 16 models <= 15 s; small >= 75%; |Δ| 1 vs 2 threads = 0, vs plain <= 1e-5")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
