"""An acknowledged extrinsic survives ``kill -9`` of the node; the restarted node continues."""

from __future__ import annotations

from pathlib import Path

from crucible.chain.interface import BurnedRegister, DevFaucet, SetCommitment
from crucible.chain.local.client import LocalChain
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair


def test_acknowledged_extrinsics_survive_kill_9(tmp_path: Path) -> None:
    owner = keypair("owner-coldkey").ss58_address
    proc = NodeProcess(tmp_path / "chain", owner)
    chain = proc.start()
    try:
        coldkey = keypair("durable-coldkey")
        chain.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
        hotkeys = [keypair(f"durable-{i}") for i in range(8)]
        for hk in hotkeys:
            chain.submit(
                BurnedRegister(netuid=1, hotkey=hk.ss58_address), coldkey
            ).raise_for_failure()
        chain.step(3)
        for i, hk in enumerate(hotkeys):
            chain.submit(SetCommitment(netuid=1, data=f"model-{i}"), hk).raise_for_failure()
        head, head_hash = chain.block(), chain.block_hash(chain.block())
        balance = chain.balance(coldkey.ss58_address)
        proc.kill9()

        proc.port = proc.port  # same data dir, same port
        restarted = proc.start()
        assert restarted.block() == head and restarted.block_hash(head) == head_hash
        assert restarted.balance(coldkey.ss58_address) == balance
        commitments = restarted.commitments(1)
        assert [commitments[hk.ss58_address].data for hk in hotkeys] == [
            f"model-{i}" for i in range(8)
        ]
        # the chain continues: new blocks chain from the old head, nonces continue
        restarted.step(1)
        assert restarted.header(head + 1)["parent"] == head_hash
        fresh = LocalChain(proc.url)
        assert fresh.submit(
            BurnedRegister(netuid=1, hotkey=keypair("after").ss58_address), coldkey
        ).ok
    finally:
        proc.stop()
