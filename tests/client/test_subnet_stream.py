"""``Subnet.stream``: one miner's answer, best first by incentive and measured latency, the next
one on any failure before the first token — against real miners on a real local chain."""

from __future__ import annotations

import pytest

from crucible.chain.interface import Endpoint, Neuron
from crucible.client.ranking import LatencyBook
from crucible.client.subnet import Delta, Finished, NoAnswer, Started, competition_of
from crucible.protocol.anchor import anchor_text
from crucible.protocol.collab import PayloadCommitment
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.messages import SamplingParams
from tests.client.world import World


def test_the_stream_moves_past_the_dead_and_the_lying_miner_before_the_first_token(
    world: World,
) -> None:
    subnet = world.subnet()
    items = list(subnet.stream("Thou art", max_new_tokens=8))
    started, deltas, finished = items[0], items[1:-1], items[-1]
    assert isinstance(started, Started) and isinstance(finished, Finished)
    u = world.uids
    assert started.uid == u["good"] and started.prompt_tokens == 2
    assert "unreachable" in started.attempts[u["dead"]]
    assert "another model than its on-chain commitment" in started.attempts[u["liar"]]
    assert started.attempts[u["good"]] == "ok"
    assert all(isinstance(d, Delta) for d in deltas) and finished.completion_tokens == 8
    answer = world.subnet(top_k=8).ask("Thou art", max_tokens=8)
    assert "".join(d.text for d in deltas) == answer.text and answer.prompt_tokens == 2


def test_miners_that_just_failed_are_tried_last(world: World) -> None:
    subnet = world.subnet()
    list(subnet.stream("Thou", max_new_tokens=1))  # dead and liar fail once each
    order = [n.uid for n in subnet.ranked()]
    u = world.uids
    assert order[:2] == [u["good"], u["twin"]] and set(order[2:]) == {u["dead"], u["liar"]}
    started = next(iter(subnet.stream("Thou", max_new_tokens=1)))
    assert started.attempts == {u["good"]: "ok"}


def test_the_sdk_streams_what_it_asks_for(world: World) -> None:
    items = list(
        world.subnet().stream(
            "Once upon a time", max_new_tokens=6, logprobs=2, echo=True,
            sampling=SamplingParams(temperature=0.7, seed=4),
        )
    )  # fmt: skip
    started = items[0]
    assert started.prompt_text == "Once upon a time"
    assert [t.logprob for t in started.prompt_logprobs][0] is None
    deltas = [i for i in items if isinstance(i, Delta)]
    assert all(len(d.logprobs) == 1 and len(d.logprobs[0].top) == 2 for d in deltas)


def test_no_miner_of_a_competition_is_a_clear_error(world: World) -> None:
    with pytest.raises(NoAnswer, match="no miner of competition small@1"):
        list(world.subnet().stream("Thou", competition="small@1", max_new_tokens=1))


def _neuron(uid: int, incentive: float) -> Neuron:
    return Neuron(
        uid=uid, hotkey=f"hk{uid}", coldkey="ck", stake_rao=0, active=True,
        validator_permit=False, last_update=0, block_at_registration=0, consensus=0.0,
        incentive=incentive, dividends=0.0, validator_trust=0.0, emission_rao=0,
        endpoint=Endpoint("127.0.0.1", 1),
    )  # fmt: skip


def test_ranking_weighs_incentive_by_measured_latency_and_cools_down_failures() -> None:
    """Hand-computed: speed = 1 / (1 + ttft / 2 s). uid 0: incentive 0.5, ttft 2 s → 0.25;
    uid 1: 0.4, unmeasured → 0.4; uid 2: 0.3, ttft 0.2 s → 0.273. Then uid 1 fails: it
    cools down (1 s after a first failure) and goes last; a success brings it back."""
    now = [100.0]
    book = LatencyBook(clock=lambda: now[0])
    neurons = [_neuron(0, 0.5), _neuron(1, 0.4), _neuron(2, 0.3)]
    book.record("hk0", 2.0)
    book.record("hk2", 0.2)
    assert [n.uid for n in book.order(neurons)] == [1, 2, 0]
    book.failed("hk1")
    assert [n.uid for n in book.order(neurons)] == [2, 0, 1]
    now[0] += 1.5  # the cool-down is over: back by its score
    assert [n.uid for n in book.order(neurons)] == [1, 2, 0]
    book.failed("hk1")
    book.failed("hk1")  # a third failure in a row: 4 s
    now[0] += 3.0
    assert book.cooling("hk1") and book.order(neurons)[-1].uid == 1
    book.record("hk1", 0.1)
    assert not book.cooling("hk1") and book.order(neurons)[0].uid == 1


def test_only_model_commitments_are_asked_for_answers() -> None:
    """Validators (a bundle anchor) and collab miners (a payload commitment) serve endpoints
    too, but no answers: the client never picks them."""
    model = str(ModelCommitment("tiny@1", "local", "ab" * 32, "cd" * 16))
    anchor = anchor_text("ef" * 32)
    payload = str(PayloadCommitment("collab@1", 7, "local", "ab" * 32, "cd" * 16))
    assert competition_of(model) == "tiny@1"
    assert [competition_of(c) for c in (anchor, payload, "tiny@1:garbage", "", None)] == [None] * 5
