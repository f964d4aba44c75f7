"""A whole subnet in one process: a real local chain, real tiny models in a real store, miners
serving over real HTTP on loopback, and a validator runtime."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, ServeEndpoint
from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.competitions import specs_dir
from crucible.corpus.dataset import token_stream
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.publish import publish
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.miner.train import TrainConfig, train
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import load_model_dir, save_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import load_competitions
from crucible.scoring.windows import load_eval_pool
from crucible.server import RunningServer, run_in_thread
from crucible.store.hashing import content_hash
from crucible.store.local import LocalStore
from crucible.store.resolve import model_store_resolver
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
SHAPE = ModelShape(layers=2, hidden=64, heads=2, ffn=128)


@dataclass
class World:
    tmp: Path
    node: LocalNode
    spec: object
    tokenizer: object
    store: LocalStore
    uids: dict[str, int] = field(default_factory=dict)
    hotkeys: dict[str, object] = field(default_factory=dict)
    servers: dict[str, RunningServer] = field(default_factory=dict)
    runtime: ValidatorRuntime | None = None

    def neuron(self, name: str, stake_tao: int = 0) -> int:
        coldkey, hotkey = keypair(f"world-{name}-c"), keypair(f"world-{name}-h")
        self.node.submit(DevFaucet(amount_rao=10_000 * TAO), coldkey).raise_for_failure()
        uid = (
            self.node.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey)
            .raise_for_failure()
            .data["uid"]
        )
        if stake_tao:
            self.node.submit(
                AddStake(netuid=1, hotkey=hotkey.ss58_address, amount_rao=stake_tao * TAO), coldkey
            ).raise_for_failure()
        self.uids[name], self.hotkeys[name] = uid, hotkey
        return uid

    def serve(self, name: str, model_dir: Path, claimed_commitment: str | None = None) -> None:
        hotkey = self.hotkeys[name]
        commitment = self.node.commitments(1)[hotkey.ss58_address]
        served = ServedModel(
            model=load_model_dir(model_dir, self.spec.model).model, tokenizer=self.tokenizer, competition=self.spec.key,
            commitment=claimed_commitment or commitment.data, commit_block=commitment.block,
            max_positions=self.spec.model.sequence_length,
        )  # fmt: skip
        app = build_miner_server(
            hotkey, self.node, 1, ModelSlot(served), metagraph_refresh_s=0.5
        ).app
        running = run_in_thread(app)
        self.servers[name] = running
        self.node.submit(
            ServeEndpoint(netuid=1, ip="127.0.0.1", port=running.port), hotkey
        ).raise_for_failure()

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.node.close()


def build_world(tmp: Path) -> World:
    owner = keypair("owner-coldkey")
    hp = dataclasses.replace(TEST_HYPERPARAMETERS, commitment_rate_limit=1, serving_rate_limit=0)
    node = LocalNode(
        tmp / "chain", NodeConfig(owner_coldkey=owner.ss58_address, hyperparameters=hp)
    )
    spec = load_competitions(specs_dir())["tiny"]
    tok = load_tokenizer(specs_dir() / spec.model.tokenizer)
    world = World(tmp, node, spec, tok, LocalStore(tmp / "store"))
    world.neuron("validator", stake_tao=100)
    for name in ("good", "weak", "copy", "liar", "big", "corrupt"):
        world.neuron(name)

    tokens = token_stream(FIXTURE, "train", tok)
    good = build_model(build_config(SHAPE, eos_token_id=tok.eos_token_id), seed=1)
    trained = train(
        good,
        tokens,
        TrainConfig(
            out_dir=tmp / "train",
            max_steps=40,
            batch_size=4,
            warmup_steps=5,
            checkpoint_every=0,
            progress=False,
        ),
    )
    weak = save_model_dir(
        build_model(build_config(SHAPE, eos_token_id=tok.eos_token_id), seed=2), tmp / "weak"
    )
    publish(trained.model_dir, spec, world.store, node, 1, world.hotkeys["good"])
    publish(weak, spec, world.store, node, 1, world.hotkeys["weak"])
    publish(weak, spec, world.store, node, 1, world.hotkeys["liar"])

    # a model over the parameter limit and a corrupt one are committed by hand (publish refuses them)
    big_shape = ModelShape(
        layers=6, hidden=256, heads=4, ffn=1024
    )  # 8.4M > 8M params, under the byte limit
    big = save_model_dir(
        build_model(build_config(big_shape, eos_token_id=tok.eos_token_id)), tmp / "big"
    )
    corrupt = tmp / "corrupt"
    shutil.copytree(weak, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    (corrupt / "config.json").write_text(
        json.dumps({**json.loads((weak / "config.json").read_text()), "note": "x"})
    )
    for name, path in (("big", big), ("corrupt", corrupt)):
        stored = world.store.put(path)
        c = ModelCommitment.for_model(
            spec.key, "local", stored.revision, content_hash(path), world.hotkeys[name].ss58_address
        )
        from crucible.chain.interface import SetCommitment

        node.submit(SetCommitment(netuid=1, data=str(c)), world.hotkeys[name]).raise_for_failure()
    node.step(3)
    publish(
        trained.model_dir, spec, world.store, node, 1, world.hotkeys["copy"]
    )  # a later copy of good
    node.step(27)  # past the eval delay and into a round (cadence 20), two epochs: permits granted

    world.serve("good", trained.model_dir)
    world.serve("weak", weak)
    world.serve("copy", trained.model_dir)
    # the liar committed the weak model but serves the good one, and claims another commitment
    world.serve(
        "liar",
        trained.model_dir,
        claimed_commitment=node.commitments(1)[world.hotkeys["good"].ss58_address].data,
    )
    world.runtime = ValidatorRuntime(
        node, world.hotkeys["validator"], ValidatorConfig(1, tmp / "validator"), {"tiny": spec}, {"tiny": tok},
        {"tiny": load_eval_pool(FIXTURE, tok)}, model_store_resolver(world.store),
    )  # fmt: skip
    world.paths = {"good": trained.model_dir, "weak": weak}
    return world
