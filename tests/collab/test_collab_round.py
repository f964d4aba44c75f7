"""Collab rounds end to end in one process: real chain, keys, store, miners and validators.

Three honest miners, a free rider sending a random pseudo-gradient and a copier re-signing an
honest payload take part in round after round; the validator (the aggregator) scores each round
on data drawn after the deadline, aggregates the honest payloads into the next checkpoint,
signs its pointer and records everything in a signed bundle that ``recompute`` reproduces. A
second validator computes the same checkpoint id, and a third that joins for the last round
scores it from the checkpoint the aggregator published (what the miners trained from).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from crucible.collab.codec import PayloadMeta, compress, encode_payload
from crucible.collab.measure import mean_loss
from crucible.collab.shared_model import build_shared_model
from crucible.protocol.collab import PayloadCommitment
from crucible.validator.bundle import load_bundle, recompute
from crucible.validator.loop import run_round
from crucible.validator.state import ValidatorState
from tests.collab.world import CollabWorld, commit_payload, honest_verdicts_hold, make_world

HONEST = ("ann", "bob", "cid")


def _free_rider(world: CollabWorld, r: int, base: str, shapes) -> None:
    g = torch.Generator().manual_seed(r)
    noise = {n: torch.randn(s, generator=g) * 1e-2 for n, s in shapes.items()}
    meta = PayloadMeta(world.spec.key, r, base, world.keys["zed"].ss58_address)
    commit_payload(world, "zed", r, encode_payload(compress(noise, world.spec.codec), meta))


@dataclasses.dataclass
class Played:
    world: CollabWorld
    bundles: list  # one per scored round
    state: ValidatorState
    held_out: list[float]  # the checkpoint's held-out loss before each round and after the last
    others: list  # the second validator's bundles
    late: object  # the bundle of a validator that joined for the last round only
    miners: dict  # by name, as they ended the last round


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Played]:
    world = make_world(tmp_path_factory.mktemp("collab"), validators=("val", "val2", "val3"))
    for name in (*HONEST, "zed", "cpy"):
        world.register(name)
    rt, state = world.validator("val"), ValidatorState()
    rt2, state2 = world.validator("val2"), ValidatorState()  # not an aggregator: recomputes
    miners = {name: world.miner(name) for name in (*HONEST, "cpy")}
    spec, bundles, others, held_out = world.spec, [], [], []
    first_round = spec.round_of(world.node.block()) + 1
    world.step_to(spec.window(first_round)[0])
    run_round(rt, state)  # checkpoint 0 and its pointer for the round now open
    run_round(rt2, state2)
    rt3, state3 = world.validator("val3"), ValidatorState()
    last_round = first_round + 2
    for r in range(first_round, last_round + 1):
        if r == last_round:
            run_round(rt3, state3)  # joins now: starts from checkpoint 0, scores nothing yet
        checkpoint, _ = miners["ann"].current_checkpoint()
        params = miners["ann"].checkpoint_params(checkpoint)
        model = build_shared_model(spec, params)
        held_out.append(mean_loss(model, _held(world), 8))
        for name in HONEST:
            assert miners[name].run_round(r, checkpoint).outcome == "committed"
        _free_rider(world, r, checkpoint, {n: tuple(t.shape) for n, t in params.items()})
        # the copier takes ann's stored payload and commits it as its own, a block later
        world.node.step(1)
        ann = world.node.metagraph(1).neurons[world.uids["ann"]].commitment.data
        raw = _read_payload(world, PayloadCommitment.parse(ann).content_hash)
        commit_payload(world, "cpy", r, _resigned(raw, world, "cpy", r, checkpoint))
        world.step_to(spec.data_block(r))
        outcome = run_round(rt, state)
        bundles.append(load_bundle(outcome.bundle_path))
        others.append(load_bundle(run_round(rt2, state2).bundle_path))
    late = load_bundle(run_round(rt3, state3).bundle_path)
    checkpoint, _ = miners["ann"].current_checkpoint()
    held_out.append(
        mean_loss(
            build_shared_model(spec, miners["ann"].checkpoint_params(checkpoint)), _held(world), 8
        )
    )
    yield Played(world, bundles, state, held_out, others, late, miners)
    world.node.close()


def _held(world: CollabWorld) -> torch.Tensor:
    from crucible.collab.assignment import random_windows, windows_batch

    length = world.spec.model.sequence_length
    starts = random_windows(
        "test-held-out", 16, len(world.eval), length, torch.zeros(0, dtype=torch.int64).numpy()
    )
    return windows_batch(world.eval, starts, length)


def _read_payload(world: CollabWorld, digest: str) -> bytes:
    return (world.store.objects / digest / "payload.safetensors").read_bytes()


def _resigned(raw: bytes, world: CollabWorld, name: str, r: int, base: str) -> bytes:
    from crucible.collab.codec import decode_payload
    from crucible.collab.shared_model import genesis_params, param_shapes

    shapes = param_shapes(genesis_params(world.spec))
    _, compressed = decode_payload(raw, shapes, world.spec.codec)
    return encode_payload(
        compressed, PayloadMeta(world.spec.key, r, base, world.keys[name].ss58_address)
    )


def test_honest_miners_lower_the_held_out_loss_round_over_round(played: Played) -> None:
    losses = played.held_out
    assert all(after < before for before, after in zip(losses, losses[1:], strict=False)), losses


def test_honest_payloads_score_and_are_aggregated(played: Played) -> None:
    uids, verdicts = played.world.uids, []
    for bundle in played.bundles:
        (r,) = bundle.collab
        for name in HONEST:
            verdicts.append(r.verdicts[uids[name]])
            assert r.verdicts[uids[name]] != "ok" or r.scores[uids[name]] > 0, r.verdicts
        assert set(r.selected) <= {uids[n] for n in HONEST} and r.selected
        assert r.base_checkpoint != r.next_checkpoint and r.pointer_id
    assert honest_verdicts_hold(verdicts), verdicts


def test_the_free_rider_and_the_copier_earn_nothing(played: Played) -> None:
    uids = played.world.uids
    last = played.bundles[-1].collab[0]
    for bundle in played.bundles:
        r = bundle.collab[0]
        assert r.scores[uids["zed"]] == 0.0, r.verdicts[uids["zed"]]
        assert r.verdicts[uids["zed"]].startswith(
            ("no held-out improvement", "proof of own data failed", "below the noise floor",
             "held-out gain not significant"))  # fmt: skip
        assert (
            r.verdicts[uids["cpy"]] == f"copy of uid {uids['ann']}" and r.scores[uids["cpy"]] == 0
        )
    assert last.weights[uids["zed"]] == 0 and last.weights[uids["cpy"]] == 0
    assert all(last.weights[uids[n]] > 0 for n in HONEST)
    assert (
        played.bundles[-1].weights[uids["zed"]]
        if uids["zed"] in played.bundles[-1].weights
        else True
    )


def test_a_restarted_miner_reads_back_its_residual_and_adamw_moments(played: Played) -> None:
    ann, again = played.miners["ann"], played.world.miner("ann")  # the same work dir: a restart
    kept, read = ann.moments.tensors, again.moments.tensors
    assert kept.keys() == read.keys() and all(torch.equal(kept[k], read[k]) for k in kept)
    rounds = len(played.bundles)
    assert float(read["model.norm.weight.step"]) == rounds * played.world.spec.inner_steps
    residual, read_residual = ann.feedback.residual, again.feedback.residual
    assert residual.keys() == read_residual.keys()
    assert all(torch.equal(residual[k], read_residual[k]) for k in residual)


def test_bundles_recompute_and_a_changed_loss_is_caught(played: Played) -> None:
    for bundle in played.bundles:
        assert recompute(bundle).identical
    r = played.bundles[-1].collab[0]
    uid = played.world.uids["bob"]
    forged = r.model_copy(update={"measured": {**r.measured, uid: r.measured[uid].model_copy(
        update={"held_out_after": r.measured[uid].held_out_before * 0.5})}})  # fmt: skip
    report = recompute(played.bundles[-1].model_copy(update={"collab": [forged]}))
    assert not report.identical and any("scores" in d for d in report.differences)


def test_miners_follow_the_checkpoint_the_chain_anchors(played: Played) -> None:
    from crucible.collab.checkpoint import anchored_checkpoint

    w = played.world
    checkpoint, opens = w.miner("ann").current_checkpoint()
    last = played.bundles[-1].collab[0]
    assert (checkpoint, opens) == (last.next_checkpoint, last.round_index + 1)
    aggregator = {w.keys["val"].ss58_address}
    mg = w.node.metagraph(1)  # the aggregator's commitment anchors its newest bundle
    assert anchored_checkpoint(mg, w.documents, w.spec.key, aggregator) == (checkpoint, opens)
    # the second validator's anchored bundle names the very same checkpoint; a stranger's nothing
    assert anchored_checkpoint(mg, w.documents, w.spec.key, {w.keys["val2"].ss58_address}) == (
        checkpoint, opens)  # fmt: skip
    assert anchored_checkpoint(mg, w.documents, w.spec.key, {w.keys["ann"].ss58_address}) is None


def test_two_validators_compute_the_same_next_checkpoint(played: Played) -> None:
    for mine, theirs in zip(played.bundles, played.others, strict=True):
        a, b = mine.collab[0], theirs.collab[0]
        assert a.next_checkpoint == b.next_checkpoint and a.next_digest == b.next_digest
        assert a.measured == b.measured and a.verdicts == b.verdicts
        assert a.pointer_id and b.pointer_id is None  # only the aggregator signs the pointer
        assert b.aggregator_checkpoint == a.next_checkpoint  # and the other checks it agrees


def test_a_validator_that_joins_late_scores_from_the_published_checkpoint(played: Played) -> None:
    from crucible.collab.checkpoint import checkpoint_id
    from crucible.collab.shared_model import genesis_params

    mine, late = played.bundles[-1].collab[0], played.late.collab[0]
    spec = played.world.spec
    genesis = checkpoint_id(genesis_params(spec), None, competition=spec.key)
    assert late.round_index == mine.round_index and late.base_checkpoint == mine.base_checkpoint
    assert late.base_checkpoint != genesis  # its own would have been checkpoint 0: all "stale"
    assert late.verdicts == mine.verdicts and late.next_checkpoint == mine.next_checkpoint
    assert honest_verdicts_hold([late.verdicts[played.world.uids[n]] for n in HONEST])


def test_verify_reruns_the_round_from_the_store_and_checks_the_chain(played: Played) -> None:
    from crucible.validator.collab_verify import check_collab_inputs, reevaluate_collab

    w = played.world
    r = played.bundles[-1].collab[0]
    assert reevaluate_collab(r, w.spec, w.store, w.train, w.eval) == []
    assert check_collab_inputs([r], w.node) == []
    forged = r.model_copy(update={"selected": r.selected[:1]})
    assert any("not the bundle's next checkpoint" in d
               for d in reevaluate_collab(forged, w.spec, w.store, w.train, w.eval))  # fmt: skip
    moved = r.model_copy(update={"data_block_hash": "0x" + "ab" * 32})
    assert check_collab_inputs([moved], w.node) and reevaluate_collab(
        moved, w.spec, w.store, w.train, w.eval
    )


def test_explain_walks_a_collab_uid_from_its_measured_losses_to_its_weight(played: Played) -> None:
    from crucible.validator.explain import explain

    bundle = played.bundles[-1]
    r = bundle.collab[0]
    ann, zed = played.world.uids["ann"], played.world.uids["zed"]
    text = explain(ann, bundle).to_text()
    assert f"{played.world.spec.key} round {r.round_index}: ok" in text and "(aggregated)" in text
    assert (
        f"held-out {r.measured[ann].held_out_before:.4f} → {r.measured[ann].held_out_after:.4f}"
        in text
    )
    assert f"weight {bundle.weights[ann]:.4f}" in text
    rider = explain(zed, bundle).to_text()
    assert r.verdicts[zed] in rider and "share of the collab weights 0.0000" in rider
