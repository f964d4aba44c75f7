"""The pieces ``make demo`` puts together: a node process, wallets, miners, a validator, CLIs.

Everything here uses the project's own code paths — the node is ``crucible localnet`` in its own
process, neurons sign real extrinsics, models are published with ``miner.publish`` and served by
the miner's server, the validator is the real ``run_round`` publishing signed bundles on its
endpoint — and each command-line step runs the installed console command itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bittensor_core import Keypair

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, ServeEndpoint
from crucible.chain.local.client import LocalChain

__all__ = ["DemoWorld", "banner", "cli", "free_port", "register", "start_node"]

TAO = 10**9
ROOT = Path(__file__).resolve().parents[1]


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DemoWorld:
    tmp: Path
    chain: LocalChain
    node: subprocess.Popen[bytes]
    wallets: Path
    names: dict[str, str] = field(default_factory=dict)  # hotkey → name
    keys: dict[str, tuple[int, Keypair]] = field(default_factory=dict)
    servers: list = field(default_factory=list)

    @property
    def store_dir(self) -> Path:
        return self.tmp / "store"

    def uid(self, name: str) -> int:
        return self.keys[name][0]

    def name_of(self, uid: int) -> str:
        return next((n for n, (u, _) in self.keys.items() if u == uid), "?")

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.chain.close()
        self.node.terminate()
        self.node.wait(timeout=20)


def _wallet(path: Path, name: str):
    import bittensor as bt

    wallet = bt.Wallet(name=name, hotkey="default", path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
    wallet.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    return wallet


def start_node(tmp: Path) -> DemoWorld:
    """``crucible localnet`` in its own process, owned by the ``owner`` wallet, whose hotkey is
    uid 0 and the competition's data publisher."""
    wallets = tmp / "wallets"
    owner = _wallet(wallets, "owner")
    port = free_port()
    cmd = [
        sys.executable, "-m", "crucible.neurons.crucible", "localnet", "--data-dir", str(tmp / "chain"),
        "--port", str(port), "--block-time", "0", "--owner-wallet", "owner", "--wallet-path", str(wallets),
        "--tempo", "10", "--commit-reveal-enabled", "false", "--weights-rate-limit", "2",
        "--immunity-period", "50", "--commitment-rate-limit", "1",
    ]  # fmt: skip
    # the node's JSON-line log (a line per block and extrinsic) goes to a file, shown in step 9
    with open(tmp / "node.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=log)
    chain = LocalChain(f"http://127.0.0.1:{port}")
    for _ in range(300):
        try:
            chain.block()
            break
        except Exception:  # noqa: BLE001 — not up yet
            if proc.poll() is not None:
                raise SystemExit("the local chain node failed to start") from None
            time.sleep(0.1)
    world = DemoWorld(tmp, chain, proc, wallets)
    world.keys["owner"] = (0, owner.hotkey)
    world.names[owner.hotkey.ss58_address] = "owner"
    return world


def register(world: DemoWorld, name: str, stake_tao: int = 0) -> tuple[int, Keypair]:
    coldkey = Keypair.create_from_uri(f"//Crucible/{name}/coldkey")
    hotkey = Keypair.create_from_uri(f"//Crucible/{name}/hotkey")
    chain = world.chain
    chain.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
    result = chain.submit(
        BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey
    ).raise_for_failure()
    if stake_tao:
        chain.submit(AddStake(1, hotkey.ss58_address, stake_tao * TAO), coldkey).raise_for_failure()
    uid = result.data["uid"]
    print(
        f"{name:10} uid {uid}  hotkey {hotkey.ss58_address[:12]}…  burned {result.data['burn_rao'] / TAO:.3f} TAO"
    )
    world.keys[name], world.names[hotkey.ss58_address] = (uid, hotkey), name
    return uid, hotkey


def serve_endpoint(world: DemoWorld, name: str, port: int) -> None:
    world.chain.submit(
        ServeEndpoint(netuid=1, ip="127.0.0.1", port=port), world.keys[name][1]
    ).raise_for_failure()


def cli(world: DemoWorld, *argv: str, wallet: str | None = None, check: bool = True) -> str:
    """Run one of the console commands against the demo's node and print what it prints."""
    env_args = ["--chain-endpoint", world.chain.url]
    if wallet is not None:
        env_args += ["--wallet", wallet, "--wallet-path", str(world.wallets)]
    program, *rest = argv
    module = {
        "crucible": "crucible.neurons.crucible",
        "crucible-validator": "crucible.neurons.validator",
    }[program]
    shown = " ".join(argv) + (f" --wallet {wallet}" if wallet else "")
    print(f"$ {shown}", flush=True)
    out = subprocess.run(
        [sys.executable, "-m", module, *rest, *env_args], cwd=ROOT, capture_output=True, text=True
    )
    print((out.stdout + out.stderr).rstrip(), flush=True)
    if check and out.returncode not in (0, 1):
        raise SystemExit(f"`{shown}` failed with status {out.returncode}")
    return out.stdout
