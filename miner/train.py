"""The miner's training loop: AdamW, cosine schedule with warmup, gradient accumulation, clipping,
mixed precision on GPU, periodic held-out loss, and checkpoints that survive ``kill -9``.

Resuming is exact on the same machine: batches are a pure function of (seed, step, micro-step),
the learning rate a pure function of the step, and a checkpoint holds the model, the AdamW moments
(safetensors, never pickle) and the step counters (JSON), written to a temp dir and renamed into
place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import PreTrainedModel

from crucible.models.io import save_model_dir
from crucible.protocol.errors import ConfigError
from crucible.scoring.losses import per_sample_losses
from crucible.store.atomic import fsync_file

__all__ = ["TrainConfig", "TrainResult", "lr_at", "train"]


@dataclass(frozen=True)
class TrainConfig:
    out_dir: Path
    sequence_length: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    max_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    time_budget_s: float | None = None
    token_budget: int | None = None
    eval_every: int = 50
    checkpoint_every: int = 25
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        """Absurd settings are refused before anything is allocated or trained."""
        checks = {
            "sequence_length": 2 <= self.sequence_length <= 1 << 17,
            "batch_size": 1 <= self.batch_size <= 1 << 16,
            "grad_accum": 1 <= self.grad_accum <= 1 << 16,
            "lr": math.isfinite(self.lr) and 0 < self.lr <= 10,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "warmup_steps": 0 <= self.warmup_steps <= 10**9,
            "max_steps": 0 <= self.max_steps <= 10**9,
            "weight_decay": math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 10,
            "grad_clip": math.isfinite(self.grad_clip) and self.grad_clip > 0,
            "time_budget_s": self.time_budget_s is None
            or (math.isfinite(self.time_budget_s) and self.time_budget_s > 0),
            "token_budget": self.token_budget is None or self.token_budget > 0,
            "eval_every": self.eval_every >= 0,  # 0: never
            "checkpoint_every": self.checkpoint_every >= 0,  # 0: only at the end
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ConfigError(
                f"training settings out of range: {shown}",
                code="bad_training_config",
                fix="see `crucible-miner train --help` for sensible values",
            )


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    steps: int
    tokens: int
    seconds: float
    final_train_loss: float
    eval_loss: float | None
    resumed_from: int


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def batch_at(tokens: np.ndarray, cfg: TrainConfig, step: int, micro: int) -> torch.Tensor:
    rng = np.random.default_rng([cfg.seed, step, micro])
    starts = rng.integers(0, len(tokens) - cfg.sequence_length, size=cfg.batch_size)
    return torch.from_numpy(
        np.stack([tokens[s : s + cfg.sequence_length] for s in starts]).astype(np.int64)
    )


def _optimizer(model: PreTrainedModel, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=False,
    )


def _params(opt: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in opt.param_groups for p in group["params"]]


def save_checkpoint(
    path: Path,
    model: PreTrainedModel,
    opt: torch.optim.Optimizer,
    step: int,
    tokens: int,
    loss: float,
) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(model, tmp / "model")
    moments: dict[str, torch.Tensor] = {}
    for i, p in enumerate(_params(opt)):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in state:
                moments[f"{i}.{key}"] = (
                    state[key]
                    .detach()
                    .cpu()
                    .contiguous()
                    .reshape(-1 if key == "step" else state[key].shape)
                )
    save_file(moments, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer.json").write_text(json.dumps({"step": step, "tokens": tokens, "loss": loss}))
    for f in (tmp / "optimizer.safetensors", tmp / "trainer.json"):
        fsync_file(f)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _restore(path: Path, model: PreTrainedModel, opt: torch.optim.Optimizer) -> tuple[int, int]:
    from safetensors.torch import load_file as load

    state = load(str(path / "model" / "model.safetensors"))
    model.load_state_dict(state, strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    moments = load_file(str(path / "optimizer.safetensors"))
    for i, p in enumerate(_params(opt)):
        if f"{i}.exp_avg" in moments:
            opt.state[p] = {
                "step": moments[f"{i}.step"].reshape(()),
                "exp_avg": moments[f"{i}.exp_avg"].to(p.device),
                "exp_avg_sq": moments[f"{i}.exp_avg_sq"].to(p.device),
            }
    meta = json.loads((path / "trainer.json").read_text())
    return meta["step"], meta["tokens"]


def train(
    model: PreTrainedModel,
    tokens: np.ndarray,
    cfg: TrainConfig,
    *,
    eval_windows: np.ndarray | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on the token stream; resumes from ``cfg.out_dir/checkpoint`` if present."""
    if len(tokens) <= cfg.sequence_length:
        raise ValueError("the token stream is shorter than one sequence")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(
        json.dumps({k: str(v) for k, v in asdict(cfg).items()}, indent=1)
    )
    torch.manual_seed(cfg.seed)
    model.to(cfg.device).train()
    opt = _optimizer(model, cfg)
    checkpoint = out / "checkpoint"
    step, seen = (
        _restore(checkpoint, model, opt) if (checkpoint / "trainer.json").exists() else (0, 0)
    )
    resumed_from = step
    use_amp = cfg.device.startswith("cuda")
    start = time.monotonic()
    run_tokens = 0
    loss_value = math.nan
    eval_loss = None
    bar = tqdm(
        total=cfg.max_steps, initial=step, disable=not cfg.progress, desc="train", unit="step"
    )
    while step < cfg.max_steps:
        if cfg.time_budget_s is not None and time.monotonic() - start >= cfg.time_budget_s:
            break
        if cfg.token_budget is not None and seen >= cfg.token_budget:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        total = 0.0
        for micro in range(cfg.grad_accum):
            ids = batch_at(tokens, cfg, step, micro).to(cfg.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = model(input_ids=ids, labels=ids).loss / cfg.grad_accum
            loss.backward()
            total += loss.item()
            seen += ids.numel()
            run_tokens += ids.numel()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_value = total
        elapsed = max(1e-9, time.monotonic() - start)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{run_tokens / elapsed:,.0f}")
        if on_step is not None:
            on_step(step, loss_value)
        if eval_windows is not None and cfg.eval_every and step % cfg.eval_every == 0:
            eval_loss = per_sample_losses(
                model, eval_windows, batch_size=cfg.batch_size, device=cfg.device
            ).mean_loss
            model.train()
            bar.write(f"step {step}: held-out loss {eval_loss:.4f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint, model, opt, step, seen, loss_value)
    bar.close()
    if step != resumed_from:
        save_checkpoint(checkpoint, model, opt, step, seen, loss_value)
    if eval_windows is not None:
        eval_loss = per_sample_losses(
            model, eval_windows, batch_size=cfg.batch_size, device=cfg.device
        ).mean_loss
    model.eval()
    final = save_model_dir(model.to("cpu"), out / "model")
    return TrainResult(
        final, step, seen, time.monotonic() - start, loss_value, eval_loss, resumed_from
    )
