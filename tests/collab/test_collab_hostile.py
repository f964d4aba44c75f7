"""Hostile collab submissions in one real round: each is rejected with its reason, costs only
its own uid, and the honest miner's payload is still scored and aggregated.

One honest miner trains for real; every hostile uid commits something built directly with the
codec (or nothing at all) in the same window: bytes that are not safetensors, the honest
miner's commitment string copied verbatim, a payload for another base checkpoint, a payload
naming another hotkey, a payload never stored, a valid payload committed after the deadline and
an oversized one. A second round is scored while the validator's store is down for payloads:
the uids it could not fetch are held, their ratings kept, and nothing counts against them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
import torch

from crucible.chain.interface import SetCommitment
from crucible.collab.checkpoint import latest_pointer
from crucible.collab.codec import PayloadMeta, compress, encode_payload, max_payload_bytes
from crucible.collab.payload_store import PAYLOAD_FILE
from crucible.collab.shared_model import genesis_params, param_shapes
from crucible.protocol.errors import ModelUnavailable
from crucible.store.base import StoredModel
from crucible.store.local import LocalStore
from crucible.validator.bundle import load_bundle, recompute
from crucible.validator.collab_record import CollabRound
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
from crucible.validator.state import ValidatorState
from tests.collab.world import CollabWorld, commit_payload, make_world

HOSTILE = ("junk", "copy", "stale", "other", "ghost", "late", "big")
# what each hostile uid's verdict must say (validator/collab.py::_payload and the codec)
REASONS = {
    "junk": "rejected: payload_unreadable: ",
    "copy": "rejected: commitment not bound to this hotkey",
    "stale": "rejected: stale: trained from ",
    "other": "rejected: payload names another hotkey",
    "ghost": "rejected: payload unavailable: not_found: ",
    "late": "rejected: late: committed at block ",
    "big": "rejected: payload unavailable: too_large: ",
}
OTHER_BASE = "0e" * 32  # a checkpoint id that is not the round's


class PayloadOutage:
    """The validator's store with its payload reads down (a timeout): puts, ``exists`` and
    checkpoint reads still reach the real store underneath."""

    ref = "local"

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner

    def put(self, model_dir: Path) -> StoredModel:
        return self.inner.put(model_dir)

    def exists(self, ref: str, revision: str) -> bool:
        return self.inner.exists(ref, revision)

    def get(
        self,
        ref: str,
        revision: str,
        dest_dir: Path,
        *,
        max_bytes: int,
        allowed_files: Collection[str] | None = None,
    ) -> Path:
        if allowed_files is not None and PAYLOAD_FILE in allowed_files:
            raise ModelUnavailable("the store did not answer in 30 s", code="store_timeout")
        return self.inner.get(ref, revision, dest_dir, max_bytes=max_bytes,
                              allowed_files=allowed_files)  # fmt: skip


def _outage_validator(world: CollabWorld, name: str, like: ValidatorRuntime) -> ValidatorRuntime:
    """The same validator (keys, work dir, collab runtime) with its store down for payloads."""
    outage = PayloadOutage(world.store)
    return ValidatorRuntime(
        world.node, world.keys[name], ValidatorConfig(1, world.root / "validators" / name),
        {}, {}, {}, lambda ref: outage, documents=world.documents, collab=like.collab,
    )  # fmt: skip


def _payload(world: CollabWorld, r: int, base: str, hotkey: str, seed: int) -> bytes:
    """A well-formed payload of small noise (what a careless or lazy miner could send)."""
    g = torch.Generator().manual_seed(seed)
    shapes = param_shapes(genesis_params(world.spec))
    noise = {n: torch.randn(s, generator=g) * 1e-3 for n, s in shapes.items()}
    meta = PayloadMeta(world.spec.key, r, base, hotkey)
    return encode_payload(compress(noise, world.spec.codec), meta)


def _commitment_of(world: CollabWorld, name: str) -> str:
    return world.node.metagraph(1).neurons[world.uids[name]].commitment.data


def _hostile_round(world: CollabWorld, r: int, base: str) -> None:
    """Every hostile uid's submission for round ``r`` (all but ``late`` inside the window)."""
    key = {name: world.keys[name].ss58_address for name in (*HOSTILE, "ann")}
    commit_payload(world, "junk", r, b"this is not a safetensors file, just text " * 20)
    copied = _commitment_of(world, "ann")
    world.node.submit(SetCommitment(1, copied), world.keys["copy"]).raise_for_failure()
    commit_payload(world, "stale", r, _payload(world, r, OTHER_BASE, key["stale"], seed=1))
    commit_payload(world, "other", r, _payload(world, r, base, key["ann"], seed=2))
    commit_payload(world, "ghost", r, _payload(world, r, base, key["ghost"], seed=3), store=False)
    valid = _payload(world, r, base, key["big"], seed=4)
    limit = max_payload_bytes(param_shapes(genesis_params(world.spec)), world.spec.codec)
    commit_payload(world, "big", r, valid + b"\0" * (limit - len(valid) + 1))


@dataclasses.dataclass
class Played:
    world: CollabWorld
    round_index: int
    scored: CollabRound  # the hostile round
    held: CollabRound  # the next round, scored during a payload outage
    bundles: list


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Played]:
    world = make_world(tmp_path_factory.mktemp("collab-hostile"))
    for name in ("ann", *HOSTILE):
        world.register(name)
    rt, state = world.validator("val"), ValidatorState()
    spec, ann = world.spec, world.miner("ann")
    r = spec.round_of(world.node.block()) + 1
    world.step_to(spec.window(r)[0])
    run_round(rt, state)  # checkpoint 0 and its pointer for round r
    base, _ = ann.current_checkpoint()
    assert ann.run_round(r, base).outcome == "committed"
    _hostile_round(world, r, base)
    # the deadline block is here: a commitment sent now lands after it, before the data block
    world.step_to(spec.window(r)[1])
    late = _payload(world, r, base, world.keys["late"].ss58_address, seed=5)
    assert commit_payload(world, "late", r, late)
    world.step_to(spec.data_block(r))
    first = load_bundle(run_round(rt, state).bundle_path)
    # round r + 1: ann and junk commit again, the copier copies again; payload reads fail
    base2, opens = ann.current_checkpoint()
    assert opens == r + 1
    assert ann.run_round(r + 1, base2).outcome == "committed"
    commit_payload(world, "junk", r + 1, b"still not safetensors " * 20)
    copied = SetCommitment(1, _commitment_of(world, "ann"))
    world.node.submit(copied, world.keys["copy"]).raise_for_failure()
    world.step_to(spec.data_block(r + 1))
    second = load_bundle(run_round(_outage_validator(world, "val", rt), state).bundle_path)
    yield Played(world, r, first.collab[0], second.collab[0], [first, second])
    world.node.close()


def _uid(played: Played, name: str) -> int:
    return played.world.uids[name]


@pytest.mark.parametrize("name", HOSTILE)
def test_each_hostile_submission_is_rejected_with_its_reason(played: Played, name: str) -> None:
    rec, uid = played.scored, _uid(played, name)
    assert rec.verdicts[uid].startswith(REASONS[name]), rec.verdicts[uid]
    assert rec.rejected[uid] and rec.scores[uid] == 0.0
    assert uid not in rec.selected and uid not in rec.measured and uid not in rec.held
    assert rec.weights.get(uid, 0.0) == 0.0 and rec.ratings_after.get(uid, 0.0) == 0.0


def test_the_rejections_name_the_specific_problem(played: Played) -> None:
    rec, w = played.scored, played.world
    deadline = w.spec.window(played.round_index)[1]
    v = {name: rec.verdicts[_uid(played, name)] for name in HOSTILE}
    assert f"at block {deadline + 1}, the window is " in v["late"]
    assert f"trained from {OTHER_BASE[:12]}…" in v["stale"]
    assert f"the round's checkpoint is {rec.base_checkpoint[:12]}…" in v["stale"]
    limit = max_payload_bytes(param_shapes(genesis_params(w.spec)), w.spec.codec)
    assert f"at most {limit} allowed" in v["big"]
    assert rec.commitments[_uid(played, "copy")] == rec.commitments[_uid(played, "ann")]


def test_the_honest_payload_is_scored_selected_and_aggregated(played: Played) -> None:
    rec, ann = played.scored, _uid(played, "ann")
    assert rec.verdicts[ann] == "ok" and rec.scores[ann] > 0
    assert rec.selected == [ann] and set(rec.measured) == {ann} and set(rec.clip_norms) == {ann}
    assert rec.held == {} and rec.weights[ann] == 1.0
    assert set(rec.rejected) == {_uid(played, n) for n in HOSTILE}


def test_the_round_still_produces_a_new_checkpoint(played: Played) -> None:
    rec, w = played.scored, played.world
    assert rec.next_checkpoint != rec.base_checkpoint
    assert w.store.exists("local", rec.next_checkpoint)
    pointer = latest_pointer(w.documents, w.spec.key, {w.keys["val"].ss58_address})
    # the outage round was scored after it: its pointer (one round later) is the newest
    assert pointer.round_index == played.round_index + 2
    assert pointer.previous == rec.next_checkpoint == played.held.base_checkpoint


def test_a_store_outage_holds_the_uids_and_keeps_their_ratings(played: Played) -> None:
    rec, before = played.held, played.scored
    ann, junk, copy = (_uid(played, n) for n in ("ann", "junk", "copy"))
    assert set(rec.held) == {ann, junk}
    assert all("store_timeout" in why for why in rec.held.values()), rec.held
    for uid in (ann, junk):  # not judged: no score, no verdict, rating untouched
        assert uid not in rec.scores and uid not in rec.verdicts and uid not in rec.rejected
        assert rec.ratings_after[uid] == rec.ratings_before[uid] == before.ratings_after[uid]
    assert rec.ratings_after[ann] > 0 and rec.weights[ann] == max(rec.weights.values())
    # a problem the validator sees without the store is still the uid's own
    assert rec.verdicts[copy].startswith(REASONS["copy"]) and rec.scores[copy] == 0.0
    # nothing to aggregate: the checkpoint moves on a round, its weights unchanged
    assert rec.selected == [] and rec.next_checkpoint == rec.base_checkpoint


def test_bundles_with_hostile_and_held_uids_recompute(played: Played) -> None:
    for bundle in played.bundles:
        assert recompute(bundle).identical
