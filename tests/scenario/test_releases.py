"""Evaluation data that no miner can have trained on: fresh releases against a memorizer.

A node process; the subnet owner's hotkey (uid 0) is the competition's data publisher. An honest
miner trains on the training split; a memorizer with the same shape, seed and budget trains on
everything public — the training split *and* the held-out split — and commits later. Scored on
the held-out split (the fallback before any release) the memorizer takes the crown; once the
owner publishes the held-back works as a fresh release, both are judged on text neither has seen
and the memorizer gains nothing. Around that: two validators with different stakes pick the same
release and the same samples; a model committed after the release waits for the next one; a
release committed by a stranger, a tampered, an oversized and a malformed release are each
passed over with a reason while the round completes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet, SetCommitment
from crucible.chain.local.client import LocalChain
from crucible.competitions import specs_dir
from crucible.corpus.dataset import token_stream
from crucible.corpus.releases import build_release, release_id
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.publish import publish
from crucible.miner.train import TrainConfig, train
from crucible.models.build import ModelShape, build_config, build_model
from crucible.protocol.competition import load_competitions
from crucible.protocol.release import ReleaseCommitment
from crucible.scoring.releases import RELEASES_KIND, ReleaseLoader
from crucible.scoring.windows import load_eval_pool
from crucible.store.documents import DocumentStore
from crucible.store.local import LocalStore
from crucible.store.resolve import model_store_resolver
from crucible.validator.bundle import Bundle, load_bundle
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
from crucible.validator.state import ValidatorState
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
SPEC = load_competitions(specs_dir())["tiny"]
SHAPE = ModelShape(layers=2, hidden=64, heads=2, ffn=128)
pytestmark = pytest.mark.timeout(900)  # two trainings and several rounds on a shared CPU
OWNER = keypair("release-owner-hotkey")


@dataclasses.dataclass
class World:
    tmp: Path
    chain: LocalChain
    documents: DocumentStore
    uids: dict[str, int]
    keys: dict[str, object]
    validators: dict[str, tuple[ValidatorRuntime, ValidatorState]]
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)


def _register(chain: LocalChain, name: str, stake: int = 0):
    coldkey, hotkey = keypair(f"rel-{name}-c"), keypair(f"rel-{name}-h")
    chain.submit(DevFaucet(amount_rao=5000 * TAO), coldkey).raise_for_failure()
    uid = (
        chain.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey)
        .raise_for_failure()
        .data["uid"]
    )
    if stake:
        chain.submit(AddStake(1, hotkey.ss58_address, stake * TAO), coldkey).raise_for_failure()
    return uid, hotkey


def _trained(tmp: Path, name: str, splits: tuple[str, ...], tok) -> Path:
    import numpy as np

    tokens = np.concatenate([token_stream(FIXTURE, split, tok) for split in splits])
    model = build_model(build_config(SHAPE, eos_token_id=tok.eos_token_id), seed=1)  # same init
    config = TrainConfig(out_dir=tmp / f"train-{name}", max_steps=60, batch_size=8, lr=4e-3, warmup_steps=5, checkpoint_every=0, seed=3, progress=False)  # fmt: skip
    return train(model, tokens, config).model_dir


def release_fresh_works(w: World, folder: Path) -> ReleaseCommitment:
    raw = build_release(folder)
    w.documents.put(RELEASES_KIND, release_id(raw), raw)
    commitment = ReleaseCommitment("local", release_id(raw))
    w.chain.submit(SetCommitment(1, str(commitment)), OWNER).raise_for_failure()
    return commitment


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("releases")
    node = NodeProcess(tmp / "chain", keypair("owner-coldkey").ss58_address, "--owner-hotkey", OWNER.ss58_address, "--commitment-rate-limit", "1")  # fmt: skip
    chain = node.start()
    tok = load_tokenizer(specs_dir() / SPEC.model.tokenizer)
    store, documents = LocalStore(tmp / "store"), DocumentStore(tmp / "store")
    w = World(tmp, chain, documents, {"owner": 0}, {}, {})
    for name, stake in (("val-a", 1000), ("val-b", 3000)):
        uid, key = _register(chain, name, stake)
        w.uids[name], w.keys[name] = uid, key
    honest, memorizer = (
        _trained(tmp, "honest", ("train",), tok),
        _trained(tmp, "memorizer", ("train", "eval"), tok),
    )
    for name, path in (("honest", honest), ("memorizer", memorizer)):
        w.uids[name], w.keys[name] = _register(chain, name)
        publish(path, SPEC, store, chain, 1, w.keys[name])
        chain.step(2)  # the memorizer commits later: time priority is the honest miner's
    w.uids["late"], w.keys["late"] = _register(chain, "late")
    w.uids["stranger"], w.keys["stranger"] = _register(chain, "stranger")
    w.paths = {"honest": honest}
    chain.step(20 - chain.block() % 20)  # a round block, past the eval delay; an epoch for permits
    for name in ("val-a", "val-b"):
        runtime = ValidatorRuntime(
            chain, w.keys[name], ValidatorConfig(1, tmp / name), {"tiny": SPEC}, {"tiny": tok},
            {"tiny": load_eval_pool(FIXTURE, tok)}, model_store_resolver(store), documents=documents,
            releases={"tiny": ReleaseLoader(documents, tok, SPEC)},
        )  # fmt: skip
        w.validators[name] = (runtime, ValidatorState())
    yield w
    node.stop()


def _round(w: World, name: str = "val-a") -> Bundle:
    runtime, state = w.validators[name]
    outcome = run_round(runtime, state)
    assert outcome.bundle_path is not None, outcome.set_weights
    return load_bundle(outcome.bundle_path)


def _crown(bundle: Bundle) -> int:
    return max(bundle.weights, key=bundle.weights.get)


def _next_round(w: World) -> None:
    w.chain.step(20 - w.chain.block() % 20)


@pytest.fixture(scope="module")
def held_out_round(world: World) -> Bundle:
    return _round(world)


def test_on_the_public_held_out_split_the_memorizer_takes_the_crown(
    world: World, held_out_round: Bundle
) -> None:
    r = held_out_round.rounds[0]
    assert [s["kind"] for s in r.data_sources] == ["held_out"] and r.cutoff_block is None
    assert _crown(held_out_round) == world.uids["memorizer"]
    pair = next(p for p in r.pairs if p["later"] == world.uids["memorizer"])
    assert pair["later_wins"] and pair["p_value"] < 0.05


@pytest.fixture(scope="module")
def release_rounds(
    world: World, held_out_round: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Bundle]:
    folder = tmp_path_factory.mktemp("fresh")
    (folder / "fresh.jsonl").write_bytes((FIXTURE / "corpus" / "fresh.jsonl").read_bytes())
    release_fresh_works(world, folder)
    world.chain.step(1)
    stranger = ReleaseCommitment("local", "ee" * 32)  # a release nobody named may publish
    world.chain.submit(SetCommitment(1, str(stranger)), world.keys["stranger"]).raise_for_failure()
    publish(
        world.paths["honest"],
        SPEC,
        LocalStore(world.tmp / "store"),
        world.chain,
        1,
        world.keys["late"],
    )
    _next_round(world)
    return {name: _round(world, name) for name in ("val-a", "val-b")}


def test_on_a_fresh_release_the_memorizer_gains_nothing(
    world: World, release_rounds: dict[str, Bundle]
) -> None:
    bundle = release_rounds["val-a"]
    r = bundle.rounds[0]
    assert [s["kind"] for s in r.data_sources] == ["release"]
    assert all(sid.startswith("release:") for sid in r.sample_ids)
    honest, memorizer = world.uids["honest"], world.uids["memorizer"]
    means = {u: sum(r.losses[u]) / len(r.losses[u]) for u in (honest, memorizer)}
    assert _crown(bundle) == honest, means
    lost = [
        p
        for p in r.pairs
        if p["later"] == memorizer and p["earlier"] == honest and not p["later_wins"]
    ]
    assert memorizer in r.not_competitive or lost, (means, r.not_competitive)


def test_two_validators_pick_the_same_release_and_samples(
    release_rounds: dict[str, Bundle],
) -> None:
    a, b = (release_rounds[n].rounds[0] for n in ("val-a", "val-b"))
    assert a.data_sources == b.data_sources and a.sample_ids == b.sample_ids and a.seed == b.seed
    # the same losses and verdicts; their EMAs differ only because val-a scored an earlier round
    assert a.losses == b.losses and a.competitive == b.competitive


def test_a_model_committed_after_the_release_waits_for_the_next(
    world: World, release_rounds: dict[str, Bundle]
) -> None:
    r = release_rounds["val-a"].rounds[0]
    assert world.uids["late"] not in r.losses and r.cutoff_block is not None
    assert world.uids["honest"] in r.losses and world.uids["memorizer"] in r.losses


def test_a_release_from_a_stranger_is_ignored_with_a_reason(
    world: World, release_rounds: dict[str, Bundle]
) -> None:
    ignored = release_rounds["val-a"].rounds[0].ignored_releases
    assert "is not a data publisher" in ignored[world.keys["stranger"].ss58_address]


@pytest.mark.parametrize("kind", ["tampered", "oversized", "malformed"])
def test_a_bad_release_is_passed_over_and_the_round_completes(
    world: World, release_rounds, kind: str
) -> None:
    runtime, state = world.validators["val-a"]
    if kind == "malformed":
        raw = b"this is not a release\n"
    else:
        raw = (
            build_release(FIXTURE / "corpus")
            if kind == "oversized"
            else b'{"id": "x", "text": "fine"}\n'
        )
    digest = release_id(raw)
    world.documents.put(
        RELEASES_KIND, digest, raw if kind != "tampered" else raw.replace(b"fine", b"FINE")
    )
    world.chain.submit(
        SetCommitment(1, str(ReleaseCommitment("local", digest))), OWNER
    ).raise_for_failure()
    limits = {"max_release_bytes": 1000} if kind == "oversized" else {}
    spec = SPEC.model_copy(update={"data": SPEC.data.model_copy(update=limits)})
    runtime.releases["tiny"] = ReleaseLoader(world.documents, runtime.tokenizers["tiny"], spec)
    _next_round(world)
    r = _round(world).rounds[0]
    reason = r.ignored_releases[OWNER.ss58_address]
    expected = {
        "tampered": "release_hash_mismatch",
        "oversized": "release_too_large",
        "malformed": "release_malformed",
    }[kind]
    assert expected in reason, reason
    assert [s["kind"] for s in r.data_sources] == [
        "held_out"
    ]  # the spec's fallback; the round went on
    assert r.losses
