"""Local chain node: signed set_weights accepted per second over HTTP, and metagraph latency.

A real ``crucible localnet`` process on loopback with 256 registered uids (64 staked validators
with permits, each holding a dense weight row). Extrinsics are signed before timing (client-side
signing is ~0.1 ms each and parallelises across clients); the figure is what the node accepts,
each one verified (sr25519), applied and committed to SQLite with fsync before it answers.
Baseline in the same run: the same extrinsics applied in-process (no HTTP).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, SetWeights  # noqa: E402
from crucible.chain.local.client import LocalChain  # noqa: E402
from crucible.chain.local.extrinsic import sign_call  # noqa: E402
from crucible.chain.local.node import LocalNode, NodeConfig  # noqa: E402
from tests.chain.nodeproc import NodeProcess  # noqa: E402
from tests.conftest import TEST_HYPERPARAMETERS, keypair  # noqa: E402

UIDS, VALIDATORS, PER_VALIDATOR, THREADS = 256, 64, 16, 8
TAO = 10**9


def populate(chain, step) -> list:
    coldkey = keypair("bench-coldkey")
    chain.submit(DevFaucet(amount_rao=10**6 * TAO), coldkey).raise_for_failure()
    hotkeys = [keypair(f"bench-hotkey-{i}") for i in range(UIDS)]
    for i, hk in enumerate(hotkeys):
        chain.submit(BurnedRegister(netuid=1, hotkey=hk.ss58_address), coldkey).raise_for_failure()
        if i < VALIDATORS:
            chain.submit(
                AddStake(netuid=1, hotkey=hk.ss58_address, amount_rao=(100 + i) * TAO), coldkey
            ).raise_for_failure()
    step(11)  # an epoch grants the permits
    return hotkeys[:VALIDATORS]


def signed_weights(validators, nonce_of, genesis) -> list[list]:
    uids, values = tuple(range(UIDS)), tuple((7 * u) % 65535 + 1 for u in range(UIDS))
    batches = []
    for hk in validators:
        base = nonce_of(hk.ss58_address)
        batches.append(
            [
                sign_call(
                    SetWeights(netuid=1, uids=uids, values=values),
                    hk,
                    nonce=base + k,
                    genesis=genesis,
                )
                for k in range(PER_VALIDATOR)
            ]
        )
    return batches


def run_threads(batches, submit) -> float:
    per_thread = [[ext for batch in batches[t::THREADS] for ext in batch] for t in range(THREADS)]
    failures = []

    def worker(exts):
        for ext in exts:
            result = submit(ext)
            if not result.ok:
                failures.append(result)

    threads = [threading.Thread(target=worker, args=(exts,)) for exts in per_thread]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} extrinsics refused, first: {failures[0]}")
    return elapsed


def main() -> None:
    hp = TEST_HYPERPARAMETERS.__class__(
        **{**TEST_HYPERPARAMETERS.__dict__, "weights_rate_limit": 0, "max_allowed_validators": 64}
    )
    total = VALIDATORS * PER_VALIDATOR
    with tempfile.TemporaryDirectory() as tmp:
        owner = keypair("owner-coldkey").ss58_address
        proc = NodeProcess(
            Path(tmp) / "http", owner, "--weights-rate-limit", "0", "--max-allowed-validators", "64"
        )
        chain = proc.start()
        try:
            validators = populate(chain, chain.step)
            batches = signed_weights(validators, chain.nonce, chain.genesis)
            clients = [LocalChain(proc.url) for _ in range(THREADS)]
            by_thread = threading.local()

            def submit_http(ext):
                if not hasattr(by_thread, "client"):
                    by_thread.client = clients.pop()
                return by_thread.client.submit_extrinsic(ext)

            http_s = run_threads(batches, submit_http)
            samples = []
            for _ in range(20):
                start = time.perf_counter()
                mg = chain.metagraph(1)
                samples.append(time.perf_counter() - start)
            assert mg.n == UIDS and len(mg.weights) == VALIDATORS
            mg_http_ms = statistics.median(samples) * 1000
        finally:
            proc.stop()

        node = LocalNode(Path(tmp) / "inproc", NodeConfig(owner_coldkey=owner, hyperparameters=hp))
        validators = populate(node, node.step)
        batches = signed_weights(validators, node.nonce, node.genesis)
        inproc_s = run_threads(batches, node.submit_extrinsic)
        samples = []
        for _ in range(20):
            start = time.perf_counter()
            node.metagraph(1)
            samples.append(time.perf_counter() - start)
        mg_inproc_ms = statistics.median(samples) * 1000
        node.close()

    figures = {
        "set_weights_http_per_s": round(total / http_s, 1),
        "set_weights_inprocess_per_s": round(total / inproc_s, 1),
        "metagraph_256_http_ms": round(mg_http_ms, 2),
        "metagraph_256_inprocess_ms": round(mg_inproc_ms, 2),
        "extrinsics": total,
        "weights_per_extrinsic": UIDS,
    }
    print(f"{'measure':36} {'value':>10}")
    print(f"{'signed set_weights/s over HTTP':36} {figures['set_weights_http_per_s']:>10}")
    print(f"{'signed set_weights/s in-process':36} {figures['set_weights_inprocess_per_s']:>10}")
    print(f"{'metagraph read, 256 uids, HTTP (ms)':36} {figures['metagraph_256_http_ms']:>10}")
    print(
        f"{'metagraph read, 256 uids, in-proc (ms)':36} {figures['metagraph_256_inprocess_ms']:>10}"
    )
    print("targets: >= 500 set_weights/s, metagraph <= 10 ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
