"""The command-line entry points against a real node process, with real wallets on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible.chain.interface import DevFaucet
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def node_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("cli-node"), keypair("owner-coldkey").ss58_address)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def wallet_path(tmp_path_factory: pytest.TempPathFactory, node_process: NodeProcess) -> Path:
    import bittensor as bt

    path = tmp_path_factory.mktemp("wallets")
    wallet = bt.Wallet(name="cli", hotkey="miner", path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    from crucible.chain.local.client import LocalChain

    LocalChain(node_process.url).submit(
        DevFaucet(amount_rao=100 * TAO), wallet.coldkey
    ).raise_for_failure()
    return path


def run(*args: str, node: NodeProcess, wallet_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BT_CHAIN_ENDPOINT": node.url,
        "BT_WALLET_PATH": str(wallet_path),
        "BT_WALLET_NAME": "cli",
        "BT_WALLET_HOTKEY": "miner",
    }
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_register_then_list_miners(node_process: NodeProcess, wallet_path: Path) -> None:
    registered = run(
        "crucible.neurons.miner", "register", node=node_process, wallet_path=wallet_path
    )
    assert registered.returncode == 0, registered.stderr
    assert "registered" in registered.stdout and "uid 0" in registered.stdout
    again = run("crucible.neurons.miner", "register", node=node_process, wallet_path=wallet_path)
    assert again.returncode == 0 and "already registered on netuid 1 as uid 0" in again.stdout
    miners = run("crucible.neurons.client", "miners", node=node_process, wallet_path=wallet_path)
    assert miners.returncode == 0, miners.stderr
    assert "uid" in miners.stdout and " 0 " in miners.stdout


def test_missing_wallet_and_dead_node_are_clear_errors(
    node_process: NodeProcess, wallet_path: Path, tmp_path: Path
) -> None:
    no_wallet = run(
        "crucible.neurons.client",
        "miners",
        "--wallet",
        "nobody",
        node=node_process,
        wallet_path=wallet_path,
    )
    assert no_wallet.returncode == 2 and "btcli wallet create" in no_wallet.stderr
    dead = run(
        "crucible.neurons.client",
        "miners",
        "--chain-endpoint",
        "http://127.0.0.1:9",
        node=node_process,
        wallet_path=wallet_path,
    )
    assert dead.returncode == 1 and "unreachable" in dead.stderr


def test_yuma_and_unknown_network(node_process: NodeProcess, wallet_path: Path) -> None:
    unknown = run(
        "crucible.neurons.client",
        "miners",
        "--network",
        "nowhere",
        node=node_process,
        wallet_path=wallet_path,
    )
    assert unknown.returncode == 2 and "unknown network" in unknown.stderr
    usage = run("crucible.neurons.crucible", "--help", node=node_process, wallet_path=wallet_path)
    assert usage.returncode == 0 and "localnet" in usage.stdout
