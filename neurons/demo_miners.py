"""``make demo``, step 3: seven miners, each showing one thing the validator must get right.

good — trained on the training split; weak — untrained; copycat — re-publishes good's files
later; oversized — over the parameter limit (``publish`` refuses it; committed by hand);
hostile — a config asking for ``"return_dict": false`` (refused the same way); liar — commits
the weak model but serves the good one; memorizer — the same shape and budget as good, trained
on every public work with the held-out split oversampled, committed after good.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crucible.chain.interface import SetCommitment
from crucible.neurons.demo_parts import DemoWorld, serve_endpoint

__all__ = ["prepare_miners"]


def _train(world: DemoWorld, name: str, tokens, shape, tok):
    from crucible.miner.train import TrainConfig, train
    from crucible.models.build import build_config, build_model

    model = build_model(build_config(shape, eos_token_id=tok.eos_token_id), seed=1)
    config = TrainConfig(out_dir=world.tmp / f"train-{name}", max_steps=120, batch_size=8, lr=4e-3, warmup_steps=10, checkpoint_every=60, seed=5, progress=True)  # fmt: skip
    print(
        f"{name} trains {sum(p.numel() for p in model.parameters()):,} parameters on {len(tokens):,} tokens (crucible-miner train):"
    )
    return train(model, tokens, config).model_dir


def _commit_by_hand(world: DemoWorld, name: str, path: Path, spec) -> None:
    """What a miner who skips ``publish``'s checks can still do: store and commit anything."""
    from crucible.protocol.commitment import ModelCommitment
    from crucible.store.local import LocalStore

    stored = LocalStore(world.store_dir).put(path)
    hotkey = world.keys[name][1]
    raw = ModelCommitment.for_model(
        spec.key, "local", stored.revision, stored.content_hash, hotkey.ss58_address
    )
    world.chain.submit(SetCommitment(netuid=1, data=str(raw)), hotkey).raise_for_failure()
    print(f"{name:10} committed by hand: {raw}")


def _hostile_models(world: DemoWorld, spec, shape, tok) -> None:
    from crucible.miner.publish import publish
    from crucible.models.build import ModelShape, build_config, build_model
    from crucible.models.io import save_model_dir
    from crucible.protocol.errors import CrucibleError
    from crucible.store.local import LocalStore

    big = save_model_dir(
        build_model(
            build_config(
                ModelShape(layers=6, hidden=256, heads=4, ffn=1024), eos_token_id=tok.eos_token_id
            )
        ),
        world.tmp / "big",
    )
    hostile = save_model_dir(
        build_model(build_config(shape, eos_token_id=tok.eos_token_id), seed=9),
        world.tmp / "hostile",
    )
    config = json.loads((hostile / "config.json").read_text())
    (hostile / "config.json").write_text(json.dumps({**config, "return_dict": False}))
    for name, path in (("oversized", big), ("hostile", hostile)):
        try:
            publish(path, spec, LocalStore(world.store_dir), world.chain, 1, world.keys[name][1])
        except CrucibleError as exc:
            print(f"{name:10} publish refused: {exc}")
        _commit_by_hand(world, name, path, spec)


def _serve(world: DemoWorld, name: str, model_dir: Path, spec, tok) -> None:
    from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
    from crucible.models.io import load_model_dir
    from crucible.server import run_in_thread

    hotkey = world.keys[name][1]
    c = world.chain.commitments(1)[hotkey.ss58_address]
    served = ServedModel(
        load_model_dir(model_dir, spec.model).model,
        tok,
        spec.key,
        c.data,
        c.block,
        spec.model.sequence_length,
    )
    server = run_in_thread(
        build_miner_server(hotkey, world.chain, 1, ModelSlot(served), metagraph_refresh_s=1).app
    )
    world.servers.append(server)
    serve_endpoint(world, name, server.port)


def prepare_miners(world: DemoWorld, corpus: Path, shape_args: dict):
    """Train, publish, serve; returns the validator's runtime (it publishes to the same store)."""
    from crucible.competitions import specs_dir
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.miner.publish import publish
    from crucible.models.build import ModelShape, build_config, build_model
    from crucible.models.io import save_model_dir
    from crucible.protocol.competition import load_competitions
    from crucible.store.local import LocalStore

    spec = load_competitions(specs_dir())["tiny"]
    tok = load_tokenizer(specs_dir() / spec.model.tokenizer)
    shape = ModelShape(**shape_args)
    train_tokens, eval_tokens = (
        token_stream(corpus, "train", tok),
        token_stream(corpus, "eval", tok),
    )
    good = _train(world, "good", train_tokens, shape, tok)
    memorizer = _train(
        world, "memorizer", np.concatenate([train_tokens, *[eval_tokens] * 4]), shape, tok
    )
    weak = save_model_dir(
        build_model(build_config(shape, eos_token_id=tok.eos_token_id), seed=2), world.tmp / "weak"
    )
    store = LocalStore(world.store_dir)
    for name, path in (("good", good), ("weak", weak), ("liar", weak)):
        print(
            f"{name:10} committed at block {publish(path, spec, store, world.chain, 1, world.keys[name][1]).block}"
        )
    _hostile_models(world, spec, shape, tok)
    world.chain.step(3)
    for name, path in (("copycat", good), ("memorizer", memorizer)):
        result = publish(path, spec, store, world.chain, 1, world.keys[name][1])
        print(f"{name:10} committed 3 blocks later, at block {result.block}: {result.commitment}")
    for name, path in (
        ("good", good),
        ("weak", weak),
        ("copycat", good),
        ("memorizer", memorizer),
        ("liar", good),
    ):
        _serve(world, name, path, spec, tok)
    print(
        "good, weak, copycat, memorizer and liar serve over signed HTTP (crucible-miner serve); the liar serves good's model"
    )
    return _validator_runtime(world, spec, tok, corpus)


def _validator_runtime(world: DemoWorld, spec, tok, corpus: Path):
    from crucible.scoring.releases import ReleaseLoader
    from crucible.scoring.windows import load_eval_pool
    from crucible.store.documents import DocumentStore
    from crucible.store.local import LocalStore
    from crucible.store.resolve import model_store_resolver
    from crucible.validator.runtime import ValidatorConfig, ValidatorRuntime
    from crucible.validator.service import serve_bundles
    from crucible.validator.state import ValidatorState

    documents = DocumentStore(world.store_dir)
    runtime = ValidatorRuntime(
        world.chain, world.keys["validator"][1], ValidatorConfig(1, world.tmp / "validator"), {"tiny": spec},
        {"tiny": tok}, {"tiny": load_eval_pool(corpus, tok)}, model_store_resolver(LocalStore(world.store_dir)),
        documents=documents, releases={"tiny": ReleaseLoader(documents, tok, spec)},
    )  # fmt: skip
    state = ValidatorState()
    world.servers.append(serve_bundles(runtime, state, "127.0.0.1", 0, "127.0.0.1"))
    return runtime, state
