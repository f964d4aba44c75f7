"""``crucible-validator run`` end to end against a node process, killed with -9 and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet
from crucible.chain.local.client import LocalChain
from crucible.competitions import specs_dir
from crucible.miner.publish import publish
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from crucible.protocol.competition import load_competitions
from crucible.store.local import LocalStore
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    import bittensor as bt

    tmp = tmp_path_factory.mktemp("validator-cli")
    node = NodeProcess(
        tmp / "chain", keypair("owner-coldkey").ss58_address, "--commitment-rate-limit", "1"
    )
    chain = node.start()
    wallet = bt.Wallet(name="val", hotkey="default", path=str(tmp / "wallets"))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    chain.submit(DevFaucet(amount_rao=1000 * TAO), wallet.coldkey).raise_for_failure()
    chain.submit(
        BurnedRegister(netuid=1, hotkey=wallet.hotkey.ss58_address), wallet.coldkey
    ).raise_for_failure()
    chain.submit(
        AddStake(netuid=1, hotkey=wallet.hotkey.ss58_address, amount_rao=100 * TAO), wallet.coldkey
    ).raise_for_failure()
    spec = load_competitions(specs_dir())["tiny"]
    store = LocalStore(tmp / "store")
    for i in range(2):
        coldkey, hotkey = keypair(f"cli-miner-{i}-c"), keypair(f"cli-miner-{i}-h")
        chain.submit(DevFaucet(amount_rao=100 * TAO), coldkey).raise_for_failure()
        chain.submit(
            BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey
        ).raise_for_failure()
        model = build_model(build_config(ModelShape(layers=1, hidden=32, heads=2, ffn=64)), seed=i)
        publish(save_model_dir(model, tmp / f"m{i}"), spec, store, chain, 1, hotkey)
    chain.step(25)  # an epoch for the permit, and past the eval delay into round block 20
    yield tmp, node, chain
    node.stop()


def validator(tmp: Path, node: NodeProcess, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "crucible.neurons.validator", "run", "--chain-endpoint", node.url, "--wallet", "val",
        "--wallet-path", str(tmp / "wallets"), "--store-dir", str(tmp / "store"), "--data-dir", str(FIXTURE),
        "--work-dir", str(tmp / "work"), "--quiet", "--port", "0", *extra,
    ]  # fmt: skip


def test_a_round_sets_weights_and_writes_a_bundle(setup) -> None:
    tmp, node, chain = setup
    result = subprocess.run(
        validator(tmp, node, "--rounds", "1"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "→ set" in result.stdout
    state = json.loads((tmp / "work" / "state.json").read_text())
    assert state["last_bundle"] and (tmp / "work" / "bundles" / state["last_bundle"]).exists()
    verify = subprocess.run(
        [sys.executable, "-m", "crucible.neurons.validator", "verify", str(tmp / "work" / "bundles" / state["last_bundle"]),
         "--chain-endpoint", node.url],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (
        "bit for bit" in verify.stdout
        and "the inputs and the weights are the chain's" in verify.stdout
    )
    weights = LocalChain(node.url).metagraph(1).weights
    assert weights and all(sum(row.values()) > 0 for row in weights.values())


def test_killed_validator_resumes_from_its_state(setup) -> None:
    tmp, node, chain = setup
    before = json.loads((tmp / "work" / "state.json").read_text())
    proc = subprocess.Popen(
        validator(tmp, node, "--rounds", "0", "--interval", "0.2"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while json.loads((tmp / "work" / "state.json").read_text()).get(
            "last_weights_block"
        ) == before.get("last_weights_block"):
            assert time.monotonic() < deadline and proc.poll() is None
            chain.step(1)
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads((tmp / "work" / "state.json").read_text())  # whole, never half-written
    assert state["ema"]["tiny"] and state["last_weights_block"] > before["last_weights_block"]
    chain.step(3)
    again = subprocess.run(
        validator(tmp, node, "--rounds", "1"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    after = json.loads((tmp / "work" / "state.json").read_text())
    # the EMA continued from the saved state instead of starting over
    leader = max(after["ema"]["tiny"], key=lambda uid: after["ema"]["tiny"][uid])
    assert after["ema"]["tiny"][leader] >= state["ema"]["tiny"][leader]


def test_a_chain_outage_is_retried_not_fatal(setup) -> None:
    """The node is killed under a running validator and comes back: the validator reports the
    outage, backs off, and carries on with the next round."""
    tmp, node, chain = setup
    proc = subprocess.Popen(
        validator(tmp, node, "--rounds", "0", "--interval", "0.5", "--tick", "0.2"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while not (line := proc.stdout.readline()).startswith("ready:"):
            assert line, "the validator exited"
        node.kill9()
        while "chain unavailable" not in (line := proc.stdout.readline()):
            assert line and proc.poll() is None, "the validator exited instead of retrying"
            lines.append(line)
        assert proc.poll() is None  # still running
        chain = node.start()
        chain.step(20)  # a new round block once the node is back
        deadline = time.monotonic() + 120
        while not (line := proc.stdout.readline()).startswith("block "):
            assert line and time.monotonic() < deadline, "no round after the node came back"
            lines.append(line)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0  # stopped cleanly by SIGTERM, never died of the outage
