"""Miner serving, batched against one-at-a-time: requests/s, tokens/s and p50 latency at 1, 4, 16
and 64 concurrent callers.

The tiny competition's default model (4 layers × 192, 8k vocabulary) served by the real miner
app (auth, limits, admission, signing), twice in the same process: ``ServingLimits(batching=
False)`` (each admitted request runs alone, one forward per token — the server as it was) and
``batching=True`` (continuous batching: one forward per step for every running request). Each
measurement sends 2×concurrency requests (at least 8) from one registered hotkey through the
signed aiohttp client; per-hotkey limits are opened and the admission queue made deep enough
that nothing is refused, so the figures are the model and the pipeline. The two servers are
measured interleaved (A B B A) and the better of each pair is kept, so a burst of load from
elsewhere on a shared machine does not decide the comparison.

    python bench/serve.py            # prints a table, then the figures as one JSON line
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
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
from crucible.competitions import specs_dir  # noqa: E402
from crucible.corpus.tokenizer import load_tokenizer  # noqa: E402
from crucible.miner.serve import ModelSlot, ServedModel, ServingLimits, build_miner_server  # noqa: E402
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

CONCURRENCY = (1, 4, 16, 64)
NEW_TOKENS, SCORED_TOKENS = 16, 256
PROMPT = "It is a truth universally acknowledged"


async def measure(keypair, target, path, request, response_model, concurrency) -> dict:
    """2 × concurrency requests (at least 8), ``concurrency`` in flight at any time."""
    count = max(8, 2 * concurrency)
    async with SignedClient(keypair, timeout_s=600) as client:
        await client.call(target, path, request, response_model)  # warm-up
        latencies: list[float] = []
        sem = asyncio.Semaphore(concurrency)

        async def one() -> bool:
            async with sem:
                result = await client.call(target, path, request, response_model)
                latencies.append(result.latency_ms)
                return result.ok

        start = time.perf_counter()
        ok = sum(await asyncio.gather(*(one() for _ in range(count))))
        seconds = time.perf_counter() - start
    return {"ok": ok, "of": count, "seconds": seconds, "p50_ms": statistics.median(latencies)}


def build(server_kp, node, slot, batching: bool):
    open_limits = RoutePolicy(
        access=Access.SIGNED, rate_per_s=1e6, burst=10**6, max_concurrent=1000, timeout_s=600
    )
    limits = ServingLimits(batching=batching)
    deep = dataclasses.replace(limits.capacity_config, max_waiting=256)
    return build_miner_server(
        server_kp, node, 1, slot,
        policies={LOGPROBS_PATH: open_limits, GENERATE_PATH: open_limits},
        limits=dataclasses.replace(limits, capacity=deep),
    )  # fmt: skip


def best(runs: list[dict], tokens: int) -> dict:
    top = max(runs, key=lambda m: m["ok"] / m["seconds"])
    return {
        "req_s": round(top["ok"] / top["seconds"], 2),
        "tokens_s": round(top["ok"] * tokens / top["seconds"], 1),
        "p50_ms": round(min(m["p50_ms"] for m in runs), 1),
        "ok": f"{sum(m['ok'] for m in runs)}/{sum(m['of'] for m in runs)}",
    }


def measure_all(client_kp, targets: dict[str, Target]) -> dict[str, dict]:
    ids = np.random.default_rng(0).integers(0, 8192, size=SCORED_TOKENS).tolist()
    work = {
        "generate_16": (GENERATE_PATH, GenerateRequest(prompt=PROMPT, max_new_tokens=NEW_TOKENS),
                        GenerateResponse, NEW_TOKENS),
        "logprobs_256": (LOGPROBS_PATH, LogprobsRequest(token_ids=ids), LogprobsResponse,
                         SCORED_TOKENS),
    }  # fmt: skip
    out: dict[str, dict] = {mode: {} for mode in targets}
    for name, (path, request, model_cls, tokens) in work.items():
        for c in CONCURRENCY:
            runs: dict[str, list[dict]] = {mode: [] for mode in targets}
            for mode in [*targets, *reversed(targets)]:  # A B B A
                args = (client_kp, targets[mode], path, request, model_cls, c)
                runs[mode].append(asyncio.run(measure(*args)))
            for mode in targets:
                out[mode][f"{name}@{c}"] = best(runs[mode], tokens)
    return out


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
    servers = {
        "one_at_a_time": run_in_thread(build(server_kp, node, slot, batching=False).app),
        "batched": run_in_thread(build(server_kp, node, slot, batching=True).app),
    }
    try:
        targets = {m: Target(server_kp.ss58_address, s.url) for m, s in servers.items()}
        figures = measure_all(client_kp, targets)
    finally:
        for running in servers.values():
            running.stop()
        node.close()
    print(f"{'request':14} {'callers':>7} | {'one at a time':^28} | {'batched':^28} | speed-up")
    print(f"{'':14} {'':7} | {'req/s':>8} {'tokens/s':>10} {'p50 ms':>8} | "
          f"{'req/s':>8} {'tokens/s':>10} {'p50 ms':>8} | tokens/s")  # fmt: skip
    for name in ("generate_16", "logprobs_256"):
        for c in CONCURRENCY:
            a, b = figures["one_at_a_time"][f"{name}@{c}"], figures["batched"][f"{name}@{c}"]
            ratio = b["tokens_s"] / a["tokens_s"] if a["tokens_s"] else float("nan")
            figures.setdefault("speedup", {})[f"{name}@{c}"] = round(ratio, 2)
            print(
                f"{name:14} {c:>7} | {a['req_s']:>8} {a['tokens_s']:>10} {a['p50_ms']:>8} | "
                f"{b['req_s']:>8} {b['tokens_s']:>10} {b['p50_ms']:>8} | {ratio:>6.2f}×"
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
