"""A chain call that hangs past its timeout does not block the backend's later calls.

The fake substrate's ``block_number`` hangs (an awaited read that never answers, as a dead
websocket does) until the test releases it; only the first call hangs.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from crucible.chain.bittensor import BittensorChain
from crucible.protocol.errors import ChainUnavailable
from tests.chain_bittensor.node_substrate import NodeSubstrate


class HangingSubstrate(NodeSubstrate):
    def __init__(self, node, hangs: int) -> None:
        super().__init__(node)
        self.hangs = hangs
        self.release = threading.Event()
        self.entered = 0

    async def block_number(self) -> int:
        self.entered += 1
        if self.entered <= self.hangs:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        return await super().block_number()


def test_a_hung_call_does_not_block_later_calls(node) -> None:
    substrate = HangingSubstrate(node, hangs=1)
    backend = BittensorChain("local", substrate=substrate, timeout_s=0.5, retries=0)
    try:
        with pytest.raises(ChainUnavailable, match="no answer within"):
            backend.block()
        node.step(2)
        # the first call is still hung on its own thread; this one answers at once
        started = time.monotonic()
        assert backend.block() == node.block() == 2
        assert time.monotonic() - started < 5  # not queued behind the hung call
        assert backend.balance("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY") == 0
    finally:
        substrate.release.set()
        backend.close()


def test_hung_calls_are_bounded(node) -> None:
    substrate = HangingSubstrate(node, hangs=2)
    backend = BittensorChain(
        "local", substrate=substrate, timeout_s=0.3, retries=0, max_hung_calls=2
    )
    try:
        for _ in range(2):
            with pytest.raises(ChainUnavailable, match="no answer within"):
                backend.block()
        # both slots are held by hung calls: the next fails fast instead of starting a thread
        with pytest.raises(ChainUnavailable, match="still hung"):
            backend.block()
        substrate.release.set()
        deadline = time.monotonic() + 10
        while True:  # the released calls finish and give their slots back
            try:
                assert backend.block() == node.block()
                break
            except ChainUnavailable:
                assert time.monotonic() < deadline, "slots were never released"
                time.sleep(0.05)
    finally:
        substrate.release.set()
        backend.close()
