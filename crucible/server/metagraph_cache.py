"""The server's view of who is registered: a metagraph snapshot refreshed in the background.

The chain interface is synchronous, so refreshes run in a worker thread (``asyncio.to_thread``)
and never block request handling. Lookups are a dict read on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from crucible.chain.interface import Chain, Metagraph, Neuron
from crucible.protocol.errors import ChainUnavailable, ConfigError

__all__ = ["MetagraphCache"]

log = logging.getLogger(__name__)


class MetagraphCache:
    """Latest metagraph of ``netuid``; refreshed every ``refresh_s`` while ``start``-ed.

    A snapshot older than ``max_staleness_s`` is not trusted: lookups then raise
    ``ChainUnavailable`` (→ 503) instead of admitting deregistered hotkeys forever.
    """

    def __init__(
        self,
        chain: Chain,
        netuid: int,
        *,
        refresh_s: float = 12.0,
        max_staleness_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_s <= 0:
            raise ConfigError("metagraph refresh_s must be > 0")
        self._chain = chain
        self.netuid = netuid
        self.refresh_s = refresh_s
        self.max_staleness_s = (
            max_staleness_s if max_staleness_s is not None else max(60.0, 10 * refresh_s)
        )
        self._clock = clock
        self._metagraph: Metagraph | None = None
        self._by_hotkey: dict[str, Neuron] = {}
        self._loaded_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error: BaseException | None = None
        self.refreshes = 0

    @property
    def metagraph(self) -> Metagraph | None:
        return self._metagraph

    def set(self, metagraph: Metagraph) -> None:
        """Install a snapshot (what ``refresh`` does after reading the chain)."""
        if metagraph.netuid != self.netuid:
            raise ConfigError(f"metagraph is for netuid {metagraph.netuid}, not {self.netuid}")
        self._by_hotkey = {nrn.hotkey: nrn for nrn in metagraph.neurons}
        self._metagraph = metagraph
        self._loaded_at = self._clock()
        self.refreshes += 1

    async def refresh(self) -> Metagraph:
        """Read the metagraph now (in a worker thread) and install it."""
        metagraph = await asyncio.to_thread(self._chain.metagraph, self.netuid)
        self.set(metagraph)
        self.last_error = None
        return metagraph

    def lookup(self, hotkey: str) -> Neuron | None:
        """The registered neuron with ``hotkey``, or None; raises if we have no fresh snapshot."""
        if self._loaded_at is None:
            raise ChainUnavailable(
                f"no metagraph for netuid {self.netuid} yet",
                code="metagraph_unavailable",
                fix="the server is still syncing with the chain; retry shortly",
            )
        if self._clock() - self._loaded_at > self.max_staleness_s:
            raise ChainUnavailable(
                f"metagraph for netuid {self.netuid} is older than {self.max_staleness_s:g}s",
                code="metagraph_unavailable",
                fix="the server cannot reach the chain; retry later",
            )
        return self._by_hotkey.get(hotkey)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last snapshot; record and log why
                self.last_error = exc
                log.warning("metagraph refresh for netuid %d failed: %r", self.netuid, exc)
            await asyncio.sleep(self.refresh_s)

    def start(self) -> None:
        """Start the background refresher on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"metagraph-cache-{self.netuid}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
