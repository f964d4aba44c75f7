"""``make demo``, step 8: four miners train one shared model together (collab competition).

Three honest miners and a free rider take part in a few rounds of the collab competition with
the real code: ``miner.collab.CollabMiner`` trains, compresses with error feedback, commits and
stores; the demo's validator scores each round in ``run_round`` (the model competitions' rounds
alongside) and, as the round's aggregator, signs the next checkpoint's pointer. No disk is
shared, as between machines: every miner has its own store and serves its payloads on its
endpoint, the validator copies them from there and serves its checkpoints and pointers on its
own, which the miners copy. A single process trains on the very same windows with the same
inner optimizer, for comparison. Rounds are demo sized (10 inner steps instead of the spec's 30)
so the step takes about two minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from crucible.neurons.demo_parts import DemoWorld, register

__all__ = ["collab_step"]

HONEST = ("trainer1", "trainer2", "trainer3")
ROUNDS = 3
INNER_STEPS = 10


def _spec(world: DemoWorld):
    from crucible.competitions import specs_dir
    from crucible.protocol.collab import load_collab_specs

    spec = load_collab_specs(specs_dir())["collab"]
    aggregator = world.keys["validator"][1].ss58_address
    return spec.model_copy(update={
        "inner_steps": INNER_STEPS,
        "scoring": spec.scoring.model_copy(update={"aggregators": (aggregator,)}),
    })  # fmt: skip


def _own_store(world: DemoWorld, name: str):
    from crucible.store.local import LocalStore

    return LocalStore(world.tmp / "collab" / name / "store")


def _serve(world: DemoWorld, name: str) -> str:
    """``name``'s payload endpoint (its own store), put on chain; its URL."""
    from crucible.miner.payload_server import serve_payloads

    server = serve_payloads(
        world.chain, 1, world.keys[name][1], _own_store(world, name), "127.0.0.1", 0
    )
    world.servers.append(server)
    return server.url


def _free_ride(world: DemoWorld, spec, r: int, checkpoint: str, shapes) -> None:
    """The free rider's payload: random numbers shaped like a pseudo-gradient."""
    from crucible.collab.codec import PayloadMeta, compress, encode_payload
    from crucible.collab.payload_store import put_payload
    from crucible.miner.collab import commit_payload

    hotkey = world.keys["freerider"][1]
    g = torch.Generator().manual_seed(r)
    noise = {n: torch.randn(s, generator=g) * 1e-3 for n, s in shapes.items()}
    raw = encode_payload(
        compress(noise, spec.codec), PayloadMeta(spec.key, r, checkpoint, hotkey.ss58_address)
    )
    commit_payload(world.chain, 1, hotkey, spec.key, r, raw)[1].raise_for_failure()
    put_payload(_own_store(world, "freerider"), raw)


def _round_windows(spec, miners, r: int, block_hash: str, stream: int) -> np.ndarray:
    """The honest miners' windows of round ``r`` interleaved step by step (one big batch)."""
    from crucible.collab.engine import assigned_windows
    from crucible.miner.collab_train import interleaved_windows

    return interleaved_windows(
        spec, [assigned_windows(spec, m.hotkey.ss58_address, r, block_hash, stream) for m in miners]
    )


def collab_step(world: DemoWorld, runtime, corpus: Path) -> None:
    from crucible.collab.assignment import random_windows, windows_batch
    from crucible.collab.measure import mean_loss
    from crucible.collab.shared_model import build_shared_model, genesis_params
    from crucible.competitions import specs_dir
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.miner.collab import CollabMiner
    from crucible.miner.collab_train import one_process_curve
    from crucible.store.documents import DocumentStore
    from crucible.validator.bundle import load_bundle
    from crucible.validator.collab import CollabRuntime
    from crucible.validator.loop import run_round

    spec = _spec(world)
    tok = load_tokenizer(specs_dir() / spec.model.tokenizer)
    train, held_split = (token_stream(corpus, s, tok) for s in ("train", "eval"))
    length = spec.model.sequence_length
    held = windows_batch(
        held_split,
        random_windows("demo", 32, len(held_split), length, np.zeros(0, np.int64)),
        length,
    )
    for name in (*HONEST, "freerider"):
        register(world, name)
    rt, state = runtime
    rt.collab["collab"] = CollabRuntime(spec, train, held_split)
    miners = [CollabMiner(world.chain, world.keys[n][1], 1, spec, _own_store(world, n),
                          DocumentStore(world.tmp / "collab" / n / "store"), train, world.tmp / "collab" / n)
              for n in HONEST]  # fmt: skip
    urls = [_serve(world, n) for n in (*HONEST, "freerider")]
    first = spec.round_of(world.chain.block()) + 1
    world.chain.step(spec.window(first)[0] - world.chain.block())
    run_round(rt, state)  # checkpoint 0, and its signed pointer for the round now open
    print(f"{spec.key}: model of {sum(t.numel() for t in genesis_params(spec).values()):,} parameters; rounds of {spec.round_blocks} blocks, "
          f"{spec.inner_steps} inner AdamW steps of {spec.batch_size}×{length} tokens per miner; the validator aggregates")  # fmt: skip
    print(f"no disk shared: each miner has its own store and serves its payloads ({', '.join(urls)}); "
          "the validator copies them and serves its checkpoints and signed pointers")  # fmt: skip
    losses, windows, records = [], [], []
    for r in range(first, first + ROUNDS):
        checkpoint, _ = miners[0].current_checkpoint()
        params = miners[0].checkpoint_params(checkpoint)
        losses.append(mean_loss(build_shared_model(spec, params), held, 16))
        reports = [m.run_round(r, checkpoint) for m in miners]
        _free_ride(world, spec, r, checkpoint, {n: tuple(t.shape) for n, t in params.items()})
        windows.append(
            _round_windows(spec, miners, r, world.chain.block_hash(spec.window(r)[0]), len(train))
        )
        world.chain.step(spec.data_block(r) - world.chain.block())
        outcome = run_round(rt, state)
        records.append((load_bundle(outcome.bundle_path).collab[0], reports, outcome))
    last = miners[0].current_checkpoint()[0]
    losses.append(mean_loss(build_shared_model(spec, miners[0].checkpoint_params(last)), held, 16))
    single = one_process_curve(spec, train, np.concatenate(windows), miners=len(miners), held=held)
    _show(world, spec, losses, single, records)
    _show_copies(world, miners, records)


def _show_copies(world: DemoWorld, miners, records) -> None:
    """What crossed between the stores over HTTP (each copy checked against its hash)."""
    from crucible.protocol.collab import PayloadCommitment
    from crucible.store.local import LocalStore

    validator = LocalStore(world.store_dir)
    payloads = [
        PayloadCommitment.parse(c).content_hash
        for r, _, _ in records
        for c in r.commitments.values()
    ]
    copied = sum(validator.exists("local", d) for d in payloads)
    held = [sum(m.store.exists("local", r.base_checkpoint) for r, _, _ in records) for m in miners]
    print(f"over HTTP: the validator copied {copied} of {len(payloads)} payloads from the miners' endpoints; "
          f"the miners copied the checkpoints they trained from from the validator's ({'/'.join(map(str, held))} "
          f"of {len(records)} rounds; checkpoint 0 is built from the seed), each checked against its hash")  # fmt: skip


def _show(world: DemoWorld, spec, losses, single, records) -> None:
    print(f"\n{'after round':>12} {'held-out loss: collab':>22} {'one process, same tokens':>26}")
    print(f"{'start':>12} {losses[0]:>22.4f} {losses[0]:>26.4f}")
    for i, (r, _, _) in enumerate(records):
        print(f"{r.round_index:>12} {losses[i + 1]:>22.4f} {single[i]:>26.4f}")
    dense = records[0][1][0].dense_bytes
    sent = max(rep.payload_bytes for _, reps, _ in records for rep in reps)
    print(f"bytes sent per miner per round: {sent:,} (fp32 Δ: {dense:,}, {dense / sent:.0f}× less; "
          f"data-parallel all-reduce of every step's gradient: {spec.inner_steps * dense:,}, {spec.inner_steps * dense / sent:,.0f}× less)")  # fmt: skip
    r, _, outcome = records[-1]
    print(f"\nround {r.round_index} from the bundle (crucible-validator explain shows the same):")
    for uid in sorted(r.verdicts):
        m = r.measured.get(uid)
        gain = f"held-out {m.held_out_before:.4f} → {m.held_out_after:.4f}" if m else "not measured"
        print(f"  uid {uid} {world.name_of(uid):10} {r.verdicts[uid]:32} score {r.scores.get(uid, 0):.5f}  {gain}  "
              f"collab weight {r.weights.get(uid, 0):.3f}")  # fmt: skip
    print(
        f"checkpoint {r.base_checkpoint[:12]}… → {r.next_checkpoint[:12]}… from uids {r.selected} "
        f"(clipped to the median norm {r.clip_median:.3f}); pointer {r.pointer_id[:12]}… signed by the validator"
    )
    shown = {world.name_of(u): round(w, 4) for u, w in sorted(outcome.weights.items())}
    print(
        f"weights set (model competitions {1 - spec.reward_share:.0%}, collab {spec.reward_share:.0%}): {json.dumps(shown)}"
    )
