"""The server's registration view: loaded from the chain in a thread, trusted only while fresh."""

from __future__ import annotations

import asyncio

import pytest

from crucible.protocol.errors import ChainUnavailable, ConfigError
from crucible.server.errors import status_for
from crucible.server.metagraph_cache import MetagraphCache
from tests.server.conftest import Net


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lookup_before_the_first_load_is_unavailable_not_unregistered(net: Net) -> None:
    cache = MetagraphCache(net.chain, net.netuid)
    with pytest.raises(ChainUnavailable) as info:
        cache.lookup(net.miner_kp.ss58_address)
    assert info.value.code == "metagraph_unavailable"
    assert status_for(info.value) == 503


def test_refresh_reads_the_chain_and_finds_registered_hotkeys(net: Net) -> None:
    cache = MetagraphCache(net.chain, net.netuid)
    metagraph = asyncio.run(cache.refresh())
    assert metagraph.netuid == net.netuid
    miner = cache.lookup(net.miner_kp.ss58_address)
    assert miner is not None and miner.hotkey == net.miner_kp.ss58_address
    assert cache.lookup(net.stranger_kp.ss58_address) is None


def test_a_stale_snapshot_is_not_trusted(net: Net) -> None:
    clock = Clock()
    cache = MetagraphCache(net.chain, net.netuid, refresh_s=1.0, max_staleness_s=30.0, clock=clock)
    asyncio.run(cache.refresh())
    clock.now += 29.0
    assert cache.lookup(net.miner_kp.ss58_address) is not None
    clock.now += 2.0
    with pytest.raises(ChainUnavailable, match="older than 30s"):
        cache.lookup(net.miner_kp.ss58_address)


def test_background_refresher_runs_until_stopped(net: Net) -> None:
    cache = MetagraphCache(net.chain, net.netuid, refresh_s=0.05)

    async def go() -> int:
        cache.start()
        cache.start()  # idempotent: still one task
        await asyncio.sleep(0.4)
        await cache.stop()
        count = cache.refreshes
        await asyncio.sleep(0.2)
        assert cache.refreshes == count  # stopped means stopped
        return count

    assert asyncio.run(go()) >= 3
    assert cache.last_error is None


def test_snapshot_of_another_subnet_is_refused(net: Net) -> None:
    cache = MetagraphCache(net.chain, net.netuid + 1)
    with pytest.raises(ConfigError, match="netuid"):
        cache.set(net.chain.metagraph(net.netuid))
