"""The miner's training loop: AdamW, cosine schedule with warmup, gradient accumulation, clipping,
mixed precision on GPU, periodic held-out loss, checkpoints that survive ``kill -9``, and
data-parallel training under ``torchrun`` (DDP, or FSDP for models too big to replicate).

Resuming is exact on the same machine and process count: batches are a pure function of (seed,
step, micro-step), the learning rate a pure function of the step, and a checkpoint holds the
model, the AdamW moments by parameter name (safetensors, never pickle) and the step counters
(JSON), written to a temp dir and renamed into place. Checkpoints hold full tensors, so a run
started on N processes can resume on M.

Throughput: the loss is ``linear_cross_entropy`` (the LM head and its gradient chunk by chunk,
never the full logits) and AdamW is the fused kernel; see ``bench/train.py`` for the figures.

Distributed (see ``crucible.miner.distributed``): ``batch_size`` is the global number of
sequences per micro-step; each of the N ranks takes its contiguous 1/N of every global batch, so
N processes see exactly the sequences one process would, and average the same loss.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import PreTrainedModel

from crucible.miner import distributed as dist
from crucible.miner.distributed import SINGLE, STRATEGIES, Cluster
from crucible.models.build import build_model
from crucible.models.io import save_model_dir
from crucible.protocol.errors import ConfigError
from crucible.scoring.losses import linear_cross_entropy, next_token_targets, per_sample_losses
from crucible.store.atomic import fsync_file

__all__ = [
    "CausalLMLoss", "TrainConfig", "TrainResult", "adam_moments", "adamw", "batch_at", "lr_at",
    "restore_moments", "train",
]  # fmt: skip


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
    parallel: str = "ddp"  # under torchrun: "ddp" (replicas) or "fsdp" (sharded state)

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
            "parallel": self.parallel in STRATEGIES,
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


def batch_at(
    tokens: np.ndarray, cfg: TrainConfig, step: int, micro: int, rows: slice = slice(None)
) -> torch.Tensor:
    """Rows ``rows`` of the global batch of (step, micro): ``batch_size`` windows drawn from
    (seed, step, micro) alone, so every rank (and a resumed run) draws the same ones."""
    rng = np.random.default_rng([cfg.seed, step, micro])
    starts = rng.integers(0, len(tokens) - cfg.sequence_length, size=cfg.batch_size)[rows]
    return torch.from_numpy(
        np.stack([tokens[s : s + cfg.sequence_length] for s in starts]).astype(np.int64)
    )


class CausalLMLoss(torch.nn.Module):
    """Mean next-token loss (nats) of ``model`` on a batch of token ids: the module DDP and FSDP
    wrap. A plain bias-free LM head goes through ``linear_cross_entropy``; anything else through
    the model's own loss."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        head = self.model.get_output_embeddings()
        if head is None or getattr(head, "bias", None) is not None:
            return self.model(input_ids=ids, labels=ids).loss
        hidden = self.model.base_model(input_ids=ids).last_hidden_state
        return linear_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]), head.weight, next_token_targets(ids).reshape(-1)
        )


def _named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters by name, a tied one once (the names checkpoints use)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The AdamW every training loop here uses: betas 0.9/0.95, weight decay on matrices only."""
    named = _named_parameters(model)
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    sharded = dist.is_sharded(model)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.95),
        fused=not sharded,  # one kernel for all parameters; FSDP shards take the foreach path
        foreach=True if sharded else None,
    )


def adam_moments(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Full CPU copies of the AdamW moments, by parameter name: ``<name>.exp_avg``,
    ``<name>.exp_avg_sq`` and ``<name>.step`` (a collective under FSDP: every rank calls it, in
    the same order)."""
    moments = {}
    for name, p in _named_parameters(model):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                moments[f"{name}.{key}"] = dist.full_tensor(state[key]).contiguous()
        if "step" in state:
            moments[f"{name}.step"] = state["step"].detach().cpu().reshape(-1)
    return moments


def _plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """An ordinary model with the trained weights: ``model`` itself, or for an FSDP-sharded one
    a full CPU copy (a collective: every rank calls it; each gets the copy)."""
    if not dist.is_sharded(model):
        return model
    weights = {name: dist.full_tensor(p) for name, p in model.state_dict().items()}
    copy = build_model(model.config)
    copy.load_state_dict(weights, strict=False)
    if getattr(copy.config, "tie_word_embeddings", False):
        copy.tie_weights()
    return copy


def save_checkpoint(
    path: Path, model: PreTrainedModel, moments: dict[str, torch.Tensor], meta: dict[str, float]
) -> None:
    """Write the checkpoint next to ``path`` and rename it into place (a crash leaves the old
    one or the new one, never half of either)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(model, tmp / "model")
    save_file(moments, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer.json").write_text(json.dumps(meta))
    for f in (tmp / "optimizer.safetensors", tmp / "trainer.json"):
        fsync_file(f)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _restore_weights(path: Path, model: PreTrainedModel) -> tuple[int, int]:
    """The checkpoint's weights into the (not yet wrapped) model; its (step, tokens)."""
    model.load_state_dict(load_file(str(path / "model" / "model.safetensors")), strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    meta = json.loads((path / "trainer.json").read_text())
    return meta["step"], meta["tokens"]


def restore_moments(
    moments: dict[str, torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer
) -> None:
    """Put ``adam_moments``' output back into ``opt`` (keys by parameter name; checkpoints
    written before names: by position in ``opt``). A parameter with no moments stays fresh."""
    named = dict(_named_parameters(model))
    by_position = {
        id(p): str(i) for i, p in enumerate(q for g in opt.param_groups for q in g["params"])
    }
    for name, p in named.items():
        key = name if f"{name}.exp_avg" in moments else by_position[id(p)]
        if f"{key}.exp_avg" not in moments:
            continue
        step = moments[f"{key}.step"].reshape(())
        fused = opt.param_groups[0].get("fused")
        opt.state[p] = {
            "step": step.to(p.device) if fused else step,
            "exp_avg": dist.like_parameter(moments[f"{key}.exp_avg"], p),
            "exp_avg_sq": dist.like_parameter(moments[f"{key}.exp_avg_sq"], p),
        }


@dataclass
class _Run:
    """What the loop carries from step to step."""

    step: int
    seen: int
    loss: float = math.nan
    eval_loss: float | None = None
    evaluated_at: int = -1
    run_tokens: int = 0


def _train_step(
    net: torch.nn.Module, opt: torch.optim.Optimizer, tokens: np.ndarray, cfg: TrainConfig,
    cluster: Cluster, run: _Run, start: float,
) -> bool:  # fmt: skip
    """One optimizer step over ``grad_accum`` micro-batches; False once a budget says stop."""
    for group in opt.param_groups:
        group["lr"] = lr_at(run.step, cfg)
    total = torch.zeros((), device=cfg.device)
    rows, on_gpu = cluster.rows(cfg.batch_size), cfg.device.startswith("cuda")
    for micro in range(cfg.grad_accum):
        ids = batch_at(tokens, cfg, run.step, micro, rows).to(cfg.device)
        with dist.gradient_sync(net, micro == cfg.grad_accum - 1):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
                loss = net(ids) / cfg.grad_accum
            loss.backward()
        total += loss.detach().float()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    run.step += 1
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.sequence_length
    run.seen += tokens_per_step
    run.run_tokens += tokens_per_step
    out_of_time = cfg.time_budget_s is not None and time.monotonic() - start >= cfg.time_budget_s
    # one collective per step: the global mean loss, and whether any rank is out of time
    summed = dist.sum_across(torch.stack([total, total.new_tensor(float(out_of_time))]), cluster)
    run.loss = float(summed[0]) / cluster.world
    over_tokens = cfg.token_budget is not None and run.seen >= cfg.token_budget
    return not (float(summed[1]) > 0 or over_tokens)


def _held_out(
    model: PreTrainedModel, net: torch.nn.Module, windows: np.ndarray, cfg: TrainConfig,
    cluster: Cluster, run: _Run,
) -> None:  # fmt: skip
    """Held-out loss on rank 0 (a full copy of an FSDP model is gathered first)."""
    plain = _plain_model(model)  # every rank: a collective under FSDP
    if cluster.is_main:
        run.eval_loss = per_sample_losses(
            plain, windows, batch_size=cfg.batch_size, device=cfg.device
        ).mean_loss
    run.evaluated_at = run.step
    net.train()


def _checkpoint(
    path: Path, model: PreTrainedModel, opt: torch.optim.Optimizer, run: _Run, cluster: Cluster
) -> None:
    moments, plain = adam_moments(model, opt), _plain_model(model)  # every rank: collectives
    if cluster.is_main:
        meta = {"step": run.step, "tokens": run.seen, "loss": run.loss}
        save_checkpoint(path, plain, moments, meta)


def train(
    model: PreTrainedModel,
    tokens: np.ndarray,
    cfg: TrainConfig,
    *,
    eval_windows: np.ndarray | None = None,
    on_step: Callable[[int, float], None] | None = None,
    cluster: Cluster = SINGLE,
) -> TrainResult:
    """Train ``model`` on the token stream; resumes from ``cfg.out_dir/checkpoint`` if present.

    Under torchrun, every rank calls this with the same arguments and ``cluster`` (its place),
    inside ``distributed.process_group``; rank 0 alone writes.
    """
    if len(tokens) <= cfg.sequence_length:
        raise ValueError("the token stream is shorter than one sequence")
    cluster.rows(cfg.batch_size)  # refuse an uneven split before anything is built
    out, checkpoint = Path(cfg.out_dir), Path(cfg.out_dir) / "checkpoint"
    if cluster.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(
            json.dumps({k: str(v) for k, v in asdict(cfg).items()}, indent=1)
        )
    torch.manual_seed(cfg.seed)
    model.to(cfg.device).train()
    step, seen = (
        _restore_weights(checkpoint, model) if (checkpoint / "trainer.json").exists() else (0, 0)
    )
    net = dist.wrap(CausalLMLoss(model), cluster, cfg.parallel, cfg.device)
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    if step:
        restore_moments(load_file(str(checkpoint / "optimizer.safetensors")), model, opt)
    run, resumed_from, start = _Run(step, seen), step, time.monotonic()
    bar = tqdm(
        total=cfg.max_steps, initial=step, disable=not (cfg.progress and cluster.is_main and sys.stderr.isatty()),
        desc="train", unit="step",
    )  # fmt: skip
    going = cfg.token_budget is None or run.seen < cfg.token_budget
    while going and run.step < cfg.max_steps:
        going = _train_step(net, opt, tokens, cfg, cluster, run, start)
        elapsed = max(1e-9, time.monotonic() - start)
        bar.update(1)
        bar.set_postfix(loss=f"{run.loss:.3f}", tok_s=f"{run.run_tokens / elapsed:,.0f}")
        if on_step is not None:
            on_step(run.step, run.loss)
        if eval_windows is not None and cfg.eval_every and run.step % cfg.eval_every == 0:
            _held_out(model, net, eval_windows, cfg, cluster, run)
            if run.eval_loss is not None:
                bar.write(f"step {run.step}: held-out loss {run.eval_loss:.4f}")
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
            _checkpoint(checkpoint, model, opt, run, cluster)
    bar.close()
    return _finish(model, net, opt, eval_windows, cfg, cluster, run, resumed_from, start)


def _finish(
    model: PreTrainedModel, net: torch.nn.Module, opt: torch.optim.Optimizer,
    eval_windows: np.ndarray | None, cfg: TrainConfig, cluster: Cluster, run: _Run,
    resumed_from: int, start: float,
) -> TrainResult:  # fmt: skip
    if run.step != resumed_from and not (
        cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0
    ):
        _checkpoint(Path(cfg.out_dir) / "checkpoint", model, opt, run, cluster)
    if eval_windows is not None and run.evaluated_at != run.step:
        _held_out(model, net, eval_windows, cfg, cluster, run)
    plain = _plain_model(model)  # every rank: a collective under FSDP
    final = Path(cfg.out_dir) / "model"
    if cluster.is_main:
        final = save_model_dir(plain.eval().to("cpu"), final)
    dist.barrier(cluster)  # the model is on disk when train() returns, on every rank
    model.eval()
    return TrainResult(
        final, run.step, run.seen, time.monotonic() - start, run.loss, run.eval_loss, resumed_from
    )
