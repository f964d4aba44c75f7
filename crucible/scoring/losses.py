"""Per-sample mean token loss of a causal LM: batched, ``inference_mode``, fp32, deterministic.

Shared by the validator's round and the miner's self-evaluation, so both compute the same numbers.
Precision is fp32 on every device (no autocast): a CPU and a GPU validator must agree on the
losses they compare. A model that raises or yields a non-finite loss scores ``math.inf`` on every
sample (the worst possible) with a reason; it never stops the round. Running out of memory is not
the model's fault (its size is within the competition's limits, checked before loading): it
raises ``ResourceExhausted`` so the validator retries later instead of blaming the miner.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from crucible.models.io import is_out_of_memory
from crucible.protocol.errors import ResourceExhausted

__all__ = [
    "WORST_LOSS",
    "EvalResult",
    "batch_size_for_budget",
    "next_token_nll",
    "per_sample_losses",
    "token_logprobs",
]

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


HEAD_CHUNK_POSITIONS = 1024


def next_token_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """NLL (nats, fp32) of token t+1 at every position t; the last column is 0 (nothing to predict).

    The LM head and the cross-entropy run over chunks of positions: the (positions × vocabulary)
    logits of a chunk stay in cache instead of streaming a batch-sized tensor through memory
    twice, which is where a small model spends most of its evaluation time.
    """
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    head = model.get_output_embeddings()
    if head is None:  # a model without a separable head: score the full logits
        logits = model(input_ids=ids).logits.float()
        return F.cross_entropy(
            logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="none"
        ).view(ids.shape)
    hidden = model.base_model(input_ids=ids).last_hidden_state
    flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    parts = [
        F.cross_entropy(
            head(flat[i : i + HEAD_CHUNK_POSITIONS]).float(),
            flat_targets[i : i + HEAD_CHUNK_POSITIONS],
            reduction="none",
        )
        for i in range(0, flat.shape[0], HEAD_CHUNK_POSITIONS)
    ]
    return torch.cat(parts).view(ids.shape)


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
        model = model.to(device=device, dtype=torch.float32).eval()
        with torch.inference_mode():
            for i in tqdm(
                range(0, count, batch_size), disable=not progress, desc="eval", unit="batch"
            ):
                ids = torch.from_numpy(windows[i : i + batch_size]).to(device)
                nll = next_token_nll(model, ids)
                losses.extend(nll[:, :-1].mean(dim=1).cpu().tolist())
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            return _failed(count, start, batch_size, exc)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # give the next model (or the retry) the memory back
        raise ResourceExhausted(
            f"out of memory evaluating {count} samples of {length} tokens in batches of "
            f"{batch_size} on {device}: {exc}",
            fix="lower the evaluation batch size or run the validator on a bigger device",
        ) from exc
    except (ValueError, IndexError) as exc:  # a broken model must not stop the round
        return _failed(count, start, batch_size, exc)
    if not all(math.isfinite(x) for x in losses):
        return EvalResult(
            [WORST_LOSS] * count, 0, time.perf_counter() - start, "non-finite loss", batch_size
        )
    return EvalResult(losses, count * (length - 1), time.perf_counter() - start, None, batch_size)


def _failed(count: int, start: float, batch_size: int, exc: Exception) -> EvalResult:
    return EvalResult(
        [WORST_LOSS] * count, 0, time.perf_counter() - start, f"model failed: {exc}", batch_size
    )


def token_logprobs(model: torch.nn.Module, token_ids: list[int]) -> list[float]:
    """log p(token[i+1] | token[:i+1]) in nats, fp32 on the model's device, as CPU floats."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        ids = torch.tensor([token_ids], dtype=torch.long, device=device)
        logits = model(input_ids=ids).logits[0, :-1, :].float()
        logprobs = F.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None]).squeeze(1)
        return logprobs.cpu().tolist()
