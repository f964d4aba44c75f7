"""The block clock never dies silently.

The chain's state is made to fail the per-block step by writing a value straight into SQLite,
past every validation (``min_burn_rao`` = 10**20 cannot be stored as the new burn). Each failed
block is logged, rolled back whole and reported on ``GET /health``; the node keeps answering,
and once the state is repaired the clock produces blocks again from the last good state.
"""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from crucible.chain.interface import DevFaucet
from crucible.chain.local.client import LocalChain
from crucible.chain.local.server import BlockClock
from crucible.protocol.errors import ChainError
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair
from tests.waiting import wait_for

CLOCK_WAIT = {"timeout_s": 20.0, "poll_s": 0.05}

POISON = 10**20


def _poke_min_burn(db_path: Path, value: int) -> None:
    """Write ``min_burn_rao`` into the stored hyperparameters, bypassing the chain's rules."""
    db = sqlite3.connect(str(db_path), timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        raw = db.execute("SELECT hyperparameters FROM subnets WHERE netuid=1").fetchone()[0]
        hp = json.loads(raw)
        hp["min_burn_rao"] = value
        db.execute("UPDATE subnets SET hyperparameters=? WHERE netuid=1", (json.dumps(hp),))
        db.execute("COMMIT")
    finally:
        db.close()


def test_a_failing_block_is_logged_rolled_back_and_retried_by_the_clock(
    node, caplog: pytest.LogCaptureFixture
) -> None:
    node.step(3)
    coldkey = keypair("clock-coldkey")
    node.submit(DevFaucet(amount_rao=5 * TAO), coldkey).raise_for_failure()
    head, head_hash, burn = node.block(), node.block_hash(node.block()), node.burn(1)
    _poke_min_burn(node.data_dir / "chain.sqlite", POISON)
    clock = BlockClock(node, 0.02)
    with caplog.at_level(logging.ERROR, logger="crucible.chain.local.node"):
        clock.start()
        try:
            health = wait_for(
                "failures", lambda: (h := node.health()).failed_blocks >= 3 and h, **CLOCK_WAIT
            )
            assert not health.ok and health.block == head
            assert "OverflowError" in health.last_error
            # the last good state is kept whole: head, hash, burn, balances
            assert node.block() == head and node.block_hash(head) == head_hash
            assert node.burn(1) == burn and node.balance(coldkey.ss58_address) == 5 * TAO
            # the node still takes extrinsics while its clock is failing
            assert node.submit(DevFaucet(amount_rao=TAO), coldkey).ok
            _poke_min_burn(node.data_dir / "chain.sqlite", 500_000)
            wait_for("recovery", lambda: node.block() >= head + 2, **CLOCK_WAIT)
            health = node.health()
            assert health.ok and health.failed_blocks == 0 and health.total_failed_blocks >= 3
            assert "OverflowError" in health.last_error  # kept for the record
        finally:
            clock.stop()
    failures = [r for r in caplog.records if "block production failed" in r.getMessage()]
    assert failures and failures[0].levelno == logging.ERROR and failures[0].exc_info
    assert node.header(head + 1).parent == head_hash


def test_a_manual_step_that_fails_is_a_typed_error(node) -> None:
    node.step(1)
    _poke_min_burn(node.data_dir / "chain.sqlite", POISON)
    with pytest.raises(ChainError, match="could not be produced") as info:
        node.step(1)
    assert info.value.code == "block_failed" and node.block() == 1


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_node_process_reports_failing_blocks_on_health_and_keeps_answering(
    tmp_path: Path,
) -> None:
    proc = NodeProcess(
        tmp_path / "chain", keypair("owner-coldkey").ss58_address, "--block-time", "0.1"
    )
    chain = proc.start()
    try:
        coldkey = keypair("health-coldkey")
        chain.submit(DevFaucet(amount_rao=7 * TAO), coldkey).raise_for_failure()
        wait_for("first blocks", lambda: chain.block() >= 3, **CLOCK_WAIT)
        status, health = _get(proc.port, "/health")
        assert status == 200 and health["ok"] and health["failed_blocks"] == 0
        _poke_min_burn(proc.data_dir / "chain.sqlite", POISON)
        health = wait_for(
            "reported failures",
            lambda: (h := chain.health())["failed_blocks"] >= 3 and h,
            **CLOCK_WAIT,
        )
        assert health["ok"] is False and "OverflowError" in health["last_error"]
        head = health["block"]
        time.sleep(0.5)  # several more ticks: every one fails, none advances the chain
        assert chain.block() == head and chain.health()["failed_blocks"] > health["failed_blocks"]
        assert chain.balance(coldkey.ss58_address) == 7 * TAO
        assert chain.metagraph(1).block == head and chain.nonce(coldkey.ss58_address) == 1
        _poke_min_burn(proc.data_dir / "chain.sqlite", 500_000)
        wait_for("blocks after the repair", lambda: chain.block() > head + 2, **CLOCK_WAIT)
        assert chain.health()["ok"] and proc.proc.poll() is None
    finally:
        proc.stop()


def test_dev_step_on_a_failing_chain_answers_503_with_the_reason(tmp_path: Path) -> None:
    proc = NodeProcess(tmp_path / "chain", keypair("owner-coldkey").ss58_address)
    chain = proc.start()
    try:
        chain.step(2)
        _poke_min_burn(proc.data_dir / "chain.sqlite", POISON)
        status, body = _get(proc.port, "/dev/step?blocks=3", method="POST")
        assert status == 503 and body["code"] == "block_failed"
        assert "last good state" in body["message"]
        assert chain.block() == 2 and chain.health()["failed_blocks"] == 1
        assert isinstance(LocalChain(proc.url).genesis, str)
    finally:
        proc.stop()
