"""A forged or altered score bundle never verifies.

A real local chain, two miners with real tiny models in a real store, one validator round that
sets weights and writes a signed bundle; then every kind of tampering, each saved under its new
hash so the file name is consistent, is caught by ``load_bundle`` (signature) or by the checks
against the chain — the very functions ``crucible-validator verify`` runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet
from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.publish import publish
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import AuthError
from crucible.scoring.windows import load_eval_pool
from crucible.store.local import LocalStore
from crucible.store.resolve import model_store_resolver
from crucible.validator.bundle import (
    Bundle,
    TamperedBundle,
    load_bundle,
    recompute,
    rescored,
    write_bundle,
)
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
from crucible.validator.state import ValidatorState
from crucible.validator.verify import check_against_chain
from tests.conftest import TAO, TEST_HYPERPARAMETERS, keypair

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"


@dataclasses.dataclass
class Round:
    node: LocalNode
    validator: object
    uids: dict[str, int]
    bundle: Bundle
    path: Path


def _register(node: LocalNode, name: str, stake_tao: int = 0):
    coldkey, hotkey = keypair(f"bundle-{name}-c"), keypair(f"bundle-{name}-h")
    node.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
    uid = node.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey)
    uid = uid.raise_for_failure().data["uid"]
    if stake_tao:
        node.submit(AddStake(1, hotkey.ss58_address, stake_tao * TAO), coldkey).raise_for_failure()
    return uid, hotkey


@pytest.fixture(scope="module")
def signed_round(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Round]:
    tmp = tmp_path_factory.mktemp("bundles")
    hp = dataclasses.replace(TEST_HYPERPARAMETERS, commitment_rate_limit=1)
    node = LocalNode(
        tmp / "chain",
        NodeConfig(owner_coldkey=keypair("owner-coldkey").ss58_address, hyperparameters=hp),
    )
    spec = load_competitions(specs_dir())["tiny"]
    tok = load_tokenizer(specs_dir() / spec.model.tokenizer)
    store = LocalStore(tmp / "store")
    uids = {}
    _, validator = _register(node, "validator", stake_tao=100)
    for seed, name in enumerate(("first", "second"), start=1):
        uids[name], hotkey = _register(node, name)
        model = build_model(
            build_config(ModelShape(layers=1, hidden=32, heads=2, ffn=64)), seed=seed
        )
        if name == "second":  # confidently wrong: a far higher loss than a fresh model's ln(8192)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(8.0)
        publish(save_model_dir(model, tmp / name), spec, store, node, 1, hotkey)
        node.step(1)
    node.step(25)  # an epoch for the validator permit; past the eval delay into round block 20
    runtime = ValidatorRuntime(
        node, validator, ValidatorConfig(1, tmp / "validator"), {"tiny": spec}, {"tiny": tok},
        {"tiny": load_eval_pool(FIXTURE, tok)}, model_store_resolver(store),
    )  # fmt: skip
    outcome = run_round(runtime, ValidatorState())
    assert outcome.set_weights.startswith("set; landed at block"), outcome.set_weights
    node.step(1)
    yield Round(node, validator, uids, load_bundle(outcome.bundle_path), outcome.bundle_path)
    node.close()


def _saved(bundle: Bundle, tmp: Path) -> Path:
    return write_bundle(bundle, tmp)


def test_the_honest_bundle_verifies_against_the_chain(signed_round: Round) -> None:
    assert signed_round.bundle.weights == {signed_round.uids["first"]: 1.0}
    assert recompute(signed_round.bundle).identical
    found = check_against_chain(signed_round.bundle, signed_round.node)
    assert found.problems == [] and found.unverifiable == []


def _swap_winner(bundle: Bundle, a: int, b: int) -> Bundle:
    """A consistent forgery: a's and b's losses swapped, every intermediate recomputed."""
    rounds = []
    for r in bundle.rounds:
        losses = dict(r.losses)
        losses[a], losses[b] = losses[b], losses[a]
        rounds.append(r.model_copy(update={"losses": losses}))
    return rescored(bundle.model_copy(update={"rounds": rounds}))


def test_swapped_winner_saved_under_its_new_hash_is_caught(
    signed_round: Round, tmp_path: Path
) -> None:
    first, second = signed_round.uids["first"], signed_round.uids["second"]
    forged = _swap_winner(signed_round.bundle, first, second)
    # keeping the validator's signature: the signature no longer verifies
    resaved = tmp_path / f"{forged.bundle_id}.json"
    resaved.write_text(
        forged.model_copy(update={"signature": signed_round.bundle.signature}).model_dump_json()
    )
    with pytest.raises(TamperedBundle, match="signature does not verify"):
        load_bundle(resaved)
    # even signed by the validator's own key (a lying validator): the chain holds other weights
    lying = forged.signed(signed_round.validator)
    assert load_bundle(_saved(lying, tmp_path)) == lying
    assert recompute(lying).identical  # internally consistent …
    assert lying.weights != signed_round.bundle.weights
    problems = check_against_chain(lying, signed_round.node).problems  # … not the chain's
    assert any("the chain's weights differ from the bundle's" in p for p in problems), problems


@pytest.mark.parametrize(
    ("alter", "phrase"),
    [
        (lambda r: {"block_hash": "0x" + "ab" * 32}, "is not the chain's"),
        (
            lambda r: {"commit_blocks": {u: b + 1 for u, b in r.commit_blocks.items()}},
            "committed at block",
        ),
        (
            lambda r: {"hotkeys": {u: keypair("nobody").ss58_address for u in r.hotkeys}},
            "not bound to",
        ),
        (lambda r: {"model_hashes": {u: "0" * 64 for u in r.model_hashes}}, "not bound to"),
    ],
    ids=["block_hash", "commit_block", "hotkey", "model_hash"],
)
def test_altered_inputs_resigned_by_the_validator_are_caught_by_the_chain(
    signed_round: Round, tmp_path: Path, alter, phrase: str
) -> None:
    bundle = signed_round.bundle
    rounds = [r.model_copy(update=alter(r)) for r in bundle.rounds]
    altered = bundle.model_copy(update={"rounds": rounds, "signature": ""}).signed(
        signed_round.validator
    )
    loaded = load_bundle(_saved(altered, tmp_path))
    problems = check_against_chain(loaded, signed_round.node).problems
    assert any(phrase in p for p in problems), problems


def test_an_altered_loss_is_caught_by_recomputation(signed_round: Round) -> None:
    bundle = signed_round.bundle
    r = bundle.rounds[0]
    uid = signed_round.uids["second"]  # the loser, made to look better than the winner
    losses = {**r.losses, uid: [x * 0.1 for x in r.losses[uid]]}
    altered = bundle.model_copy(update={"rounds": [r.model_copy(update={"losses": losses})]})
    assert not recompute(altered).identical


def test_resigned_by_another_key_is_caught(signed_round: Round, tmp_path: Path) -> None:
    attacker = keypair("bundle-attacker")
    stolen = signed_round.bundle.model_copy(
        update={"validator_hotkey": attacker.ss58_address, "signature": ""}
    )
    loaded = load_bundle(_saved(stolen.signed(attacker), tmp_path))
    assert any(
        "is not registered" in p for p in check_against_chain(loaded, signed_round.node).problems
    )
    with pytest.raises(AuthError, match="signature does not verify"):
        stolen.model_copy(
            update={
                "validator_hotkey": signed_round.bundle.validator_hotkey,
                "signature": loaded.signature,
            }
        ).check_signature()


def test_a_stale_bundle_is_reported_as_superseded(signed_round: Round) -> None:
    from crucible.chain.interface import SetWeights

    node, validator = signed_round.node, signed_round.validator
    node.step(3)
    uid = signed_round.uids["first"]
    node.submit(SetWeights(1, (uid,), (65535,), 10), validator).raise_for_failure()
    found = check_against_chain(signed_round.bundle, node)
    assert found.problems == []
    assert any("the chain holds later weights" in p for p in found.unverifiable), found


def test_garbage_is_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / ("0" * 64 + ".json")
    path.write_text('{"schema_version": 2}')
    with pytest.raises(TamperedBundle, match="not a score bundle"):
        load_bundle(path)
