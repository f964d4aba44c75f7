"""Per-sample mean token loss of a causal LM: batched, ``inference_mode``, fp32, deterministic.

Shared by the validator's round and the miner's self-evaluation, so both compute the same numbers.
A model that raises or yields a non-finite loss scores ``math.inf`` on every sample (the worst
possible) with a reason; it never stops the round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

__all__ = ["EvalResult", "batch_size_for_budget", "per_sample_losses", "WORST_LOSS"]

WORST_LOSS = math.inf


@dataclass(frozen=True)
class EvalResult:
    losses: list[float]
    tokens: int
    seconds: float
    error: str | None = None
    batch_size: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else WORST_LOSS


def batch_size_for_budget(
    parameters: int, vocab_size: int, length: int, wanted: int, budget_bytes: int
) -> int:
    """Largest batch ≤ ``wanted`` whose fp32 weights + logits (+ their log-softmax) fit the budget."""
    fixed = parameters * 4
    per_sample = length * vocab_size * 4 * 3
    fits = (budget_bytes - fixed) // per_sample
    return max(1, min(wanted, int(fits)))


def per_sample_losses(
    model: torch.nn.Module,
    windows: np.ndarray,
    *,
    batch_size: int,
    device: str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """``windows`` is (samples, length) int64; each sample's loss is the mean NLL (nats) of tokens
    1..L-1 given their prefix."""
    start = time.perf_counter()
    windows = np.asarray(windows, dtype=np.int64)
    count, length = windows.shape
    losses: list[float] = []
    try:
        model = model.to(device).eval()
        with torch.inference_mode():
            for i in tqdm(
                range(0, count, batch_size), disable=not progress, desc="eval", unit="batch"
            ):
                ids = torch.from_numpy(windows[i : i + batch_size]).to(device)
                if device.startswith("cuda"):
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        logits = model(input_ids=ids).logits
                else:
                    logits = model(input_ids=ids).logits
                logits = logits[:, :-1, :].float()
                targets = ids[:, 1:]
                nll = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
                )
                losses.extend(nll.view(targets.shape).mean(dim=1).tolist())
    except (RuntimeError, ValueError, IndexError) as exc:  # a broken model must not stop the round
        return EvalResult(
            [WORST_LOSS] * count, 0, time.perf_counter() - start, f"model failed: {exc}", batch_size
        )
    if not all(math.isfinite(x) for x in losses):
        return EvalResult(
            [WORST_LOSS] * count, 0, time.perf_counter() - start, "non-finite loss", batch_size
        )
    return EvalResult(losses, count * (length - 1), time.perf_counter() - start, None, batch_size)
