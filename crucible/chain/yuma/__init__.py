"""Yuma consensus (Yuma3 and classic) as pure functions, bit-for-bit equal to subtensor.

``run_epoch(EpochInput) -> EpochOutput`` is what the local chain calls each tempo; ``python -m
chain.yuma`` reads one epoch's input as JSON on stdin and prints the output as JSON. The math
follows ``specs/yuma.md`` §4–5 in I32F32 fixed point (``chain.yuma.fixed``);
``chain.yuma.reference`` is a literal scalar version kept as the oracle for tests.
"""

from crucible.chain.yuma.epoch import epoch as run_epoch
from crucible.chain.yuma.types import EpochInput, EpochInputError, EpochOutput, EpochParams

__all__ = ["EpochInput", "EpochInputError", "EpochOutput", "EpochParams", "run_epoch"]
