"""Training throughput of the tiny competition's model: ours vs the limit vs transformers.Trainer.

Limit: 6 × parameters × tokens / measured fp32 matmul FLOP/s. Trainer: a plain
``transformers.Trainer`` on the same model shape, data, batch and optimizer family, same steps.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import matmul_flops  # noqa: E402
from crucible.miner.train import TrainConfig, train  # noqa: E402
from crucible.models.build import ModelShape, build_config, build_model, count_parameters  # noqa: E402

STEPS, BATCH, LENGTH = 12, 8, 256


def ours(tokens: np.ndarray, tmp: Path) -> float:
    model = build_model(build_config(ModelShape()))
    cfg = TrainConfig(out_dir=tmp / "ours", sequence_length=LENGTH, batch_size=BATCH, max_steps=STEPS + 2, warmup_steps=2,
                      checkpoint_every=0, eval_every=0, progress=False)  # fmt: skip
    times = []
    train(model, tokens, cfg, on_step=lambda step, loss: times.append(time.perf_counter()))
    return (times[-1] - times[1]) / (len(times) - 2)  # per step, excluding the first (warm-up)


def trainer(tokens: np.ndarray, tmp: Path) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(build_config(ModelShape()))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(tokens) - LENGTH, size=(STEPS + 2) * BATCH)
    rows = [
        {
            "input_ids": torch.from_numpy(tokens[s : s + LENGTH].astype(np.int64)),
            "labels": torch.from_numpy(tokens[s : s + LENGTH].astype(np.int64)),
        }
        for s in starts
    ]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            times.append(time.perf_counter())

    args = TrainingArguments(output_dir=str(tmp / "trainer"), per_device_train_batch_size=BATCH, max_steps=STEPS + 2,
                             learning_rate=3e-3, warmup_steps=2, logging_strategy="no", save_strategy="no", report_to=[],
                             use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[Clock()]).train()
    return (times[-1] - times[1]) / (len(times) - 2)


def main() -> None:
    tokens = np.random.default_rng(1).integers(0, 8192, size=2_000_000).astype(np.int32)
    params = count_parameters(build_model(build_config(ModelShape())))
    flops = matmul_flops()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ours_s = ours(tokens, tmp)
        trainer_s = trainer(tokens, tmp)
    per_step_tokens = BATCH * LENGTH
    limit = flops / (6 * params)
    figures = {
        "params": params,
        "matmul_gflops": round(flops / 1e9, 1),
        "ours_tokens_per_s": round(per_step_tokens / ours_s, 1),
        "trainer_tokens_per_s": round(per_step_tokens / trainer_s, 1),
        "ours_fraction_of_limit": round(per_step_tokens / ours_s / limit, 3),
        "ours_vs_trainer": round(trainer_s / ours_s, 2),
    }
    print(
        f"tiny model {params / 1e6:.1f}M params, batch {BATCH}x{LENGTH}, {STEPS} timed steps, {flops / 1e9:.0f} GFLOP/s matmul"
    )
    print(f"{'loop':10} {'s/step':>8} {'tokens/s':>10} {'of limit':>9}")
    print(
        f"{'crucible':10} {ours_s:>8.3f} {per_step_tokens / ours_s:>10,.0f} {per_step_tokens / ours_s / limit:>9.0%}"
    )
    print(
        f"{'Trainer':10} {trainer_s:>8.3f} {per_step_tokens / trainer_s:>10,.0f} {per_step_tokens / trainer_s / limit:>9.0%}"
    )
    print("targets: >= 40% of the limit, not slower than Trainer")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
