"""Admission to serving capacity: tier then stake, reserved slots, one global public budget, and
slots held until abandoned work has really ended. Pure core with a hand-driven clock; the async
shell and the worker on a real event loop and real threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from crucible.protocol.errors import ConfigError
from crucible.server.capacity import AdmissionQueue, Caller, Capacity, CapacityConfig, Tier
from crucible.server.errors import Overloaded, RateLimited, status_for
from crucible.server.worker import run_admitted

VALIDATOR = Caller(Tier.VALIDATOR, 1)
PUBLIC = Caller(Tier.PUBLIC)


def registered(stake_rao: int = 0) -> Caller:
    return Caller(Tier.REGISTERED, stake_rao)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def queue(**config: object) -> AdmissionQueue:
    return AdmissionQueue(CapacityConfig(**config), Clock())


def test_waiters_are_served_by_tier_then_stake_then_arrival_not_first_come() -> None:
    q = queue(slots=2, public_slots=1)
    running, _ = q.offer(registered())
    q.offer(registered())  # both slots busy from here on
    order = {
        q.offer(caller)[0]: name
        for name, caller in [
            ("public", PUBLIC),
            ("low stake", registered(5)),
            ("high stake", registered(10)),
            ("validator", VALIDATOR),
            ("high stake, later", registered(10)),
        ]
    }
    served = []
    for _ in range(len(order)):
        started = q.finish(running).started
        assert len(started) == 1
        running = started[0]
        served.append(order[running])
    assert served == ["validator", "high stake", "high stake, later", "low stake", "public"]


def test_unregistered_callers_never_take_the_reserved_slot() -> None:
    q = queue(slots=2, public_slots=1)
    first, changes = q.offer(PUBLIC)
    assert changes.started == (first,)
    second, changes = q.offer(PUBLIC)
    assert changes.started == ()  # a slot is free, but it is not theirs
    client, changes = q.offer(registered())
    assert changes.started == (client,)  # the reserved slot is there for a registered caller
    assert q.finish(client).started == ()  # the freed reserved slot still is not public
    assert q.finish(first).started == (second,)


def test_the_public_budget_is_global_whatever_hotkeys_are_minted() -> None:
    clock = Clock()
    q = AdmissionQueue(
        CapacityConfig(public_rate_per_s=2.0, public_burst=3, public_max_waiting=10), clock
    )
    for _ in range(3):  # every one of these could come from a fresh hotkey: it makes no odds
        q.offer(PUBLIC)
    with pytest.raises(RateLimited, match="unregistered callers share 2 requests/s") as info:
        q.offer(PUBLIC)
    assert (info.value.code, status_for(info.value)) == ("public_rate_limited", 429)
    q.offer(registered())  # registered callers are not charged to the public budget
    clock.now += 0.5  # 0.5 s × 2/s = one more public request
    q.offer(PUBLIC)
    with pytest.raises(RateLimited):
        q.offer(PUBLIC)


def test_the_public_queue_is_bounded_and_refuses_with_503() -> None:
    q = queue(slots=2, public_slots=1, public_max_waiting=2)
    for _ in range(3):  # one runs, two wait
        q.offer(PUBLIC)
    with pytest.raises(Overloaded, match="queue for unregistered callers is full") as info:
        q.offer(PUBLIC)
    assert (info.value.code, status_for(info.value)) == ("public_queue_full", 503)
    stats = q.stats()
    assert (stats.running[Tier.PUBLIC], stats.waiting[Tier.PUBLIC]) == (1, 2)


def test_a_full_queue_pushes_out_the_lowest_priority_waiter() -> None:
    q = queue(slots=1, public_slots=0, max_waiting=2)
    q.offer(registered())
    low, _ = q.offer(registered(1))
    q.offer(registered(2))
    validator, changes = q.offer(VALIDATOR)
    assert changes.evicted == (low,)  # the validator gets in; the lowest stake makes room
    with pytest.raises(Overloaded, match="queue is full") as info:
        q.offer(registered(0))  # ranks below everyone waiting: refused, nobody evicted
    assert (info.value.code, status_for(info.value)) == ("server_busy", 503)
    assert q.stats().waiting[Tier.VALIDATOR] == 1 and q.stats().waiting[Tier.REGISTERED] == 1


def test_no_public_slots_refuses_unregistered_callers_outright() -> None:
    with pytest.raises(Overloaded) as info:
        queue(slots=1, public_slots=0).offer(PUBLIC)
    assert (info.value.code, status_for(info.value)) == ("no_public_capacity", 503)


def test_a_withdrawn_waiter_loses_its_place_and_a_withdrawn_runner_frees_its_slot() -> None:
    q = queue(slots=1, public_slots=0)
    runner, _ = q.offer(registered())
    gone, _ = q.offer(VALIDATOR)
    stays, _ = q.offer(registered())
    assert q.withdraw(gone).started == ()
    assert q.withdraw(runner).started == (stays,)
    assert q.finish(runner).started == ()  # finishing twice frees nothing twice
    assert q.stats().running[Tier.REGISTERED] == 1


@pytest.mark.parametrize(
    "config",
    [
        dict(slots=0),
        dict(slots=2, public_slots=2),  # nothing left out of public reach
        dict(public_slots=-1),
        dict(max_waiting=-1),
        dict(public_rate_per_s=0.0),
        dict(public_burst=0),
    ],
)
def test_nonsense_capacity_is_a_config_error(config: dict) -> None:
    with pytest.raises(ConfigError):
        CapacityConfig(**config)


def test_caller_tier_comes_from_the_metagraph_entry() -> None:
    from crucible.chain.interface import Neuron

    def neuron(permit: bool, stake: int) -> Neuron:
        return Neuron(1, "hk", "ck", stake, True, permit, 0, 0, 0.0, 0.0, 0.0, 0.0, 0)

    assert Caller.of(None) == Caller(Tier.PUBLIC, 0)
    assert Caller.of(neuron(True, 7)) == Caller(Tier.VALIDATOR, 7)
    assert Caller.of(neuron(False, 3)) == Caller(Tier.REGISTERED, 3)


# -- the async shell and the worker ---------------------------------------------------------


def test_an_abandoned_thread_keeps_its_slot_until_it_really_ends() -> None:
    """A handler that times out stops waiting; the slot is freed only when the thread returns."""
    saw_cancel, finish_now = threading.Event(), threading.Event()

    def stubborn(cancel: threading.Event) -> str:
        cancel.wait(10)
        saw_cancel.set()  # it was told; like one forward pass, it still takes a while to stop
        finish_now.wait(10)
        return "late"

    async def scenario() -> list[str]:
        capacity = Capacity(CapacityConfig(slots=1, public_slots=0))
        grant = await capacity.admit(registered())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(run_admitted(grant, stubborn), timeout=0.05)
        await asyncio.to_thread(saw_cancel.wait, 10)
        events = ["cancel seen"]
        assert capacity.stats().running[Tier.REGISTERED] == 1  # still computing: still held
        waiting = asyncio.ensure_future(capacity.admit(VALIDATOR))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        finish_now.set()
        next_grant = await asyncio.wait_for(waiting, timeout=10)
        events.append("next admitted after the thread ended")
        assert await run_admitted(next_grant, lambda _: "done") == "done"
        assert capacity.stats().running == {tier: 0 for tier in Tier}
        return events

    assert asyncio.run(scenario()) == ["cancel seen", "next admitted after the thread ended"]


def test_a_cancelled_wait_gives_up_its_place_and_an_evicted_waiter_gets_503() -> None:
    async def scenario() -> None:
        capacity = Capacity(CapacityConfig(slots=1, public_slots=0, max_waiting=1))
        grant = await capacity.admit(registered())
        patient = asyncio.ensure_future(capacity.admit(registered()))
        await asyncio.sleep(0)
        pushed_by_validator = asyncio.ensure_future(capacity.admit(VALIDATOR))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="higher-priority") as info:
            await patient
        assert info.value.code == "server_busy"
        pushed_by_validator.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pushed_by_validator
        assert capacity.stats().waiting == {tier: 0 for tier in Tier}
        grant.release()
        grant.release()  # idempotent
        assert capacity.stats().running == {tier: 0 for tier in Tier}

    asyncio.run(scenario())


def test_work_that_raises_frees_its_slot_and_the_error_reaches_the_caller() -> None:
    def broken(_: threading.Event) -> None:
        raise ValueError("model exploded")

    async def scenario() -> None:
        capacity = Capacity(CapacityConfig(slots=1, public_slots=0))
        with pytest.raises(ValueError, match="model exploded"):
            await run_admitted(await capacity.admit(registered()), broken)
        (await asyncio.wait_for(capacity.admit(registered()), timeout=5)).release()

    asyncio.run(scenario())
