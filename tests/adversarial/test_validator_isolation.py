"""What one uid sends can only lower that uid's own score — the validator's round, end to end.

A real local chain; miners serving real tiny models over real signed HTTP on loopback, some of
them hostile (a logprobs answer one token short, one too long, a model other than the committed
one, a committed config with ``"return_dict": false``), one whose store is down at the first
round; the validator's real ``run_round``. Every round completes, the honest miner keeps its
weight, each attacker alone is rejected or loses its serving share with its reason, and what is
the validator's problem (a store outage, its own memory) holds the uid instead of blaming it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest

from crucible.chain.interface import (
    AddStake,
    BurnedRegister,
    DevFaucet,
    ServeEndpoint,
    SetCommitment,
)
from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.publish import publish
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import load_model_dir, save_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import ResourceExhausted
from crucible.protocol.messages import (
    INFO_PATH,
    LOGPROBS_PATH,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
)
from crucible.scoring.losses import token_logprobs
from crucible.scoring.windows import load_eval_pool
from crucible.server import Access, NeuronServer, RoutePolicy, run_in_thread
from crucible.store.hashing import content_hash
from crucible.store.hf import HuggingFaceStore
from crucible.store.local import LocalStore
from crucible.validator import evaluation
from crucible.validator.bundle import load_bundle
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
from crucible.validator.state import ValidatorState
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair
from tests.store.fakehub import SHA, FakeHub

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SPEC = load_competitions(specs_dir())["tiny"]
SHAPE = ModelShape(layers=1, hidden=32, heads=2, ffn=64)


def hostile_logprobs_server(hotkey, node: LocalNode, model, commitment: str, how: str):
    """A miner's server whose /v1/logprobs answers are schema-valid but wrong in shape."""
    server = NeuronServer(hotkey, node, 1, metagraph_refresh_s=0.5)

    async def info(_: None, __) -> ModelInfoResponse:
        return ModelInfoResponse(
            hotkey=hotkey.ss58_address, competition_id=SPEC.key, commitment=commitment
        )

    async def logprobs(request: LogprobsRequest, _) -> LogprobsResponse:
        ids = list(request.token_ids)
        values = token_logprobs(model, ids)
        if how == "short":  # one token short: ids and values both trimmed, still schema-valid
            return LogprobsResponse(token_ids=ids[:-1], logprobs_nats=values[:-1])
        return LogprobsResponse(token_ids=[*ids, 1], logprobs_nats=[*values, -1.0])  # one long

    server.route(INFO_PATH, None, ModelInfoResponse, info, policy=RoutePolicy(access=Access.SIGNED))
    server.route(
        LOGPROBS_PATH,
        LogprobsRequest,
        LogprobsResponse,
        logprobs,
        policy=RoutePolicy(access=Access.SIGNED),
    )
    return run_in_thread(server.app)


class HubLink:
    """The validator's resolver; the outage miner's model is on a (fake) Hub whose address is
    switched from a dead port (the outage) to a live server (it is back)."""

    def __init__(self, store: LocalStore) -> None:
        self.store, self.url = store, "http://127.0.0.1:9"  # nothing listens on port 9

    def __call__(self, ref: str):
        if ref == "local":
            return self.store
        return HuggingFaceStore(ref, endpoint=self.url)


@dataclasses.dataclass
class World:
    node: LocalNode
    runtime: ValidatorRuntime
    uids: dict[str, int]
    servers: list
    state: ValidatorState
    hub: HubLink
    hub_dir: Path


def _neuron(node: LocalNode, name: str, stake_tao: int = 0, hotkey=None):
    coldkey = keypair(f"iso-{name}-c") if hotkey is None else keypair("owner-coldkey")
    hotkey = hotkey or keypair(f"iso-{name}-h")
    node.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
    uid = (
        node.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey)
        .raise_for_failure()
        .data["uid"]
    )
    if stake_tao:
        node.submit(AddStake(1, hotkey.ss58_address, stake_tao * TAO), coldkey).raise_for_failure()
    return uid, hotkey


def _serve(node, hotkey, app, servers) -> None:
    running = run_in_thread(app) if not hasattr(app, "port") else app
    servers.append(running)
    node.submit(
        ServeEndpoint(netuid=1, ip="127.0.0.1", port=running.port), hotkey
    ).raise_for_failure()


def _honest_app(node, hotkey, model_dir: Path, tok):
    commitment = node.commitments(1)[hotkey.ss58_address]
    served = ServedModel(
        model=load_model_dir(model_dir, SPEC.model).model, tokenizer=tok, competition=SPEC.key,
        commitment=commitment.data, commit_block=commitment.block, max_positions=SPEC.model.sequence_length,
    )  # fmt: skip
    return build_miner_server(hotkey, node, 1, ModelSlot(served), metagraph_refresh_s=0.5).app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("isolation")
    owner_hotkey = keypair("iso-owner-h")
    hp = dataclasses.replace(TEST_HYPERPARAMETERS, commitment_rate_limit=1, serving_rate_limit=0)
    node = LocalNode(
        tmp / "chain",
        NodeConfig(
            owner_coldkey=keypair("owner-coldkey").ss58_address,
            owner_hotkey=owner_hotkey.ss58_address,
            hyperparameters=hp,
        ),
    )
    tok = load_tokenizer(specs_dir() / SPEC.model.tokenizer)
    store = LocalStore(tmp / "store")
    uids = {"owner": node.metagraph(1).uid_of(owner_hotkey.ss58_address)}  # uid 0 from genesis
    assert uids["owner"] == 0
    uids["validator"], validator = _neuron(node, "validator", stake_tao=100)
    keys, dirs, servers = {}, {}, []
    for seed, name in enumerate(("honest", "short", "long", "liar", "outage"), start=1):
        uids[name], keys[name] = _neuron(node, name)
        dirs[name] = save_model_dir(build_model(build_config(SHAPE), seed=seed), tmp / name)
        if name != "outage":
            publish(dirs[name], SPEC, store, node, 1, keys[name])
    on_hub = ModelCommitment.for_model(
        SPEC.key, "owner/model", SHA, content_hash(dirs["outage"]), keys["outage"].ss58_address
    )
    node.submit(SetCommitment(netuid=1, data=str(on_hub)), keys["outage"]).raise_for_failure()
    uids["config"], keys["config"] = _neuron(node, "config")
    hostile = tmp / "config"  # publish refuses it: committed by hand
    save_model_dir(build_model(build_config(SHAPE), seed=9), hostile)
    config = json.loads((hostile / "config.json").read_text())
    (hostile / "config.json").write_text(json.dumps({**config, "return_dict": False}))
    stored = store.put(hostile)
    raw = ModelCommitment.for_model(
        SPEC.key, "local", stored.revision, content_hash(hostile), keys["config"].ss58_address
    )
    node.submit(SetCommitment(netuid=1, data=str(raw)), keys["config"]).raise_for_failure()
    node.step(25)  # an epoch for the validator's permit; past the eval delay into round block 20
    _serve(node, keys["honest"], _honest_app(node, keys["honest"], dirs["honest"], tok), servers)
    _serve(node, keys["outage"], _honest_app(node, keys["outage"], dirs["outage"], tok), servers)
    _serve(
        node, keys["liar"], _honest_app(node, keys["liar"], dirs["honest"], tok), servers
    )  # serves another model
    for how in ("short", "long"):
        commitment = node.commitments(1)[keys[how].ss58_address].data
        model = load_model_dir(dirs[how], SPEC.model).model
        _serve(
            node,
            keys[how],
            hostile_logprobs_server(keys[how], node, model, commitment, how),
            servers,
        )
    hub = HubLink(store)
    runtime = ValidatorRuntime(
        node, validator, ValidatorConfig(1, tmp / "validator"), {"tiny": SPEC}, {"tiny": tok},
        {"tiny": load_eval_pool(FIXTURE, tok)}, hub,
    )  # fmt: skip
    yield World(node, runtime, uids, servers, ValidatorState(), hub, dirs["outage"])
    for server in servers:
        server.stop()
    node.close()


@pytest.fixture(scope="module")
def hub_online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The Hub store needs the hub libraries online (the test session is offline by default)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    patch.setenv("HF_HUB_OFFLINE", "0")
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def first(world: World, hub_online: None):
    """The first round: the outage miner's store is unreachable."""
    outcome = run_round(world.runtime, world.state)
    return outcome, load_bundle(outcome.bundle_path)


def test_every_attacker_alone_pays_and_the_round_completes(world: World, first) -> None:
    outcome, bundle = first
    u, r = world.uids, bundle.rounds[0]
    assert outcome.set_weights.startswith("set; landed at block"), outcome.set_weights
    assert outcome.weights[u["honest"]] > 0
    assert "answered for other token ids than asked" in r.serving_failed[u["short"]]
    assert "answered for other token ids than asked" in r.serving_failed[u["long"]]
    assert "serves a different model" in r.serving_failed[u["liar"]]
    assert u["honest"] not in r.serving_failed and not r.serving_inconclusive
    assert world.state.models[u["config"]].status == "bad_config"
    assert "return_dict" in world.state.models[u["config"]].reason
    assert u["config"] in outcome.rejections


def test_a_store_outage_holds_the_uid_and_it_is_scored_once_the_store_is_back(
    world: World, first
) -> None:
    _, bundle = first
    u = world.uids
    assert "store_unavailable" in bundle.rounds[0].held[u["outage"]]
    assert u["outage"] not in world.state.models  # nothing recorded against the miner
    hub = FakeHub.serving(world.hub_dir)
    try:
        world.hub.url = hub.url
        world.node.step(20)  # the next round block
        outcome = run_round(world.runtime, world.state)
    finally:
        hub.close()
    second = load_bundle(outcome.bundle_path).rounds[0]
    assert u["outage"] in second.losses and u["outage"] not in second.held
    assert world.state.models[u["outage"]].status == "ok"


def test_a_serving_penalty_survives_normalisation(world: World, first) -> None:
    """The withheld serving share goes to the subnet owner's uid (burned), not back to the liar."""
    _, bundle = first
    u, r = world.uids, bundle.rounds[0]
    assert bundle.burn_uid == u["owner"]
    total_ema = sum(r.ema_after.values())
    for uid in (u["short"], u["long"], u["liar"]):
        if r.ema_after.get(uid, 0) > 0:
            assert bundle.weights[uid] == pytest.approx(
                r.ema_after[uid] / total_ema * (1 - SPEC.serving_share)
            )
    withheld = (
        sum(r.ema_after.get(uid, 0) for uid in r.serving_failed) / total_ema * SPEC.serving_share
    )
    assert bundle.weights.get(u["owner"], 0.0) == pytest.approx(withheld)


def test_the_same_round_block_is_never_scored_twice(world: World, first) -> None:
    before = copy.deepcopy(world.state.ema)
    outcome = run_round(world.runtime, world.state)
    assert outcome.set_weights.startswith("skipped: no competition has a new round block")
    assert outcome.bundle_path is None and world.state.ema == before


def test_validator_out_of_memory_holds_the_uid_and_keeps_its_score(
    world: World, first, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's memory (the one boundary faked here): the uid is held, its EMA carried."""
    honest = world.uids["honest"]
    real = evaluation.per_sample_losses
    target = world.runtime.loaded[world.state.models[honest].content_hash].loaded.model

    def out_of_memory(model, *args, **kwargs):
        if model is target:
            raise ResourceExhausted("CUDA out of memory (simulated for this model)")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(evaluation, "per_sample_losses", out_of_memory)
    ema = world.state.ema["tiny"][honest]
    world.node.step(20)
    outcome = run_round(world.runtime, world.state)
    r = load_bundle(outcome.bundle_path).rounds[0]
    assert "validator_out_of_memory" in r.held[honest] and honest not in r.eval_errors
    assert r.ema_after[honest] == ema and world.state.ema["tiny"][honest] == ema


def test_probes_are_fresh_windows_sent_under_two_identities(world: World, first) -> None:
    _, bundle = first
    r = bundle.rounds[0]
    assert len(r.probe_sample_ids) == SPEC.evaluation.serving_probe_samples
    assert not set(r.probe_sample_ids) & set(r.sample_ids[: SPEC.evaluation.serving_probe_samples])
    assert r.probe_seed != 0
