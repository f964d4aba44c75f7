"""Per-hotkey rate limits (token buckets) and concurrency caps. Pure: the clock is injected."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from crucible.server.errors import RateLimited

__all__ = ["ConcurrencyLimiter", "RateLimiter", "TokenBucket"]


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate_per_s``; each request takes one."""

    rate_per_s: float
    capacity: float
    tokens: float
    updated_s: float

    def take(self, now_s: float) -> bool:
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """One token bucket per key (a caller hotkey), at most ``max_keys`` of them.

    Routes open to any signed caller (``Access.SIGNED``) let anyone mint new hotkeys, so the
    table is an LRU: past ``max_keys`` the least recently seen bucket is dropped. That gives its
    key a fresh bucket next time, which a fresh hotkey would get anyway, so nothing is lost.
    Used from the event loop thread only (no lock).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max(1, max_keys)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> None:
        """Take a token for ``key`` or raise ``RateLimited``."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if not bucket.take(now):
            wait_s = (1.0 - bucket.tokens) / self._rate
            raise RateLimited(
                f"rate limit of {self._rate:g}/s (burst {self._burst:g}) exceeded for {key}",
                fix=f"retry in {wait_s:.2f}s",
            )


class ConcurrencyLimiter:
    """At most ``limit`` requests in flight per key; the next one is refused, not queued."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._active: dict[str, int] = {}

    def in_flight(self, key: str) -> int:
        return self._active.get(key, 0)

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        count = self._active.get(key, 0)
        if count >= self._limit:
            raise RateLimited(
                f"{key} already has {count} requests in flight (limit {self._limit})",
                code="too_many_concurrent",
                fix="wait for earlier answers before sending more",
            )
        self._active[key] = count + 1
        try:
            yield
        finally:
            left = self._active[key] - 1
            if left:
                self._active[key] = left
            else:
                del self._active[key]
