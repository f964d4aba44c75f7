"""Which miner to ask first: incentive (what validators think of its model) weighed by what this
client measured of it (time to first token, recent failures). Pure: the clock is injected.

The order is by ``incentive × speed``, where ``speed = 1 / (1 + ttft / scale_s)`` from an
exponential moving average of the time to first token (1 for a miner not measured yet, so it
gets measured). A miner that just failed is tried last for a cool-down that doubles with each
consecutive failure (capped at ``max_cooldown_s``), so a dead top miner costs one failed attempt
per cool-down rather than one per request; a success clears it. Ties (zero incentive) go to the
faster miner, then the lower uid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crucible.chain.interface import Neuron

__all__ = ["LatencyBook", "MinerRecord"]


@dataclass
class MinerRecord:
    ttft_s: float | None = None  # moving average of the time to first token
    failures: int = 0  # consecutive
    failed_at: float = 0.0


class LatencyBook:
    """Per-hotkey measurements of one client (module doc). Not thread-safe: one event loop."""

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        scale_s: float = 2.0,
        max_cooldown_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alpha, self.scale_s, self.max_cooldown_s = alpha, scale_s, max_cooldown_s
        self._clock = clock
        self._records: dict[str, MinerRecord] = {}

    def record(self, hotkey: str, ttft_s: float) -> None:
        """A stream from ``hotkey`` started, ``ttft_s`` after it was asked."""
        entry = self._records.setdefault(hotkey, MinerRecord())
        previous = entry.ttft_s
        entry.ttft_s = ttft_s if previous is None else previous + self.alpha * (ttft_s - previous)
        entry.failures = 0

    def failed(self, hotkey: str) -> None:
        entry = self._records.setdefault(hotkey, MinerRecord())
        entry.failures += 1
        entry.failed_at = self._clock()

    def get(self, hotkey: str) -> MinerRecord:
        return self._records.get(hotkey, MinerRecord())

    def speed(self, hotkey: str) -> float:
        ttft = self.get(hotkey).ttft_s
        return 1.0 if ttft is None else 1.0 / (1.0 + ttft / self.scale_s)

    def cooling(self, hotkey: str) -> bool:
        entry = self.get(hotkey)
        if not entry.failures:
            return False
        cooldown = min(self.max_cooldown_s, 2.0 ** (entry.failures - 1))
        return self._clock() - entry.failed_at < cooldown

    def order(self, neurons: Sequence[Neuron]) -> list[Neuron]:
        """``neurons`` best first (module doc)."""

        def key(n: Neuron) -> tuple[bool, float, float, int]:
            speed = self.speed(n.hotkey)
            return (self.cooling(n.hotkey), -n.incentive * speed, -speed, n.uid)

        return sorted(neurons, key=key)
