"""Wire-protocol benchmark: signed requests to a NeuronServer in its own process, on loopback.

    python bench/protocol.py [--seq 500] [--conc 200] [--rounds 3]

The server process runs the echo app (``server.testing``) on the real toolkit: btauth/1
verification, registration check against a metagraph read from an in-process ``LocalNode`` (the
embedded chain, same code as ``crucible localnet``) on which both hotkeys are registered, limits,
strict schemas and response signing. The client is ``client.transport.SignedClient`` (one pooled
aiohttp session), which verifies every response signature.

Measures: sequential mean/p50/p95 latency; wall time and throughput of ``--conc`` concurrent
requests with a trivial handler and with a 50 ms handler. Prints a table, then one JSON line.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from bittensor_core import Keypair  # noqa: E402

from crucible.client.transport import SignedClient, Target  # noqa: E402
from crucible.server.testing import ECHO_PATH, EchoRequest, EchoResponse  # noqa: E402

NETUID = 1


def registered_chain(netuid: int, keypairs: list[Keypair]):
    """A real in-process local chain with every key registered (the node the localnet serves)."""
    import tempfile

    from crucible.chain.interface import BurnedRegister, DevFaucet
    from crucible.chain.local.node import LocalNode, NodeConfig

    coldkey = Keypair.create_from_uri("//BenchColdkey")
    node = LocalNode(
        tempfile.mkdtemp(prefix="bench-protocol-"),
        NodeConfig(netuid=netuid, owner_coldkey=coldkey.ss58_address),
    )
    node.submit(DevFaucet(amount_rao=10**13), coldkey).raise_for_failure()
    for kp in keypairs:
        node.submit(
            BurnedRegister(netuid=netuid, hotkey=kp.ss58_address), coldkey
        ).raise_for_failure()
    return node, "in-process LocalNode"


def serve_main() -> None:
    """Server process: read keys from stdin, register them on a local chain, serve until EOF."""
    from crucible.server.policy import RoutePolicy
    from crucible.server.runner import run_in_thread
    from crucible.server.testing import build_echo_server

    spec = json.loads(sys.stdin.readline())
    loop, http = spec["loop"], spec["http"]
    server_kp = Keypair.create_from_mnemonic(spec["server"])
    client_kp = Keypair.create_from_mnemonic(spec["client"])
    chain, chain_kind = registered_chain(NETUID, [server_kp, client_kp])
    # Limits far above the load we generate: we measure the pipeline, not the 429 path.
    policy = RoutePolicy(rate_per_s=1e6, burst=1_000_000, max_concurrent=10_000, timeout_s=30)
    app = build_echo_server(server_kp, chain, NETUID, policy=policy).app
    running = run_in_thread(app, loop=loop, http=http)
    # uvicorn's "auto" means uvloop / httptools when importable: report what actually ran.
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    impl = f"loop={loop}, http={http}"
    print(json.dumps({"port": running.port, "chain": chain_kind, "impl": impl}), flush=True)
    sys.stdin.readline()  # parent closes stdin to stop us
    running.stop()
    chain.close()


async def _one(client: SignedClient, target: Target, request: EchoRequest) -> float:
    result = await client.call(target, ECHO_PATH, request, EchoResponse)
    if not result.ok or result.value is None or result.value.text != request.text:
        raise SystemExit(f"benchmark request failed: {result.code} {result.error}")
    return result.latency_ms


async def _concurrent(client: SignedClient, target: Target, n: int, sleep_ms: int) -> float:
    request = EchoRequest(text="x" * 64, sleep_ms=sleep_ms)
    start = time.perf_counter()
    await asyncio.gather(*(_one(client, target, request) for _ in range(n)))
    return time.perf_counter() - start


async def measure(target: Target, client_kp: Keypair, seq: int, conc: int, rounds: int) -> dict:
    async with SignedClient(client_kp, timeout_s=30, max_connections=conc) as client:
        request = EchoRequest(text="x" * 64)
        for _ in range(50):  # warm up connections, caches, the server's code paths
            await _one(client, target, request)
        await _concurrent(client, target, conc, 0)
        latencies = [await _one(client, target, request) for _ in range(seq)]
        walls = [await _concurrent(client, target, conc, 0) for _ in range(rounds)]
        sleep_walls = [await _concurrent(client, target, conc, 50) for _ in range(rounds)]
    latencies.sort()
    wall = statistics.median(walls)
    sleep_wall = statistics.median(sleep_walls)
    return {
        "seq_n": seq,
        "seq_mean_ms": round(statistics.fmean(latencies), 3),
        "seq_p50_ms": round(latencies[len(latencies) // 2], 3),
        "seq_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 3),
        "conc": conc,
        "rounds": rounds,
        "conc200_wall_s": round(wall, 4),
        "conc200_req_s": round(conc / wall, 1),
        "conc200_sleep50_wall_s": round(sleep_wall, 4),
        "conc200_sleep50_req_s": round(conc / sleep_wall, 1),
        "conc200_walls_s": [round(w, 4) for w in walls],
        "conc200_sleep50_walls_s": [round(w, 4) for w in sleep_walls],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=500, help="sequential requests")
    parser.add_argument("--conc", type=int, default=200, help="concurrent requests per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per measurement (median)")
    parser.add_argument("--loop", default="auto", help="uvicorn loop: auto|asyncio|uvloop")
    parser.add_argument("--http", default="auto", help="uvicorn http: auto|h11|httptools")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main()
        return

    mnemonics = {"server": Keypair.generate_mnemonic(), "client": Keypair.generate_mnemonic()}
    server_kp = Keypair.create_from_mnemonic(mnemonics["server"])
    client_kp = Keypair.create_from_mnemonic(mnemonics["client"])
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        spec = {**mnemonics, "loop": args.loop, "http": args.http}
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        ready = json.loads(proc.stdout.readline() or "{}")
        if "port" not in ready:
            raise SystemExit("server process failed to start (see its stderr above)")
        target = Target(hotkey=server_kp.ss58_address, url=f"http://127.0.0.1:{ready['port']}")
        out = asyncio.run(measure(target, client_kp, args.seq, args.conc, args.rounds))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = {
        "bench": "protocol",
        "server_process": "subprocess, uvicorn in one thread",
        "server_impl": ready["impl"],
        "registration_chain": ready["chain"],
        "cpus": os.cpu_count(),
        **out,
        "target_seq_mean_ms": 3.0,
        "target_conc200_req_s": 500.0,
    }
    rows = [
        (
            "sequential mean / p50 / p95 (ms)",
            f"{out['seq_mean_ms']:.2f} / {out['seq_p50_ms']:.2f} / {out['seq_p95_ms']:.2f}",
        ),
        (
            f"{args.conc} concurrent, trivial handler",
            f"{out['conc200_wall_s']:.3f} s  {out['conc200_req_s']:.0f} req/s",
        ),
        (
            f"{args.conc} concurrent, 50 ms handler",
            f"{out['conc200_sleep50_wall_s']:.3f} s  {out['conc200_sleep50_req_s']:.0f} req/s",
        ),
        ("targets", "seq mean <= 3 ms, >= 500 req/s at 200 concurrent"),
        ("baseline (sdk.md §2.5)", "bittensor 10.5 Axon/Dendrite: 33-43 ms, 26-31 req/s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"protocol bench — registration via {out['registration_chain']}; "
        f"server {out['server_impl']}; {out['cpus']} CPUs"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
