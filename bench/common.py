"""Shared bench helpers: the machine's measured fp32 matmul rate (the 'limit' baselines use),
best-of timing, and the device a bench runs on.

The limit is measured in the same run as the figure it divides, at the same thread count, on the
same device; on a GPU the matmul is IEEE fp32 (no TF32), the precision evaluation uses. A shared
machine's load changes from second to second, so a bench takes the best of several runs of both
the limit and the figure (a lower bound on what the machine can do, for both alike).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import torch

__all__ = ["best_seconds", "matmul_flops", "parallel_matmul_flops", "synchronize"]


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_seconds(fn: Callable[[], object], repeats: int = 3, device: str = "cpu") -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops(
    size: int = 1024, repeats: int = 20, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """FLOP/s of a square matmul (fp32 unless told: IEEE, no TF32, on a GPU) at the current
    torch thread count (best of 3 runs)."""
    if torch.device(device).type == "cuda":
        size = max(size, 8192)  # a GPU needs a big matmul to reach its rate
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(repeats):
            torch.mm(a, b)

    return 2 * size**3 * repeats / best_seconds(run, 3, device)


_ONE_PROCESS = (
    "import sys, torch; sys.path.insert(0, sys.argv[1]); torch.set_num_threads(1);"
    "from bench.common import matmul_flops; print(matmul_flops())"
)


def parallel_matmul_flops(processes: int) -> float:
    """Summed fp32 matmul FLOP/s of ``processes`` single-thread processes running at once: the
    limit for a data-parallel run of as many processes (each process's best of 3)."""
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ONE_PROCESS, root], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    return sum(float(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs)
