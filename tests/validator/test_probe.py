"""The serving probe judges each answer, and only the miner's doing counts against the miner."""

from __future__ import annotations

import numpy as np
import pytest

from crucible.chain.interface import ServeEndpoint
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.models.build import ModelShape, build_config, build_model
from crucible.protocol.competition import load_competitions
from crucible.protocol.messages import LOGPROBS_PATH, LogprobsResponse
from crucible.scoring.sampling import EvalPool
from crucible.server import Access, RoutePolicy, run_in_thread
from crucible.validator.probe import ProbePlan, compare_answer, probe_miners, probe_windows
from tests.conftest import keypair

SPEC = load_competitions(specs_dir())["tiny"]


def test_an_answer_is_checked_for_shape_before_any_arithmetic() -> None:
    ids, expected = [1, 2, 3, 4], [-1.0, -2.0, -3.0]
    good = LogprobsResponse(token_ids=ids, logprobs_nats=[-1.0, -2.0, -3.0004])
    assert compare_answer(ids, expected, good) is None
    short = LogprobsResponse(token_ids=ids[:-1], logprobs_nats=expected[:-1])
    assert compare_answer(ids, expected, short) == "answered for other token ids than asked"
    off = LogprobsResponse(token_ids=ids, logprobs_nats=[-1.0, -2.0, -3.1])
    assert "serves a different model" in compare_answer(ids, expected, off)


def test_probe_windows_are_drawn_from_the_secret_and_mix_both_identities() -> None:
    pool = EvalPool.from_documents([("a", list(range(500))), ("b", list(range(300)))])
    one, same, other = (probe_windows(pool, 64, 6, seed) for seed in (7, 7, 8))
    assert one.sample_ids == same.sample_ids and one.sample_ids != other.sample_ids
    assert one.windows.shape == (6, 64) and set(one.as_stranger) == {True, False}


@pytest.fixture
def miner(node, neuron_factory):
    """A real miner server whose logprobs route admits registered callers only."""
    m = neuron_factory("probe-miner")
    tok = load_tokenizer(specs_dir() / SPEC.model.tokenizer)
    model = build_model(build_config(ModelShape(layers=1, hidden=32, heads=2, ffn=64)))
    served = ServedModel(model, tok, SPEC.key, "tiny@1:x", 1, SPEC.model.sequence_length)
    app = build_miner_server(
        m.hotkey, node, 1, ModelSlot(served), metagraph_refresh_s=0.2,
        policies={LOGPROBS_PATH: RoutePolicy(access=Access.REGISTERED, timeout_s=15)},
    ).app  # fmt: skip
    running = run_in_thread(app)
    node.submit(
        ServeEndpoint(netuid=1, ip="127.0.0.1", port=running.port), m.hotkey
    ).raise_for_failure()
    yield m, model
    running.stop()


def test_a_probe_refused_because_this_validator_is_not_registered_blames_nobody(
    node, miner
) -> None:
    m, model = miner
    neurons = {n.uid: n for n in node.metagraph(1).neurons}
    windows = np.arange(2 * 16, dtype=np.int64).reshape(2, 16) % 100
    plan = ProbePlan(1, ["a@0", "b@0"], windows, [False, False])  # both from our own hotkey
    unregistered = keypair("probe-validator-not-registered")
    outcome = probe_miners(
        unregistered, neurons, {m.uid: model}, plan, stranger=keypair("s"), timeout_s=10
    )
    assert m.uid not in outcome.failed
    assert "this validator may not call it" in outcome.inconclusive[m.uid]
    # a stranger refused in the same way is the miner refusing the public: that counts
    plan = ProbePlan(1, ["a@0", "b@0"], windows, [True, True])
    outcome = probe_miners(
        unregistered, neurons, {m.uid: model}, plan, stranger=keypair("s"), timeout_s=10
    )
    assert "not_registered" in outcome.failed[m.uid]


def test_no_endpoint_fails_and_every_miner_unreachable_is_inconclusive(
    node, neuron_factory
) -> None:
    a, b = neuron_factory("probe-a"), neuron_factory("probe-b")
    for n in (a, b):  # endpoints where nothing listens: this validator cannot reach anyone
        node.submit(ServeEndpoint(netuid=1, ip="127.0.0.1", port=9), n.hotkey).raise_for_failure()
    neurons = {n.uid: n for n in node.metagraph(1).neurons}
    model = build_model(build_config(ModelShape(layers=1, hidden=32, heads=2, ffn=64)))
    plan = ProbePlan(1, ["a@0"], np.arange(16, dtype=np.int64).reshape(1, 16), [False])
    outcome = probe_miners(
        keypair("v"),
        neurons,
        {a.uid: model, b.uid: model},
        plan,
        stranger=keypair("s"),
        timeout_s=5,
    )
    assert not outcome.failed and set(outcome.inconclusive) == {a.uid, b.uid}
    assert all("every miner unreachable" in why for why in outcome.inconclusive.values())
