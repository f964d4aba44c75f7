"""Who gets the model next: admission to a server's serving capacity, by caller tier then stake.

A model server can run ``slots`` pieces of model work at once. Callers come in three tiers:

- ``VALIDATOR`` — registered and holding a validator permit (the probes that decide scores);
- ``REGISTERED`` — any other registered neuron (clients, gateways);
- ``PUBLIC`` — a valid signature from a hotkey that is not registered. Hotkeys cost nothing to
  mint, so per-hotkey limits mean nothing here: all public callers share one *global* budget —
  at most ``public_slots`` running, ``public_max_waiting`` waiting and ``public_rate_per_s``
  admitted — and are refused (429/503, with a code) past it, never queued without bound.

``public_slots < slots``, so at least one slot is out of public reach. Waiting requests are
served in order of (tier, stake descending, arrival), not first come: a validator's probe
waits behind at most one running piece of work, never behind a queue of strangers. When the
reserved queue is full, the lowest-priority waiter (possibly the newcomer) is refused.

Admission is separate from running (``worker.run_admitted``), so a batcher can later take
several admitted requests into one forward pass. ``AdmissionQueue`` is the pure core (clock
injected, no asyncio); ``Capacity`` is its thin async shell: ``grant = await
capacity.admit(caller)``, then ``grant.release()`` exactly when the work has really ended.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from crucible.chain.interface import Neuron
from crucible.protocol.errors import ConfigError
from crucible.server.errors import Overloaded, RateLimited
from crucible.server.limits import TokenBucket

__all__ = [
    "AdmissionQueue",
    "Caller",
    "Capacity",
    "CapacityConfig",
    "CapacityStats",
    "Changes",
    "Grant",
    "Tier",
]


class Tier(enum.IntEnum):
    """Caller tiers; a lower value is served first."""

    VALIDATOR = 0
    REGISTERED = 1
    PUBLIC = 2


@dataclass(frozen=True)
class Caller:
    """What admission needs to know about a caller: its tier and its stake."""

    tier: Tier
    stake_rao: int = 0

    @classmethod
    def of(cls, neuron: Neuron | None) -> Caller:
        """The caller a server established: ``None`` (unregistered) is ``PUBLIC``."""
        if neuron is None:
            return cls(Tier.PUBLIC)
        tier = Tier.VALIDATOR if neuron.validator_permit else Tier.REGISTERED
        return cls(tier, max(0, neuron.stake_rao))


@dataclass(frozen=True)
class CapacityConfig:
    """How a server's model capacity is shared. Defaults fit a 2-core CPU serving one model."""

    slots: int = 2  # pieces of model work running at once
    public_slots: int = 1  # at most this many of them for unregistered callers
    max_waiting: int = 32  # registered and validator requests waiting for a slot
    public_max_waiting: int = 4  # unregistered requests waiting for a slot (global)
    public_rate_per_s: float = 2.0  # unregistered requests admitted per second (global)
    public_burst: int = 4

    def __post_init__(self) -> None:
        if self.slots < 1 or not 0 <= self.public_slots < self.slots:
            raise ConfigError(
                f"capacity needs slots ≥ 1 and 0 ≤ public_slots < slots "
                f"(got slots={self.slots}, public_slots={self.public_slots})",
                fix="keep at least one slot out of reach of unregistered callers",
            )
        if self.max_waiting < 0 or self.public_max_waiting < 0:
            raise ConfigError("capacity queue bounds must be ≥ 0")
        if not self.public_rate_per_s > 0 or self.public_burst < 1:
            raise ConfigError("public_rate_per_s must be > 0 and public_burst ≥ 1")


@dataclass(frozen=True)
class Changes:
    """What one call to ``AdmissionQueue`` changed: tickets that now hold a slot, and waiting
    tickets pushed out of the queue by a higher-priority arrival."""

    started: tuple[int, ...] = ()
    evicted: tuple[int, ...] = ()


@dataclass(frozen=True)
class CapacityStats:
    running: dict[Tier, int]
    waiting: dict[Tier, int]


def _busy(message: str, code: str = "server_busy") -> Overloaded:
    return Overloaded(message, code=code, fix="retry in a few seconds")


class AdmissionQueue:
    """The pure core of ``Capacity`` (module doc). Not thread-safe: one owner calls it."""

    def __init__(self, config: CapacityConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        burst = float(config.public_burst)
        self._public_rate = TokenBucket(config.public_rate_per_s, burst, burst, clock())
        self._tickets = itertools.count()
        self._running: dict[int, Tier] = {}
        self._waiting: list[tuple[int, int, int]] = []  # sorted (tier, -stake, ticket)

    def stats(self) -> CapacityStats:
        running = {tier: 0 for tier in Tier}
        waiting = {tier: 0 for tier in Tier}
        for tier in self._running.values():
            running[tier] += 1
        for tier, _, _ in self._waiting:
            waiting[Tier(tier)] += 1
        return CapacityStats(running, waiting)

    def offer(self, caller: Caller) -> tuple[int, Changes]:
        """A new request: its ticket, and whether it (or anything) started or was evicted.

        Raises ``RateLimited`` / ``Overloaded`` when the request is refused outright."""
        if caller.tier is Tier.PUBLIC:
            self._admit_public()
        ticket = next(self._tickets)
        if self._can_start(caller.tier):
            self._running[ticket] = caller.tier
            return ticket, Changes(started=(ticket,))
        entry = (int(caller.tier), -caller.stake_rao, ticket)
        evicted = self._make_room(entry)
        bisect.insort(self._waiting, entry)
        return ticket, Changes(evicted=evicted)

    def finish(self, ticket: int) -> Changes:
        """The work of ``ticket`` has really ended: free its slot and start who is next."""
        if self._running.pop(ticket, None) is None:
            return Changes()
        return Changes(started=self._fill())

    def withdraw(self, ticket: int) -> Changes:
        """The caller of ``ticket`` gave up: drop it from the queue, or finish it if it runs."""
        if ticket in self._running:
            return self.finish(ticket)
        self._waiting = [entry for entry in self._waiting if entry[2] != ticket]
        return Changes()

    # -- rules -----------------------------------------------------------------------------

    def _admit_public(self) -> None:
        cfg = self.config
        if cfg.public_slots == 0:
            raise _busy("this server serves no unregistered callers", "no_public_capacity")
        if not self._public_rate.take(self._clock()):
            raise RateLimited(
                f"unregistered callers share {cfg.public_rate_per_s:g} requests/s "
                f"(burst {cfg.public_burst}) on this server, and that budget is spent",
                code="public_rate_limited",
                fix="retry later, or call with a hotkey registered on the subnet",
            )
        waiting = sum(1 for entry in self._waiting if entry[0] == Tier.PUBLIC)
        if waiting >= cfg.public_max_waiting and not self._can_start(Tier.PUBLIC):
            raise _busy(
                f"the queue for unregistered callers is full ({cfg.public_max_waiting} waiting)",
                "public_queue_full",
            )

    def _can_start(self, tier: Tier) -> bool:
        if len(self._running) >= self.config.slots:
            return False
        if tier is Tier.PUBLIC:
            public = sum(1 for t in self._running.values() if t is Tier.PUBLIC)
            return public < self.config.public_slots
        return True

    def _make_room(self, entry: tuple[int, int, int]) -> tuple[int, ...]:
        """Keep the reserved queue within ``max_waiting``: refuse whoever ranks last."""
        if entry[0] == Tier.PUBLIC:
            return ()  # bounded in _admit_public
        reserved = [e for e in self._waiting if e[0] != Tier.PUBLIC]
        if len(reserved) < self.config.max_waiting:
            return ()
        worst = max(reserved, default=None)
        if worst is None or worst < entry:
            raise _busy(f"all {self.config.slots} slots are busy and the queue is full")
        self._waiting.remove(worst)
        return (worst[2],)

    def _fill(self) -> tuple[int, ...]:
        started: list[int] = []
        while True:
            entry = next((e for e in self._waiting if self._can_start(Tier(e[0]))), None)
            if entry is None:
                return tuple(started)
            self._waiting.remove(entry)
            self._running[entry[2]] = Tier(entry[0])
            started.append(entry[2])


class Grant:
    """A held slot of a ``Capacity``; ``release()`` (idempotent) once the work has ended.

    Call ``release`` on the event loop thread (``worker.run_admitted`` does it for you)."""

    def __init__(self, capacity: Capacity, ticket: int) -> None:
        self._capacity = capacity
        self.ticket = ticket
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._capacity._apply(self._capacity.queue.finish(self.ticket))


class Capacity:
    """``AdmissionQueue`` for coroutines: ``await admit(caller)`` waits for a slot by priority.

    Used from one event loop (the server's); construction does no I/O and binds no loop."""

    def __init__(
        self, config: CapacityConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.queue = AdmissionQueue(config or CapacityConfig(), clock)
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def stats(self) -> CapacityStats:
        return self.queue.stats()

    async def admit(self, caller: Caller) -> Grant:
        """Wait for a slot; raises ``RateLimited``/``Overloaded`` if refused or pushed out.

        Cancelling the wait (a handler timeout) gives the place up, or the slot if it was
        granted in the meantime."""
        ticket, changes = self.queue.offer(caller)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = future
        self._apply(changes)
        try:
            await future
        except asyncio.CancelledError:
            self._waiters.pop(ticket, None)
            self._apply(self.queue.withdraw(ticket))
            raise
        return Grant(self, ticket)

    def _apply(self, changes: Changes) -> None:
        for ticket in changes.started:
            future = self._waiters.pop(ticket, None)
            if future is not None and not future.done():
                future.set_result(None)
        for ticket in changes.evicted:
            future = self._waiters.pop(ticket, None)
            if future is not None and not future.done():
                future.set_exception(
                    _busy("pushed out of the queue by higher-priority callers (validators first)")
                )
