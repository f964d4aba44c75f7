"""Shared bench helpers: the machine's measured fp32 matmul rate (the 'limit' baselines use)."""

from __future__ import annotations

import time

import torch

__all__ = ["matmul_flops"]


def matmul_flops(size: int = 1024, repeats: int = 20) -> float:
    """fp32 FLOP/s of a square matmul at the current torch thread count (best of 3 runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best
