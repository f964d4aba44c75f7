"""Miner serving: signed generate and logprobs requests per second over loopback HTTP.

The tiny competition's default model served by the real miner app (auth, limits, signing) in
this process's server thread, queried by the signed aiohttp client with 8 concurrent callers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bittensor_core import Keypair  # noqa: E402

from crucible.chain.interface import BurnedRegister, DevFaucet  # noqa: E402
from crucible.chain.local.node import LocalNode, NodeConfig  # noqa: E402
from crucible.client.transport import SignedClient, Target  # noqa: E402
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer  # noqa: E402
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server  # noqa: E402
from crucible.models.build import ModelShape, build_config, build_model  # noqa: E402
from crucible.protocol.messages import (  # noqa: E402
    GENERATE_PATH,
    LOGPROBS_PATH,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
)
from crucible.server import Access, RoutePolicy, run_in_thread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY, REQUESTS = 8, 48


async def measure(keypair, target, path, request, response_model) -> tuple[float, int]:
    async with SignedClient(keypair, timeout_s=120) as client:
        await client.call(target, path, request, response_model)
        start = time.perf_counter()
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one():
            async with sem:
                return await client.call(target, path, request, response_model)

        results = await asyncio.gather(*(one() for _ in range(REQUESTS)))
        return time.perf_counter() - start, sum(r.ok for r in results)


def main() -> None:
    server_kp, client_kp, coldkey = (
        Keypair.create_from_uri(f"//BenchServe/{n}") for n in ("s", "c", "cold")
    )
    node = LocalNode(
        tempfile.mkdtemp(prefix="bench-serve-"), NodeConfig(owner_coldkey=coldkey.ss58_address)
    )
    node.submit(DevFaucet(amount_rao=10**13), coldkey).raise_for_failure()
    for kp in (server_kp, client_kp):
        node.submit(BurnedRegister(netuid=1, hotkey=kp.ss58_address), coldkey).raise_for_failure()
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    model = build_model(build_config(ModelShape(), eos_token_id=None))
    slot = ModelSlot(ServedModel(model, tok, "tiny@1", None, None, 256))
    # measure the model and the pipeline, not the per-caller rate limit
    open_limits = RoutePolicy(
        access=Access.SIGNED, rate_per_s=1e6, burst=10**6, max_concurrent=1000, timeout_s=300
    )
    server = build_miner_server(
        server_kp, node, 1, slot, policies={LOGPROBS_PATH: open_limits, GENERATE_PATH: open_limits}
    )
    figures: dict[str, float] = {}
    with run_in_thread(server.app) as running:
        target = Target(server_kp.ss58_address, running.url)
        ids = np.random.default_rng(0).integers(0, 8192, size=256).tolist()
        for name, path, request, model_cls, tokens in (
            ("logprobs_256", LOGPROBS_PATH, LogprobsRequest(token_ids=ids), LogprobsResponse, 256),
            (
                "generate_16",
                GENERATE_PATH,
                GenerateRequest(prompt="It is a truth universally acknowledged", max_new_tokens=16),
                GenerateResponse,
                16,
            ),
        ):
            seconds, ok = asyncio.run(measure(client_kp, target, path, request, model_cls))
            figures[f"{name}_req_s"] = round(ok / seconds, 2)
            figures[f"{name}_tokens_s"] = round(ok * tokens / seconds, 1)
            figures[f"{name}_ok"] = ok
    node.close()
    print(
        f"{'request':14} {'req/s':>8} {'tokens/s':>10}   ({REQUESTS} requests, {CONCURRENCY} concurrent, signed, loopback)"
    )
    for name in ("logprobs_256", "generate_16"):
        print(f"{name:14} {figures[name + '_req_s']:>8} {figures[name + '_tokens_s']:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
