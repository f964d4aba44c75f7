"""Per-token loss of a causal LM: the evaluation every neuron shares, and the training loss.

**Evaluation** (``per_sample_losses``, ``per_sample_losses_many``, ``next_token_nll``,
``token_logprobs``) is shared by the validator's round, the miner's self-evaluation, ``verify
--reevaluate`` and the serving probe, so all of them compute the same numbers. It is batched,
``inference_mode``, fp32 on every device (no autocast, and no TF32 on a GPU: a CPU and a GPU
validator must agree on the losses they compare) and deterministic: a sample's loss is the same
bits whatever the torch thread count and on every run (and within 1e-6 of the same sample
scored alone). A model that raises or yields a non-finite loss scores ``math.inf`` on every
sample (the worst possible) with a reason; it never stops the round. Running out of memory is not
the model's fault (its size is within the competition's limits, checked before loading): it
raises ``ResourceExhausted`` so the validator retries later instead of blaming the miner.

Where the time goes, and what is done about it: a small model spends about half its FLOPs in the
LM head (vocabulary × hidden per position). The head and the cross-entropy run over chunks of
positions whose (positions × vocabulary) logits stay in the last-level cache, instead of
streaming a batch-sized logits tensor (and its log-softmax) through memory; each chunk's
cross-entropy is ``F.cross_entropy`` itself, so the per-token values are the plain computation's
up to the matmul's rounding (~1e-6 nats). Attention is the library's (SDPA). ``torch.compile`` was measured and left out:
on the 2-core reference machine it takes ~55 s to compile the tiny model and saves ~0.3 s per
4,096 tokens, more than a round of 16 models can win back (``bench/eval.py``).

**Training** (``linear_cross_entropy``): the mean next-token loss of the LM head over chunks of
positions with the gradient computed in the same pass (the logits of a chunk are used once, in
cache, then dropped), so neither the full logits nor their log-softmax and its gradient are ever
allocated: ~10 % less time per forward and backward and ~80 % fewer page faults than
``model(labels=...)`` on the tiny model (``bench/train.py``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
    "chunk_positions",
    "linear_cross_entropy",
    "next_token_nll",
    "next_token_targets",
    "per_sample_losses",
    "per_sample_losses_many",
    "token_logprobs",
]

WORST_LOSS = math.inf
# fp32 logits per chunk of the LM head: evaluation keeps a chunk in cache (8 MiB); training
# chunks are larger (32 MiB) because each position's logits feed three matmuls (logits, the
# hidden-state gradient and the head's gradient), whose efficiency grows with the rows per call.
EVAL_CHUNK_LOGITS = 1 << 21
TRAIN_CHUNK_LOGITS = 1 << 23
MIN_CHUNK_POSITIONS = 64
IGNORE = -100


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


def chunk_positions(vocab_size: int, logits: int = EVAL_CHUNK_LOGITS) -> int:
    """Positions per LM-head chunk: about ``logits`` fp32 logits, never fewer than 64 rows."""
    return max(MIN_CHUNK_POSITIONS, logits // max(1, vocab_size))


def next_token_targets(ids: torch.Tensor) -> torch.Tensor:
    """Token t+1 at every position t; the last position has nothing to predict (``-100``)."""
    targets = torch.full_like(ids, IGNORE)
    targets[:, :-1] = ids[:, 1:]
    return targets


@contextmanager
def _exact_fp32(device: torch.device | str) -> Iterator[None]:
    """IEEE fp32 matmuls on a GPU for the duration (TF32 would change the losses' last digits on
    whichever validator happened to enable it); the process's own setting is restored after."""
    if torch.device(device).type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.fp32_precision, cudnn.fp32_precision)
    matmul.fp32_precision, cudnn.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, cudnn.fp32_precision = saved


def next_token_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """NLL (nats, fp32) of token t+1 at every position t; the last column is 0 (nothing to predict).

    The LM head and the cross-entropy run over chunks of positions (see the module docstring).
    """
    targets = next_token_targets(ids)
    head = model.get_output_embeddings()
    if head is None:  # a model without a separable head: score the full logits
        logits = model(input_ids=ids).logits.float()
        return F.cross_entropy(
            logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="none"
        ).view(ids.shape)
    hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
    flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    out = torch.empty(flat_targets.shape, dtype=torch.float32, device=flat.device)
    step = chunk_positions(head.weight.shape[0])
    for i in range(0, flat.shape[0], step):
        out[i : i + step] = F.cross_entropy(
            head(flat[i : i + step]).float(), flat_targets[i : i + step], reduction="none"
        )
    return out.view(ids.shape)


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
    try:
        model = model.to(device=device, dtype=torch.float32).eval()
        means = _batched_means(model, windows, batch_size, device, progress)
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
    losses = means.tolist()
    if not all(math.isfinite(x) for x in losses):
        return EvalResult(
            [WORST_LOSS] * count, 0, time.perf_counter() - start, "non-finite loss", batch_size
        )
    return EvalResult(losses, count * (length - 1), time.perf_counter() - start, None, batch_size)


def _bars(progress: bool) -> bool:
    """Progress bars only when asked for and stderr is a terminal (never in a log file)."""
    return progress and sys.stderr.isatty()


def _batched_means(
    model: torch.nn.Module, windows: np.ndarray, batch_size: int, device: str, progress: bool
) -> torch.Tensor:
    """Per-sample mean NLL on the CPU; the windows go to the device once, and the losses come
    back once (no per-batch device synchronisation)."""
    count = windows.shape[0]
    with torch.inference_mode(), _exact_fp32(device):
        means = torch.empty(count, dtype=torch.float32, device=device)
        ids = torch.from_numpy(windows).to(device)
        batches = range(0, count, batch_size)
        for i in tqdm(batches, disable=not _bars(progress), desc="eval", unit="batch"):
            means[i : i + batch_size] = next_token_nll(model, ids[i : i + batch_size])[:, :-1].mean(
                dim=1
            )
        return means.cpu()


def per_sample_losses_many(
    models: Sequence[torch.nn.Module],
    windows: np.ndarray,
    *,
    batch_size: int,
    device: str = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> list[EvalResult | Exception]:
    """``per_sample_losses`` of each model on the same windows, in the models' order; each
    outcome is its ``EvalResult`` or the exception its evaluation raised (``ResourceExhausted``:
    this machine's memory), so one model's outcome never decides another's.

    On a CPU, ``workers`` models (default: the torch thread count) are evaluated at a time, each
    on one thread: whole models in parallel scale across cores better than the threads of one
    model's small matmuls and softmaxes do, and a core taken by another process delays one model
    instead of stalling every operation of all of them. The losses are the same bits either way
    (a sample's loss does not depend on the thread count). A GPU evaluates one model at a time.
    """
    on_cpu = torch.device(device).type == "cpu"
    count = max(1, min(len(models), workers or torch.get_num_threads())) if on_cpu else 1

    def one(model: torch.nn.Module) -> EvalResult | Exception:
        try:
            return per_sample_losses(model, windows, batch_size=batch_size, device=device)
        except Exception as exc:  # noqa: BLE001 — the caller records it against this model
            return exc

    bar = tqdm(total=len(models), disable=not _bars(progress), desc="eval", unit="model")
    if count == 1:
        outcomes = _counted(map(one, models), bar)
    else:
        threads = torch.get_num_threads()
        # a worker's intra-op thread count is its own (OpenMP and MKL settings are per
        # thread); the process-wide default new threads start from is put back afterwards
        with ThreadPoolExecutor(count, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            outcomes = _counted(pool.map(one, models), bar)
        torch.set_num_threads(threads)
    bar.close()
    return outcomes


def _counted(outcomes: Iterable[EvalResult | Exception], bar: tqdm) -> list[EvalResult | Exception]:
    done = []
    for outcome in outcomes:
        done.append(outcome)
        bar.update(1)
    return done


def _failed(count: int, start: float, batch_size: int, exc: Exception) -> EvalResult:
    return EvalResult(
        [WORST_LOSS] * count, 0, time.perf_counter() - start, f"model failed: {exc}", batch_size
    )


def token_logprobs(model: torch.nn.Module, token_ids: list[int]) -> list[float]:
    """log p(token[i+1] | token[:i+1]) in nats, fp32 on the model's device, as CPU floats: the
    negated ``next_token_nll`` the evaluation averages, so both agree to the last bit."""
    device = next(model.parameters()).device
    with torch.inference_mode(), _exact_fp32(device):
        ids = torch.tensor([token_ids], dtype=torch.long, device=device)
        return (-next_token_nll(model, ids)[0, :-1]).cpu().tolist()


# ---- training ------------------------------------------------------------------------------


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``-100``: ignored).

    Forward computes, chunk by chunk, the loss and (when a gradient is wanted) the gradient with
    respect to both inputs; backward only scales them by the incoming gradient. Per chunk, with
    e = exp(z - max z) and s = Σ e: loss = log s + max z - z[target], and
    d loss / d z = (e - s·onehot(target)) / s, folded into the two matmuls as a row scale.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):  # type: ignore[override]
        valid = targets >= 0
        count = max(1, int(valid.sum()))
        safe = targets.clamp(min=0)[:, None]
        wants_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d_hidden = torch.empty_like(hidden) if wants_grad else None
        d_weight = torch.zeros_like(weight, dtype=torch.float32) if wants_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(0, hidden.shape[0], chunk):
            rows, target, keep = hidden[i : i + chunk], safe[i : i + chunk], valid[i : i + chunk]
            logits = (rows @ weight.t()).float()  # under autocast: a bf16 matmul, fp32 softmax
            top = logits.amax(dim=-1, keepdim=True)
            picked = logits.gather(1, target)
            e = logits.sub_(top).exp_()
            s = e.sum(dim=-1, keepdim=True)
            total += ((s.log() + top - picked).squeeze(1) * keep).sum()
            if wants_grad:
                e.scatter_add_(1, target, -s)
                scale = keep[:, None] / s
                d_hidden[i : i + chunk] = (e.to(weight.dtype) @ weight) * scale
                d_weight += (e.t().to(rows.dtype) @ (rows * scale.to(rows.dtype))).float()
        ctx.save_for_backward(d_hidden, d_weight)
        ctx.count, ctx.weight_dtype = count, weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        d_hidden, d_weight = ctx.saved_tensors
        k = grad / ctx.count
        d_w = None if d_weight is None else (d_weight * k).to(ctx.weight_dtype)
        return (None if d_hidden is None else d_hidden * k), d_w, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, chunk: int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of the LM head ``weight`` (vocab × hidden, no bias)
    applied to ``hidden`` (positions × hidden), ignoring targets of ``-100``; differentiable in
    ``hidden`` and ``weight``. Equal to ``F.cross_entropy(hidden @ weight.T, targets)`` up to
    float rounding, without ever holding the (positions × vocabulary) logits."""
    step = chunk or chunk_positions(weight.shape[0], TRAIN_CHUNK_LOGITS)
    return _LinearCrossEntropy.apply(hidden, weight, targets, step)
