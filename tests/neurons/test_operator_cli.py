"""The operator's commands on a real node process with real wallets: fund, balance, stake,
metagraph, hyperparameters; ``crucible localnet`` restarted with other flags; clean stops."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible.chain.local.client import LocalChain
from tests.chain.nodeproc import NodeProcess, free_port
from tests.conftest import keypair

ROOT = Path(__file__).resolve().parents[2]


def make_wallet(path: Path, name: str, *, coldkey_seed_of: str | None = None) -> None:
    import bittensor as bt

    wallet = bt.Wallet(name=name, hotkey="default", path=str(path))
    if coldkey_seed_of is None:
        wallet.create_new_coldkey(use_password=False, suppress=True)
    else:  # the same key as tests.conftest.keypair(coldkey_seed_of)
        seed = "0x" + hashlib.sha256(coldkey_seed_of.encode()).hexdigest()
        wallet.regenerate_coldkey(seed=seed, use_password=False, overwrite=True, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("op-node"), keypair("owner-coldkey").ss58_address)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("op-wallets")
    make_wallet(path, "owner", coldkey_seed_of="owner-coldkey")
    make_wallet(path, "op")
    return path


def crucible(*args: str, node: NodeProcess, wallets: Path, wallet: str = "op"):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BT_")},
        "BT_CHAIN_ENDPOINT": node.url,
        "BT_WALLET_PATH": str(wallets),
        "BT_WALLET_NAME": wallet,
    }
    return subprocess.run(
        [sys.executable, "-m", "crucible.neurons.crucible", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def miner_register(node: NodeProcess, wallets: Path):
    env = {
        **os.environ,
        "BT_CHAIN_ENDPOINT": node.url,
        "BT_WALLET_PATH": str(wallets),
        "BT_WALLET_NAME": "op",
    }
    return subprocess.run(
        [sys.executable, "-m", "crucible.neurons.miner", "register"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_fund_register_stake_unstake_and_the_metagraph(node: NodeProcess, wallets: Path) -> None:
    funded = crucible("fund", "--amount", "250", node=node, wallets=wallets)
    assert funded.returncode == 0, funded.stderr
    assert "balance 250.0000 TAO" in funded.stdout
    registered = miner_register(node, wallets)
    assert registered.returncode == 0 and "as uid 0" in registered.stdout, registered.stderr
    again = miner_register(node, wallets)
    assert again.returncode == 0 and "already registered on netuid 1 as uid 0" in again.stdout
    staked = crucible("stake", "add", "--amount", "100", node=node, wallets=wallets)
    assert staked.returncode == 0, staked.stderr
    assert "staked 100.0000 TAO" in staked.stdout and "100.0000 TAO staked" in staked.stdout
    unstaked = crucible("stake", "remove", "--amount", "40", node=node, wallets=wallets)
    assert unstaked.returncode == 0 and "60.0000 TAO staked" in unstaked.stdout
    too_much = crucible("stake", "remove", "--amount", "1000", node=node, wallets=wallets)
    assert too_much.returncode == 1 and "insufficient_stake" in too_much.stderr
    balance = crucible("balance", node=node, wallets=wallets)
    assert balance.returncode == 0 and " TAO" in balance.stdout
    table = crucible("metagraph", node=node, wallets=wallets)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[1:3]
    for column in (
        "uid",
        "stake (TAO)",
        "trust",
        "consensus",
        "incentive",
        "dividends",
        "emission",
        "vtrust",
        "permit",
        "endpoint",
        "commitment",
    ):
        assert column in header
    assert row.split()[0] == "0" and "60.0000" in row
    as_json = json.loads(crucible("metagraph", "--json", node=node, wallets=wallets).stdout)
    assert as_json["neurons"][0]["stake_tao"] == pytest.approx(60.0)


def test_only_the_owner_sets_hyperparameters_within_bounds(
    node: NodeProcess, wallets: Path
) -> None:
    listed = crucible("hyperparameters", node=node, wallets=wallets)
    assert listed.returncode == 0 and "immunity_period" in listed.stdout
    ok = crucible(
        "hyperparameters",
        "--set",
        "immunity_period",
        "120",
        node=node,
        wallets=wallets,
        wallet="owner",
    )
    assert ok.returncode == 0, ok.stderr
    assert "immunity_period = 120" in ok.stdout
    assert LocalChain(node.url).hyperparameters(1).immunity_period == 120
    stranger = crucible(
        "hyperparameters", "--set", "immunity_period", "7", node=node, wallets=wallets
    )
    assert stranger.returncode == 1 and "not_subnet_owner" in stranger.stderr
    absurd = crucible(
        "hyperparameters", "--set", "kappa", "70000", node=node, wallets=wallets, wallet="owner"
    )
    assert absurd.returncode == 1 and "kappa" in absurd.stderr and "out of range" in absurd.stderr
    unknown = crucible(
        "hyperparameters", "--set", "tempoo", "7", node=node, wallets=wallets, wallet="owner"
    )
    assert unknown.returncode == 2 and "'tempoo' is not a hyperparameter" in unknown.stderr
    assert LocalChain(node.url).hyperparameters(1).immunity_period == 120


def test_there_is_no_faucet_on_the_real_network(node: NodeProcess, wallets: Path) -> None:
    out = crucible("fund", "--network", "test", node=node, wallets=wallets)
    assert out.returncode == 2 and "there is no dev faucet on test" in out.stderr


def _localnet(data_dir: Path, port: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "crucible.neurons.crucible", "localnet", "--data-dir", str(data_dir),
         "--port", str(port), "--block-time", "0", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _ready(proc: subprocess.Popen[str]) -> list[str]:
    """stdout lines up to the ready line (a restart prints what it applied first)."""
    assert proc.stdout is not None
    lines = []
    while not (line := proc.stdout.readline()).startswith("ready:"):
        assert line, f"the node exited: {proc.communicate()[1][-2000:]}"
        lines.append(line.strip())
    return lines


def _stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_localnet_applies_changed_flags_refuses_identity_changes_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "chain", free_port()
    first = _localnet(data, port, "--tempo", "10")
    assert _ready(first) == []
    err = _stop(first, signal.SIGINT)
    assert "stopped cleanly on SIGINT" in err and "Traceback" not in err
    again = _localnet(data, port, "--tempo", "40", "--kappa", "32767")
    assert _ready(again) == ["crucible localnet: tempo: 10 → 40 (from --tempo)"]
    assert LocalChain(f"http://127.0.0.1:{port}").hyperparameters(1).tempo == 40
    err = _stop(again, signal.SIGTERM)
    assert "stopped cleanly on SIGTERM" in err and "Traceback" not in err
    for flags, phrase in (
        (("--netuid", "2"), "holds netuid 1, not 2"),
        (("--no-faucet",), "was created with the faucet on"),
        (("--owner", keypair("someone").ss58_address), "subnet is owned by"),
        (("--kappa", "70000"), "kappa"),
    ):
        refused = _localnet(data, port, *flags)
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 2, (flags, out, err)
        assert phrase in err and "Traceback" not in err, (flags, err)
    last = _localnet(data, port)
    assert _ready(last) == []
    assert LocalChain(f"http://127.0.0.1:{port}").hyperparameters(1).tempo == 40
    _stop(last, signal.SIGTERM)
