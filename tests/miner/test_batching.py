"""Continuous batching gives the answers one-at-a-time serving gives, request by request.

Real tiny models (both architectures), the competition's tokenizer, the real ``Batcher`` engine
thread against ``run_alone`` (the unbatched path), and a real miner server run both ways.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from crucible.client.transport import SignedClient, Target
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, ServingLimits, build_miner_server
from crucible.models.build import ModelShape, build_config, build_model
from crucible.protocol.messages import (
    GENERATE_PATH,
    LOGPROBS_PATH,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    SamplingParams,
)
from crucible.server import Access, CapacityConfig, RoutePolicy, WorkCancelled, run_in_thread
from crucible.server.batcher import Batcher, run_alone, score_alone
from crucible.server.sequence import Decoding, Sequence
from crucible.server.textstream import Vocabulary
from tests.server.conftest import Net, open_net

CONTEXT = 32  # short, so long prompts and long answers run past it (window mode)
TOKENIZER = specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with open_net(Path(tmp_path_factory.mktemp("batching-chain"))) as opened:
        yield opened


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary(load_tokenizer(TOKENIZER))


def _model(arch: str, seed: int = 1) -> torch.nn.Module:
    shape = ModelShape(arch, 8192, CONTEXT, layers=2, hidden=32, heads=2, ffn=64)
    return build_model(build_config(shape, eos_token_id=0), seed=seed)


# prompt, decoding: greedy and sampled, stops, logprobs, echo, past the context either way
CASES = [
    ("Thou art", Decoding(max_new_tokens=20, logprobs=3, echo=True)),
    ("It is a truth universally acknowledged", Decoding(max_new_tokens=40)),  # 7 + 40 > 32
    ("word " * 40, Decoding(max_new_tokens=6, temperature=0.9, top_p=0.9, seed=7)),  # > 32
    ("Hello", Decoding(max_new_tokens=12, temperature=1.0, top_k=50, seed=3, logprobs=0)),
    ("Once upon", Decoding(max_new_tokens=1)),
    ("a b c d e f g", Decoding(max_new_tokens=30, temperature=0.7, seed=11, stop=("e", "th"))),
]


def _events(vocab: Vocabulary, prompt: str, decoding: Decoding, sink: list) -> Sequence:
    return Sequence(
        vocab.encode(prompt),
        decoding,
        vocab,
        commitment="c",
        sink=lambda kind, message: sink.append((kind, message)),
    )


def _run_batched(model, sequences: list[Sequence], stagger: int = 0) -> None:
    """All sequences through one Batcher; with ``stagger``, each later one arrives mid-flight."""
    batcher, done = Batcher(idle_s=0.2), threading.Semaphore(0)
    try:
        for i, seq in enumerate(sequences):
            if stagger and i:
                first = sequences[0]
                while len(first.new) < min(stagger * i, 5) and not first.done:
                    threading.Event().wait(0.001)
            batcher.submit_generate(model, CONTEXT, seq, done.release)
        for _ in sequences:
            assert done.acquire(timeout=120)
    finally:
        batcher.close()


def _tokens(events: list) -> list[int]:
    return [t for kind, m in events if kind == "delta" for t in m.token_ids]


def _logprob_values(events: list) -> list[float]:
    values = []
    for kind, m in events:
        if kind == "start" and m.prompt_logprobs:
            values += [t.logprob for t in m.prompt_logprobs if t.logprob is not None]
        if kind == "delta" and m.logprobs:
            values += [t.logprob for t in m.logprobs] + [
                a.logprob for t in m.logprobs for a in t.top
            ]
    return values


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
@pytest.mark.parametrize("stagger", [0, 1])
def test_batched_generation_equals_one_at_a_time_token_for_token(
    vocab: Vocabulary, arch: str, stagger: int
) -> None:
    model = _model(arch)
    alone = []
    for prompt, decoding in CASES:
        events: list = []
        run_alone(model, _events(vocab, prompt, decoding, events), CONTEXT)
        alone.append(events)
    batched = [[] for _ in CASES]
    sequences = [_events(vocab, p, d, batched[i]) for i, (p, d) in enumerate(CASES)]
    _run_batched(model, sequences, stagger)
    for one, many in zip(alone, batched, strict=True):
        assert _tokens(many) == _tokens(one)  # greedy and seeded samples alike
        assert [k for k, _ in many] == [k for k, _ in one]
        text_one = "".join(m.text for k, m in one if k == "delta")
        assert "".join(m.text for k, m in many if k == "delta") == text_one
        assert many[-1][1].finish_reason == one[-1][1].finish_reason
        got, want = _logprob_values(many), _logprob_values(one)
        assert len(got) == len(want) and all(
            abs(a - b) < 1e-5 for a, b in zip(got, want, strict=True)
        )
    assert batched[5][-1][1].finish_reason == "stop" or "e" not in "".join(
        m.text for k, m in batched[5] if k == "delta"
    )


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_batched_scoring_is_within_1e5_of_scoring_alone(arch: str) -> None:
    model = _model(arch, seed=2)
    rows = [list(range(5, 5 + n)) for n in (2, 7, 19, CONTEXT)]
    results: dict[int, list[float]] = {}
    batcher, done = Batcher(idle_s=0.2), threading.Semaphore(0)
    try:
        for i, ids in enumerate(rows):
            batcher.submit_score(
                model,
                ids,
                lambda r, i=i: results.__setitem__(i, r),
                threading.Event(),
                done.release,
            )
        for _ in rows:
            assert done.acquire(timeout=60)
    finally:
        batcher.close()
    for i, ids in enumerate(rows):
        want = score_alone(model, ids)
        assert len(results[i]) == len(want) == len(ids) - 1
        assert max(abs(a - b) for a, b in zip(results[i], want, strict=True)) < 1e-5


def test_a_cancelled_generation_leaves_the_batch_at_the_next_step(vocab: Vocabulary) -> None:
    model = _model("LlamaForCausalLM")
    kept, dropped = [], []
    keep = _events(vocab, "Thou art", Decoding(max_new_tokens=25), kept)
    drop = _events(vocab, "It is", Decoding(max_new_tokens=1000), dropped)
    batcher, done = Batcher(idle_s=0.2), threading.Semaphore(0)
    try:
        batcher.submit_generate(model, CONTEXT, drop, done.release)
        batcher.submit_generate(model, CONTEXT, keep, done.release)
        while len(drop.new) < 3:
            threading.Event().wait(0.001)
        drop.cancel.set()
        assert done.acquire(timeout=60) and done.acquire(timeout=60)
    finally:
        batcher.close()
    kind, error = dropped[-1]
    assert kind == "error" and isinstance(error, WorkCancelled) and len(drop.new) < 1000
    assert "abandoned" in str(error)
    alone: list = []
    run_alone(model, _events(vocab, "Thou art", Decoding(max_new_tokens=25), alone), CONTEXT)
    assert _tokens(kept) == _tokens(alone)  # the row that stayed was not disturbed


class _BreaksOnLongInputs(torch.nn.Module):
    """Wraps a model; any forward over more than 12 positions raises, as a broken model might."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_output_embeddings(self) -> None:
        return None  # the full-logits path

    def forward(self, input_ids: torch.Tensor, **kwargs: object):
        if input_ids.shape[1] > 12:
            raise RuntimeError("this model breaks on long inputs")
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_request_that_breaks_the_model_fails_alone(vocab: Vocabulary) -> None:
    model = _BreaksOnLongInputs(_model("LlamaForCausalLM"))
    good, bad = [], []
    ok = _events(vocab, "Thou art", Decoding(max_new_tokens=5), good)
    broken = _events(vocab, "word " * 20, Decoding(max_new_tokens=5), bad)
    _run_batched(model, [ok, broken])
    assert bad[-1][0] == "error" and "breaks on long inputs" in str(bad[-1][1])
    assert good[-1][0] == "end" and len(_tokens(good)) == 5


# -- through a real server, both ways -------------------------------------------------------


def _serve(net: Net, batching: bool):
    tok = load_tokenizer(TOKENIZER)
    served = ServedModel(_model("LlamaForCausalLM", seed=4), tok, "tiny@1", None, None, CONTEXT)
    open_limits = RoutePolicy(access=Access.SIGNED, rate_per_s=1e6, burst=10**6, max_concurrent=64)
    server = build_miner_server(
        net.server_kp, net.chain, net.netuid, ModelSlot(served),
        policies={GENERATE_PATH: open_limits, LOGPROBS_PATH: open_limits},
        limits=ServingLimits(batching=batching),
    )  # fmt: skip
    return server


REQUESTS = [
    GenerateRequest(prompt="Thou art", max_new_tokens=12),
    GenerateRequest(prompt="It is a truth", max_new_tokens=30, logprobs=2, echo=True),
    GenerateRequest(
        prompt="Once", max_new_tokens=8, sampling=SamplingParams(temperature=0.8, seed=9)
    ),
    GenerateRequest(token_ids=[5, 6, 7, 8], max_new_tokens=5, stop=[" "]),
]


async def _ask_all(net: Net, url: str) -> tuple[list, list]:
    target = Target(net.server_kp.ss58_address, url)
    async with SignedClient(net.miner_kp, timeout_s=60) as client:
        answers = await asyncio.gather(
            *(client.call(target, GENERATE_PATH, r, GenerateResponse) for r in REQUESTS * 3)
        )
        scores = await asyncio.gather(
            *(
                client.call(target, LOGPROBS_PATH, LogprobsRequest(token_ids=ids), LogprobsResponse)
                for ids in ([1, 2, 3], list(range(10, 40)), [7, 7])
            )
        )
    return answers, scores


def test_a_batched_server_answers_what_a_one_at_a_time_server_answers(net: Net) -> None:
    results = {}
    for batching in (False, True):
        server = _serve(net, batching)
        with run_in_thread(server.app) as running:
            results[batching] = asyncio.run(_ask_all(net, running.url))
    (answers_alone, scores_alone), (answers, scores) = results[False], results[True]
    assert all(r.ok for r in answers + scores + answers_alone + scores_alone)
    for one, many in zip(answers_alone, answers, strict=True):
        a, b = one.value, many.value
        assert (a.token_ids, a.text, a.finish_reason, a.prompt_tokens) == (
            b.token_ids, b.text, b.finish_reason, b.prompt_tokens,
        )  # fmt: skip
        assert a.prompt_text == b.prompt_text
    for one, many in zip(scores_alone, scores, strict=True):
        assert (
            max(
                abs(x - y)
                for x, y in zip(one.value.logprobs_nats, many.value.logprobs_nats, strict=True)
            )
            < 1e-5
        )
    echo = answers[1].value
    assert echo.prompt_text == "It is a truth" and echo.prompt_tokens == len(echo.prompt_logprobs)
    assert echo.prompt_logprobs[0].logprob is None and len(echo.logprobs) == len(echo.token_ids)


def test_every_outcome_gives_its_capacity_slot_back(net: Net) -> None:
    """Finished, ended on its first token, refused after admission, abandoned: each kind, more
    times than there are slots, and the server still admits and answers (a request that ended
    on its first token used to keep its slot, so two of them stalled a two-slot server)."""
    tok = load_tokenizer(TOKENIZER)
    served = ServedModel(_model("LlamaForCausalLM", seed=4), tok, "tiny@1", None, None, CONTEXT)
    policy = RoutePolicy(
        access=Access.SIGNED, rate_per_s=1e6, burst=10**6, max_concurrent=64, timeout_s=10
    )
    server = build_miner_server(
        net.server_kp, net.chain, net.netuid, ModelSlot(served),
        policies={GENERATE_PATH: policy},
        limits=ServingLimits(capacity=CapacityConfig(slots=2, public_slots=1, max_waiting=64)),
    )  # fmt: skip
    outcomes = [
        GenerateRequest(prompt="Thou", max_new_tokens=1),  # ends on its first token
        GenerateRequest(token_ids=[8191, 1 << 19], max_new_tokens=3),  # refused once admitted
        GenerateRequest(token_ids=[1] * 40, max_new_tokens=2, echo=True, logprobs=1),  # refused
        GenerateRequest(prompt="It is", max_new_tokens=4),  # finishes
    ] * 3

    async def run(url: str) -> list:
        target = Target(net.server_kp.ss58_address, url)
        async with SignedClient(net.miner_kp, timeout_s=30) as client:
            first = await asyncio.gather(
                *(client.call(target, GENERATE_PATH, r, GenerateResponse) for r in outcomes)
            )
            after = [
                await client.call(target, GENERATE_PATH, outcomes[-1], GenerateResponse)
                for _ in range(3)
            ]
        return [*first, *after]

    with run_in_thread(server.app) as running:
        results = asyncio.run(run(running.url))
    codes = [r.code for r in results]
    assert codes[:4] == ["ok", "malformed", "limit_exceeded", "ok"], codes
    assert codes[-3:] == ["ok", "ok", "ok"], codes
