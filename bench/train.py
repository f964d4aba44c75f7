"""Training throughput of the tiny competition's model: ours vs ``transformers.Trainer`` vs the
limit, with both loss curves.

Same run, same everything but the loop: the same initial weights, the same batches in the same
order (``batch_at``), the same AdamW (fused, betas 0.9/0.95, weight decay 0.01 on matrices), the
same learning-rate schedule (``lr_at``) and clipping. Limit: 6 × parameters × tokens / measured
matmul FLOP/s at the same threads (fp32 on a CPU; bf16 on a GPU, where both loops train in bf16
autocast); the fraction of it reached is the MFU. Each loop runs ``--rounds`` times, alternating, and the
faster run of each counts (the machine may be shared); the first step of a run is a warm-up and
is not timed. ``--processes N`` also times our loop under torchrun (N processes, one thread
each, the same global batch) against the summed rate of N single-thread matmuls.

    python bench/train.py                     # CPU, torch's thread count
    python bench/train.py --threads 1 --processes 2
    python bench/train.py --device cuda       # bf16 autocast on both loops; MFU vs bf16 matmul
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import matmul_flops, parallel_matmul_flops  # noqa: E402
from crucible.competitions import specs_dir  # noqa: E402
from crucible.miner.train import TrainConfig, batch_at, lr_at, train  # noqa: E402
from crucible.models.build import ModelShape, build_config, build_model, count_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH, LENGTH = 8, 256


def corpus_tokens(data: Path) -> np.ndarray:
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer

    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    return token_stream(data, "train", tok)


def config(out: Path, steps: int, device: str) -> TrainConfig:
    return TrainConfig(
        out_dir=out, sequence_length=LENGTH, batch_size=BATCH, max_steps=steps, warmup_steps=2,
        checkpoint_every=0, eval_every=0, progress=False, device=device,
    )  # fmt: skip


def ours(tokens: np.ndarray, cfg: TrainConfig, cluster=None) -> tuple[float, list[float]]:
    """Seconds per step (steps 2..N) and the loss of every step."""
    from crucible.miner.distributed import SINGLE

    times, losses = [], []

    def clock(step: int, loss: float) -> None:
        times.append(time.perf_counter())
        losses.append(loss)

    train(build_model(build_config(ModelShape())), tokens, cfg, on_step=clock, cluster=cluster or SINGLE)  # fmt: skip
    return (times[-1] - times[0]) / (len(times) - 1), losses


def trainer(tokens: np.ndarray, cfg: TrainConfig) -> tuple[float, list[float]]:
    from torch.utils.data import SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(build_config(ModelShape()))
    rows = [
        {"input_ids": row, "labels": row}
        for step in range(cfg.max_steps)
        for row in batch_at(tokens, cfg, step, 0)
    ]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), fused=True,
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, cfg) / cfg.lr)
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            times.append(time.perf_counter())

    class InOrder(Trainer):  # the batches in our order, not shuffled; every step's exact loss
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, *args, **kwargs):
            loss = super().compute_loss(*args, **kwargs)
            losses.append(float(loss.detach()))
            return loss

    on_gpu = cfg.device.startswith("cuda")
    args = TrainingArguments(
        output_dir=str(cfg.out_dir), per_device_train_batch_size=BATCH, max_steps=cfg.max_steps,
        max_grad_norm=cfg.grad_clip, logging_strategy="no", save_strategy="no",
        report_to=[], use_cpu=not on_gpu, bf16=on_gpu, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    InOrder(model=model, args=args, train_dataset=rows, optimizers=(opt, schedule), callbacks=[Clock()]).train()  # fmt: skip
    return (times[-1] - times[0]) / (len(times) - 1), losses


def distributed(processes: int, steps: int, data: Path, tmp: Path) -> tuple[float, list[float]]:
    """Our loop under torchrun: ``processes`` processes, one thread each."""
    out = tmp / "ddp.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               __file__, "--worker", str(out), "--steps", str(steps), "--data", str(data)]  # fmt: skip
    subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=1800)
    result = json.loads(out.read_text())
    return result["seconds_per_step"], result["losses"]


def worker(out: Path, steps: int, data: Path) -> None:
    """One torchrun process: our loop on its share of each batch; rank 0 writes the figures."""
    from crucible.miner.distributed import cluster_from_env, process_group

    cluster = cluster_from_env()
    with process_group(cluster, "cpu"):
        cfg = config(out.parent / "ddp-run", steps, "cpu")
        seconds, losses = ours(corpus_tokens(data), cfg, cluster)
    if cluster.is_main:
        out.write_text(json.dumps({"seconds_per_step": seconds, "losses": losses}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=12, help="steps per run (the first untimed)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each loop, alternating")
    parser.add_argument("--processes", type=int, default=0, help="also time ours under torchrun")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "fixtures" / "corpus")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = corpus_tokens(args.data)
    params = count_parameters(build_model(build_config(ModelShape())))
    on_gpu = args.device.startswith("cuda")  # trains in bf16 autocast: the bf16 matmul rate
    flops = matmul_flops(device=args.device, dtype=torch.bfloat16 if on_gpu else torch.float32)
    best = {"ours": (float("inf"), []), "trainer": (float("inf"), [])}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for r in range(args.rounds):
            for name, loop in (("ours", ours), ("trainer", trainer)):
                seconds, losses = loop(tokens, config(tmp / f"{name}{r}", args.steps, args.device))
                if seconds < best[name][0]:
                    best[name] = (seconds, losses)
        ddp = distributed(args.processes, args.steps, args.data, tmp) if args.processes else None
    report(args, params, flops, best, ddp)


def report(args, params: int, flops: float, best: dict, ddp) -> None:
    tokens_per_step = BATCH * LENGTH
    limit = flops / (6 * params)
    (ours_s, ours_l), (trainer_s, trainer_l) = best["ours"], best["trainer"]
    figures = {
        "device": args.device, "threads": torch.get_num_threads(), "params": params,
        "matmul_gflops": round(flops / 1e9, 1),
        "ours_tokens_per_s": round(tokens_per_step / ours_s, 1),
        "trainer_tokens_per_s": round(tokens_per_step / trainer_s, 1),
        "ours_fraction_of_limit": round(tokens_per_step / ours_s / limit, 3),
        "trainer_fraction_of_limit": round(tokens_per_step / trainer_s / limit, 3),
        "ours_vs_trainer": round(trainer_s / ours_s, 2),
        "ours_first_final_loss": [round(ours_l[0], 4), round(ours_l[-1], 4)],
        "trainer_first_final_loss": [round(trainer_l[0], 4), round(trainer_l[-1], 4)],
        "loss_curve_max_abs_diff": round(float(np.max(np.abs(np.subtract(ours_l, trainer_l)))), 6),
    }  # fmt: skip
    print(f"tiny model {params / 1e6:.1f}M params, batch {BATCH}x{LENGTH}, {args.steps} steps (first untimed), best of {args.rounds}, {args.device}, {figures['threads']} threads, {flops / 1e9:.0f} GFLOP/s matmul")  # fmt: skip
    print(f"{'loop':22} {'s/step':>8} {'tokens/s':>10} {'of limit':>9} {'loss first -> final':>22}")
    lines = [
        ("crucible", ours_s, ours_l, limit),
        ("transformers.Trainer", trainer_s, trainer_l, limit),
    ]
    if ddp is not None:
        ddp_limit = parallel_matmul_flops(args.processes) / (6 * params)
        figures |= {
            "ddp_processes": args.processes,
            "ddp_tokens_per_s": round(tokens_per_step / ddp[0], 1),
            "ddp_fraction_of_limit": round(tokens_per_step / ddp[0] / ddp_limit, 3),
            "ddp_vs_trainer": round(trainer_s / ddp[0], 2),
            "ddp_first_final_loss": [round(ddp[1][0], 4), round(ddp[1][-1], 4)],
        }  # fmt: skip
        lines.append((f"crucible torchrun x{args.processes}", ddp[0], ddp[1], ddp_limit))
    for name, s, losses, lim in lines:
        print(f"{name:22} {s:>8.3f} {tokens_per_step / s:>10,.0f} {tokens_per_step / s / lim:>9.0%} {losses[0]:>10.4f} -> {losses[-1]:.4f}")  # fmt: skip
    print(f"loss curves: max |ours - Trainer| over {len(ours_l)} steps = {figures['loss_curve_max_abs_diff']:.1e}")  # fmt: skip
    print("targets: >= 1.2x Trainer's tokens/s, >= 45% of the limit, the same loss curve")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
