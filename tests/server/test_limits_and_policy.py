"""Token buckets, concurrency caps and access rules, with a hand-driven clock."""

from __future__ import annotations

import pytest

from crucible.chain.interface import Neuron
from crucible.protocol.errors import AuthError, ConfigError
from crucible.server.errors import RateLimited, status_for
from crucible.server.limits import ConcurrencyLimiter, RateLimiter
from crucible.server.policy import Access, RoutePolicy, check_access


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.acquire("hk")
    with pytest.raises(RateLimited) as info:
        limiter.acquire("hk")
    assert info.value.code == "rate_limited"
    assert status_for(info.value) == 429
    clock.now += 0.5  # 0.5 s × 2/s = 1 token
    limiter.acquire("hk")
    with pytest.raises(RateLimited):
        limiter.acquire("hk")
    clock.now += 100  # refill is capped at the burst
    for _ in range(3):
        limiter.acquire("hk")
    with pytest.raises(RateLimited):
        limiter.acquire("hk")


def test_buckets_are_per_hotkey() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=Clock())
    limiter.acquire("a")
    limiter.acquire("b")
    with pytest.raises(RateLimited):
        limiter.acquire("a")


def test_bucket_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.001, burst=1, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.acquire(key)
    with pytest.raises(RateLimited):
        limiter.acquire("a")  # "a" is now the most recently seen
    limiter.acquire("d")  # evicts "b", the least recently seen
    assert len(limiter) == 3
    limiter.acquire("b")  # a fresh bucket, as a brand-new hotkey would get
    with pytest.raises(RateLimited):
        limiter.acquire("a")  # still remembered and still empty


def test_concurrency_cap_refuses_the_next_call_and_frees_slots() -> None:
    limiter = ConcurrencyLimiter(limit=2)
    with limiter.slot("hk"), limiter.slot("hk"):
        with pytest.raises(RateLimited) as info, limiter.slot("hk"):
            pass
        assert info.value.code == "too_many_concurrent"
        with limiter.slot("other"):
            assert limiter.in_flight("other") == 1
    assert limiter.in_flight("hk") == 0
    with pytest.raises(ValueError), limiter.slot("hk"):  # a failing handler frees its slot
        raise ValueError("boom")
    assert limiter.in_flight("hk") == 0


def _neuron(permit: bool = False, stake_rao: int = 0) -> Neuron:
    return Neuron(
        uid=3,
        hotkey="hk",
        coldkey="ck",
        stake_rao=stake_rao,
        active=True,
        validator_permit=permit,
        last_update=0,
        block_at_registration=0,
        consensus=0.0,
        incentive=0.0,
        dividends=0.0,
        validator_trust=0.0,
        emission_rao=0,
    )


@pytest.mark.parametrize(
    "neuron, policy, code",
    [
        (None, RoutePolicy(), "not_registered"),
        (_neuron(permit=False), RoutePolicy(access=Access.VALIDATOR), "no_validator_permit"),
        (
            _neuron(stake_rao=9),
            RoutePolicy(access=Access.MIN_STAKE, min_stake_rao=10),
            "insufficient_stake",
        ),
    ],
)
def test_access_refusals_are_403_with_a_code(neuron, policy: RoutePolicy, code: str) -> None:
    with pytest.raises(AuthError) as info:
        check_access(neuron, policy, hotkey="hk", netuid=2)
    assert info.value.code == code
    assert status_for(info.value) == 403


def test_access_granted_returns_the_neuron() -> None:
    validator = _neuron(permit=True, stake_rao=10)
    assert (
        check_access(validator, RoutePolicy(access=Access.VALIDATOR), hotkey="hk", netuid=2)
        is validator
    )
    policy = RoutePolicy(access=Access.MIN_STAKE, min_stake_rao=10)
    assert check_access(validator, policy, hotkey="hk", netuid=2) is validator


def test_nonsense_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="positive"):
        RoutePolicy(rate_per_s=0)
    with pytest.raises(ConfigError, match="timeout_s"):
        RoutePolicy(timeout_s=0)
