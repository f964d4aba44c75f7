"""``make demo``: the whole subnet on this machine, step by step, with what each step shows.

1. One Yuma epoch on a small worked example (the exact chain math, ``chain.yuma``).
2. A real local chain node process (``crucible localnet``) on a free loopback port.
3. Neurons register with signed extrinsics; a validator stakes and earns its permit.
4. The validator sets weights; an epoch runs; incentive, dividends and emission are shown.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bittensor_core import Keypair

from chain.interface import AddStake, BurnedRegister, DevFaucet, Metagraph, SetWeights
from chain.local.client import LocalChain
from chain.weights import weights_to_u16
from chain.yuma import EpochInput, EpochParams, run_epoch

TAO = 10**9
ROOT = Path(__file__).resolve().parents[1]


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def show_yuma_example() -> None:
    banner("1. Yuma consensus on a worked example (exact I32F32, as subtensor)")
    inp = EpochInput(
        variant="yuma3",
        block=1000,
        params=EpochParams(last_mechanism_step_block=640, rao_emission=TAO),
        stake=[TAO, 3 * TAO, 0, 0],
        last_update=[990, 990, 0, 0],
        block_at_registration=[1, 1, 1, 1],
        validator_permit=[True, True, False, False],
        weights=[[(2, 65535), (3, 65535)], [(2, 65535), (3, 21845)], [], []],
        bonds=[[], [], [], []],
    )
    out = run_epoch(inp)
    print("validators 0 (25% stake) and 1 (75%) weight miners 2 and 3 (0.5/0.5 and 0.75/0.25)")
    print(
        f"{'uid':>4} {'consensus':>10} {'incentive':>10} {'dividends':>10} {'vtrust':>8} {'emission rao':>14}"
    )
    for uid in range(4):
        print(
            f"{uid:>4} {out.consensus[uid]:>10} {out.incentive[uid]:>10} {out.dividends[uid]:>10} "
            f"{out.validator_trust[uid]:>8} {out.emission[uid]:>14}"
        )


def start_node(data_dir: Path, owner: Keypair) -> tuple[subprocess.Popen[bytes], LocalChain]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "neurons.crucible", "localnet", "--data-dir", str(data_dir),
        "--port", str(port), "--block-time", "0", "--owner", owner.ss58_address, "--tempo", "10",
        "--commit-reveal-enabled", "false", "--weights-rate-limit", "2", "--immunity-period", "50",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT)
    chain = LocalChain(f"http://127.0.0.1:{port}")
    for _ in range(300):
        try:
            chain.block()
            return proc, chain
        except Exception:
            if proc.poll() is not None:
                raise SystemExit("the local chain node failed to start") from None
            time.sleep(0.1)
    raise SystemExit("the local chain node did not answer within 30 s")


def show_metagraph(mg: Metagraph, names: dict[str, str]) -> None:
    print(f"block {mg.block}  hash {mg.block_hash[:18]}…")
    print(
        f"{'uid':>4} {'name':12} {'stake TAO':>10} {'permit':>7} {'incentive':>10} {'dividends':>10} {'emission TAO':>13}"
    )
    for n in mg.neurons:
        print(
            f"{n.uid:>4} {names.get(n.hotkey, '?'):12} {n.stake_rao / TAO:>10.3f} {str(n.validator_permit):>7} "
            f"{n.incentive:>10.4f} {n.dividends:>10.4f} {n.emission_rao / TAO:>13.4f}"
        )


def main() -> int:
    show_yuma_example()
    owner = Keypair.create_from_uri("//Alice")
    with tempfile.TemporaryDirectory(prefix="crucible-demo-") as tmp:
        banner("2. Start the local chain node (SQLite, signed extrinsics, exact Yuma)")
        proc, chain = start_node(Path(tmp) / "chain", owner)
        try:
            print(f"node at {chain.url}: head block {chain.block()}, genesis {chain.genesis[:18]}…")
            banner("3. Register a validator and three miners (burned registration)")
            names: dict[str, str] = {}
            keys: dict[str, tuple[Keypair, Keypair]] = {}
            for name in ("validator", "miner-good", "miner-weak", "miner-copy"):
                coldkey = Keypair.create_from_uri(f"//Crucible/{name}/coldkey")
                hotkey = Keypair.create_from_uri(f"//Crucible/{name}/hotkey")
                chain.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
                result = chain.submit(
                    BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey
                ).raise_for_failure()
                print(
                    f"{name:12} uid {result.data['uid']}  burned {result.data['burn_rao'] / TAO:.3f} TAO"
                )
                names[hotkey.ss58_address] = name
                keys[name] = (coldkey, hotkey)
            v_cold, v_hot = keys["validator"]
            chain.submit(
                AddStake(netuid=1, hotkey=v_hot.ss58_address, amount_rao=500 * TAO), v_cold
            ).raise_for_failure()
            chain.step(10)
            print(
                "after the first epoch (emission falls back to stake; the validator gets its permit):"
            )
            show_metagraph(chain.metagraph(1), names)

            banner("4. The validator sets weights; the next epoch pays by Yuma consensus")
            mg = chain.metagraph(1)
            scores = {
                mg.uid_of(keys["miner-good"][1].ss58_address): 0.7,
                mg.uid_of(keys["miner-weak"][1].ss58_address): 0.3,
            }
            uids, values = weights_to_u16(scores)
            chain.submit(SetWeights(netuid=1, uids=uids, values=values), v_hot).raise_for_failure()
            chain.step(10 - chain.block() % 10)
            show_metagraph(chain.metagraph(1), names)
        finally:
            chain.close()
            proc.terminate()
            proc.wait(timeout=10)
    banner("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
