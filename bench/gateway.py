"""Gateway overhead: latency added over a direct signed miner call (p50/p99), and requests/s.

A miner serving a trivial model (2 layers × 32, the 8k vocabulary) on loopback; the same
generate request (1 new token) sent (a) directly with the signed client and (b) through the
OpenAI-compatible gateway (API key, rate limit, ranking by incentive and latency, the miner's
signed stream verified frame by frame, commitment check, usage log). Both sequential, same
process, interleaved; then 16 concurrent callers through the gateway, whole and streamed.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from bittensor_core import Keypair  # noqa: E402

from crucible.chain.interface import BurnedRegister, DevFaucet, ServeEndpoint, SetCommitment  # noqa: E402
from crucible.chain.local.node import LocalNode, NodeConfig  # noqa: E402
from crucible.client.gateway import ApiKeys, build_gateway  # noqa: E402
from crucible.client.subnet import Subnet  # noqa: E402
from crucible.client.transport import SignedClient, Target  # noqa: E402
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer  # noqa: E402
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server  # noqa: E402
from crucible.models.build import tiny_model  # noqa: E402
from crucible.protocol.messages import (  # noqa: E402
    GENERATE_PATH,
    GENERATE_STREAM_PATH,
    GenerateRequest,
    GenerateResponse,
)
from crucible.server import Access, RoutePolicy, run_in_thread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 200
KEY = "bench-key-0123456789abcdef"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(miner_target: Target, client_kp: Keypair, gateway_url: str) -> dict[str, list[float]]:
    direct, through = [], []
    request = GenerateRequest(token_ids=[1, 2, 3], max_new_tokens=1)
    body = {"model": "crucible-subnet", "prompt": "Thou", "max_tokens": 1}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with SignedClient(client_kp) as client, aiohttp.ClientSession() as http:
        for i in range(N + 10):
            start = time.perf_counter()
            result = await client.call(miner_target, GENERATE_PATH, request, GenerateResponse)
            middle = time.perf_counter()
            async with http.post(
                f"{gateway_url}/v1/completions", json=body, headers=headers
            ) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            end = time.perf_counter()
            assert result.ok
            if i >= 10:  # warm-up excluded
                direct.append((middle - start) * 1000)
                through.append((end - middle) * 1000)
        rates = []
        for payload in (body, {**body, "stream": True}):
            start = time.perf_counter()
            sem = asyncio.Semaphore(16)

            async def one(payload=payload, sem=sem):
                async with (
                    sem,
                    http.post(
                        f"{gateway_url}/v1/completions", json=payload, headers=headers
                    ) as resp,
                ):
                    await resp.read()
                    assert resp.status == 200, resp.status

            await asyncio.gather(*(one() for _ in range(N)))
            rates.append(N / (time.perf_counter() - start))
    return {"direct": direct, "gateway": through, "rate": rates}


def main() -> None:
    miner_kp, client_kp, coldkey = (
        Keypair.create_from_uri(f"//BenchGateway/{n}") for n in ("miner", "client", "cold")
    )
    node = LocalNode(
        tempfile.mkdtemp(prefix="bench-gateway-"), NodeConfig(owner_coldkey=coldkey.ss58_address)
    )
    node.submit(DevFaucet(amount_rao=10**13), coldkey).raise_for_failure()
    node.submit(BurnedRegister(netuid=1, hotkey=miner_kp.ss58_address), coldkey).raise_for_failure()
    node.submit(
        SetCommitment(netuid=1, data="tiny@1:local:" + "a" * 64 + ":" + "b" * 32), miner_kp
    ).raise_for_failure()
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    slot = ModelSlot(
        ServedModel(
            tiny_model(vocab_size=8192),
            tok,
            "tiny@1",
            node.commitments(1)[miner_kp.ss58_address].data,
            1,
            64,
        )
    )
    open_limits = RoutePolicy(
        access=Access.SIGNED, rate_per_s=1e6, burst=10**6, max_concurrent=1000
    )
    miner = build_miner_server(
        miner_kp,
        node,
        1,
        slot,
        policies={
            GENERATE_PATH: open_limits,
            GENERATE_STREAM_PATH: open_limits,
            "/v1/info": open_limits,
        },
    )
    with run_in_thread(miner.app) as running:
        node.submit(
            ServeEndpoint(netuid=1, ip="127.0.0.1", port=running.port), miner_kp
        ).raise_for_failure()
        subnet = Subnet(node, 1, client_kp, top_k=1, metagraph_ttl_s=12.0)
        usage = Path(tempfile.mkdtemp()) / "usage.jsonl"
        gateway = build_gateway(
            subnet, ApiKeys({KEY: "bench"}), usage_log=usage, rate_per_s=1e6, burst=10**6
        )
        with run_in_thread(gateway) as gw:
            samples = asyncio.run(
                run(Target(miner_kp.ss58_address, running.url), client_kp, gw.url)
            )
    node.close()
    direct, through = samples["direct"], samples["gateway"]
    added = [t - d for t, d in zip(through, direct, strict=True)]
    figures = {
        "direct_p50_ms": round(statistics.median(direct), 2),
        "direct_p99_ms": round(pct(direct, 0.99), 2),
        "gateway_p50_ms": round(statistics.median(through), 2),
        "gateway_p99_ms": round(pct(through, 0.99), 2),
        "added_p50_ms": round(statistics.median(through) - statistics.median(direct), 2),
        "added_p99_ms": round(pct(through, 0.99) - pct(direct, 0.99), 2),
        "paired_added_p50_ms": round(statistics.median(added), 2),
        "gateway_req_s_16_concurrent": round(samples["rate"][0], 1),
        "gateway_streamed_req_s_16_concurrent": round(samples["rate"][1], 1),
    }
    print(f"{'path':10} {'p50 ms':>8} {'p99 ms':>8}   ({N} sequential requests, 1 new token)")
    print(f"{'direct':10} {figures['direct_p50_ms']:>8} {figures['direct_p99_ms']:>8}")
    print(f"{'gateway':10} {figures['gateway_p50_ms']:>8} {figures['gateway_p99_ms']:>8}")
    print(
        f"added by the gateway: p50 {figures['added_p50_ms']} ms, p99 {figures['added_p99_ms']} ms (target ≤ 5 ms at p50)"
    )
    print(
        f"through the gateway at 16 concurrent: {figures['gateway_req_s_16_concurrent']} req/s, "
        f"streamed {figures['gateway_streamed_req_s_16_concurrent']} req/s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
