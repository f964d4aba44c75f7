"""A small subnet for the client and gateway tests: a real local chain, real miners serving one
real tiny model over real HTTP on loopback, and a validator whose weights give them incentive.

Miners (best incentive first): ``dead`` (an endpoint nobody listens on), ``liar`` (serves the
model but signs another hotkey's commitment), ``good`` and ``twin`` (honest, the same weights,
so an answer does not depend on which of them gave it). The gateway runs on the validator's
hotkey (a permit: the validator tier), as ``crucible-validator gateway`` does.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass, field
from pathlib import Path

from bittensor_core import Keypair

from crucible.chain.interface import (
    AddStake,
    BurnedRegister,
    DevFaucet,
    ServeEndpoint,
    SetCommitment,
    SetWeights,
)
from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.client.gateway import ApiKeys, GatewayModels, build_gateway
from crucible.client.subnet import Subnet
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.models.build import tiny_model
from crucible.server import RunningServer, run_in_thread
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair
from tests.waiting import wait_for

API_KEY = "sk-test-0123456789abcdef"
CONTEXT = 64
WEIGHTS = {"dead": 40_000, "liar": 30_000, "good": 20_000, "twin": 10_000}


def commitment_for(name: str) -> str:
    return f"tiny@1:local:{hashlib.sha256(name.encode()).hexdigest()}:{'0123456789abcdef' * 2}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class World:
    node: LocalNode
    validator: Keypair
    uids: dict[str, int] = field(default_factory=dict)
    hotkeys: dict[str, Keypair] = field(default_factory=dict)
    servers: dict[str, RunningServer] = field(default_factory=dict)
    gateway: RunningServer | None = None
    usage_log: Path | None = None

    def subnet(self, keypair: Keypair | None = None, **kwargs: object) -> Subnet:
        defaults = dict(metagraph_ttl_s=60, timeout_s=10)
        return Subnet(self.node, 1, keypair or self.validator, **{**defaults, **kwargs})

    def start_gateway(self, keypair: Keypair, usage_log: Path, **kwargs: object) -> RunningServer:
        app = build_gateway(
            self.subnet(keypair), ApiKeys({API_KEY: "tester"}), usage_log=usage_log,
            rate_per_s=1000, burst=1000, max_tokens=64,
            models=GatewayModels.for_competitions(["tiny@1"]), **kwargs,
        )  # fmt: skip
        return run_in_thread(app)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for server in self.servers.values():
            server.stop()
        self.node.close()


def _register(node: LocalNode, name: str, stake_tao: int = 0) -> tuple[int, Keypair]:
    coldkey, hotkey = keypair(f"client-world-{name}-c"), keypair(f"client-world-{name}-h")
    node.submit(DevFaucet(amount_rao=10_000 * TAO), coldkey).raise_for_failure()
    uid = node.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey)
    uid = uid.raise_for_failure().data["uid"]
    if stake_tao:
        stake = AddStake(netuid=1, hotkey=hotkey.ss58_address, amount_rao=stake_tao * TAO)
        node.submit(stake, coldkey).raise_for_failure()
    return uid, hotkey


def build_world(tmp: Path) -> World:
    owner = keypair("owner-coldkey")
    node = LocalNode(
        tmp / "chain",
        NodeConfig(owner_coldkey=owner.ss58_address, hyperparameters=TEST_HYPERPARAMETERS),
    )
    _, validator = _register(node, "validator", stake_tao=100)
    world = World(node, validator)
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    model = tiny_model(vocab_size=8192, sequence_length=CONTEXT, seed=5)
    caches = []
    for name in WEIGHTS:
        world.uids[name], world.hotkeys[name] = _register(node, name)
        hotkey = world.hotkeys[name]
        node.submit(SetCommitment(netuid=1, data=commitment_for(name)), hotkey).raise_for_failure()
        claimed = commitment_for("good") if name == "liar" else commitment_for(name)
        served = ServedModel(model, tok, "tiny@1", claimed, 1, CONTEXT)
        if name == "dead":
            port = _free_port()  # registered and announced, but nothing listens there
        else:
            server = build_miner_server(hotkey, node, 1, ModelSlot(served), metagraph_refresh_s=0.5)
            caches.append(server.metagraph)
            world.servers[name] = run_in_thread(server.app)
            port = world.servers[name].port
        node.submit(ServeEndpoint(netuid=1, ip="127.0.0.1", port=port), hotkey).raise_for_failure()
    node.step(TEST_HYPERPARAMETERS.tempo)  # an epoch: the validator's permit
    uids = tuple(world.uids[n] for n in WEIGHTS)
    node.submit(
        SetWeights(netuid=1, uids=uids, values=tuple(WEIGHTS.values())), validator
    ).raise_for_failure()
    node.step(TEST_HYPERPARAMETERS.tempo)  # another: the weights become incentive
    mg = node.metagraph(1)
    assert mg.by_hotkey(validator.ss58_address).validator_permit
    incentive = [mg.neurons[world.uids[n]].incentive for n in WEIGHTS]
    assert incentive == sorted(incentive, reverse=True) and incentive[-1] > 0, incentive
    _await_permit_seen(caches, validator.ss58_address)
    return world


def _await_permit_seen(caches: list, hotkey: str, timeout_s: float = 20.0) -> None:
    """Until every miner's metagraph cache (refreshed in the background) shows ``hotkey``'s
    permit: before that a miner gives the gateway a stranger's allowance, and a test's burst of
    requests was refused as rate-limited on a loaded machine."""
    seen = lambda: all((n := c.lookup(hotkey)) is not None and n.validator_permit for c in caches)  # noqa: E731
    wait_for("every miner to see the validator's permit", seen, timeout_s, poll_s=0.05)
