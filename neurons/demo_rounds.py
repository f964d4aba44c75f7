"""``make demo``, steps 4–7: the validator's rounds, the fresh release, checking, querying."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from crucible.neurons.demo_parts import DemoWorld, cli

__all__ = ["client_step", "publish_release", "run_and_show", "transparency"]


def _next_round_block(world: DemoWorld) -> None:
    world.chain.step(20 - world.chain.block() % 20)


def run_and_show(world: DemoWorld, runtime, what: str) -> None:
    from crucible.validator.bundle import load_bundle
    from crucible.validator.loop import run_round

    _next_round_block(world)
    rt, state = runtime
    outcome = run_round(rt, state)
    bundle = load_bundle(outcome.bundle_path)
    r = bundle.rounds[0]
    source = r.data_sources[0]
    where = (
        f"release {source['release']['release_id'][:12]}… of block {source['release']['commit_block']}"
        if source.get("release")
        else "the held-out split"
    )
    print(
        f"round block {r.round_block}: {len(r.sample_ids)} samples from {where} ({what}), seed {r.seed}"
    )
    for uid in sorted(r.losses):
        mean = sum(r.losses[uid]) / len(r.losses[uid])
        status = (
            "competitive" if uid in r.competitive else f"not competitive: {r.not_competitive[uid]}"
        )
        print(f"  uid {uid} {world.name_of(uid):10} mean loss {mean:.4f} nats — {status}")
    for uid, why in sorted(r.serving_failed.items()):
        print(f"  uid {uid} {world.name_of(uid):10} serving probe failed: {why}")
    for uid, why in sorted(outcome.rejections.items()):
        print(f"  uid {uid} {world.name_of(uid):10} rejected: {why}")
    crown = max(outcome.weights, key=outcome.weights.get)
    print(
        f"crown: uid {crown} ({world.name_of(crown)}); weights {json.dumps({world.name_of(u): round(w, 4) for u, w in outcome.weights.items()})}"
    )
    print(f"→ {outcome.set_weights}; {outcome.published}")
    _memorizer_line(world, r)


def _memorizer_line(world: DemoWorld, r) -> None:
    good, memo = world.uid("good"), world.uid("memorizer")
    if good not in r.losses or memo not in r.losses:
        return
    mg, mm = (sum(r.losses[u]) / len(r.losses[u]) for u in (good, memo))
    better = sum(1 for a, b in zip(r.losses[memo], r.losses[good], strict=True) if a < b)
    print(
        f"the memorizer's mean loss is {mg - mm:+.4f} nats ({(mg - mm) / mg:+.1%}) below good's, lower on "
        f"{better}/{len(r.losses[good])} samples; committed later, it must win by ε (at least "
        f"{r.epsilon_floor:.1%}) on a significant share of samples (sign test)"
    )


def publish_release(world: DemoWorld, corpus: Path) -> None:
    folder = world.tmp / "fresh-release"
    folder.mkdir()
    shutil.copy(corpus / "corpus" / "fresh.jsonl", folder / "fresh.jsonl")
    cli(
        world,
        "crucible",
        "data",
        "release",
        str(folder),
        "--store-dir",
        str(world.store_dir),
        wallet="owner",
    )
    world.chain.step(1)
    cli(world, "crucible", "data", "releases", "--store-dir", str(world.store_dir))


def transparency(world: DemoWorld, runtime) -> None:
    from crucible.validator.explain import explain

    rt, state = runtime
    bundle_path = rt.config.bundles_dir / state.last_bundle
    cli(
        world, "crucible-validator", "verify", str(bundle_path), "--store-dir", str(world.store_dir)
    )
    from crucible.validator.bundle import load_bundle

    bundle, mg = load_bundle(bundle_path), world.chain.metagraph(1)
    for name in ("good", "memorizer", "liar"):
        print(explain(world.uid(name), bundle, state, mg).to_text())
    cli(world, "crucible", "audit", "--store-dir", str(world.store_dir))


def client_step(world: DemoWorld) -> None:
    import openai
    from bittensor_core import Keypair

    from crucible.client.gateway import ApiKeys, build_gateway
    from crucible.client.subnet import Subnet
    from crucible.protocol.messages import SamplingParams
    from crucible.server import run_in_thread

    subnet = Subnet(world.chain, 1, Keypair.create_from_uri("//Crucible/client"), top_k=3)
    answer = subnet.ask(
        "It is a truth universally acknowledged",
        max_tokens=24,
        sampling=SamplingParams(temperature=0.8, seed=7),
    )
    print(
        f"answer from uid {answer.uid} ({world.name_of(answer.uid)}) in {answer.latency_ms:.0f} ms: {answer.text!r}"
    )
    key = "demo-key-0123456789abcdef"
    # a gateway runs on a validator's hotkey: miners give permit holders their own allowance
    gateway_subnet = Subnet(world.chain, 1, world.keys["validator"][1], top_k=3)
    with run_in_thread(
        build_gateway(gateway_subnet, ApiKeys({key: "demo"}), usage_log=world.tmp / "usage.jsonl")
    ) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        print(f"openai.OpenAI(base_url={gateway.url}/v1):")
        completion = client.completions.create(
            model="crucible-subnet", prompt="Thou art", max_tokens=12, logprobs=1
        )
        choice = completion.choices[0]
        print(
            f"  completions.create → {choice.text!r} ({completion.usage.prompt_tokens} prompt + "
            f"{completion.usage.completion_tokens} completion tokens, first token logprob "
            f"{choice.logprobs.token_logprobs[0]:.3f})"
        )
        pieces = [
            c.choices[0].text
            for c in client.completions.create(
                model="crucible-subnet", prompt="Thou art", max_tokens=12, stream=True, seed=3
            )
            if c.choices
        ]
        print(f"  completions.create(stream=True) → {len(pieces)} chunks: {''.join(pieces)!r}")
        chat = client.chat.completions.create(
            model="crucible-subnet",
            messages=[{"role": "user", "content": "Speak of the sea."}],
            max_tokens=12,
        )
        print(f"  chat.completions.create → {chat.choices[0].message.content!r}")
