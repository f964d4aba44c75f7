"""OpenAI's API end to end with the official ``openai`` package: a real gateway on loopback, in
front of real miners on a real local chain (``tests.client.world``), on a validator's hotkey.

The best-incentive miner is dead and the next one lies about its commitment, so every answer
here also proves the gateway moved on before the first token and checked what it was given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from crucible.client.openai_api import CHAT_STOPS, ChatMessage, render_chat
from crucible.client.transport import Target, query
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.protocol.messages import LOGPROBS_PATH, LogprobsRequest, LogprobsResponse
from crucible.server import RunningServer
from tests.client.world import API_KEY, World
from tests.conftest import keypair

TOKENIZER = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
PROMPT = "It is a truth universally acknowledged"


@pytest.fixture(scope="module")
def gateway(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    usage = tmp_path_factory.mktemp("gateway") / "usage.jsonl"
    world.usage_log = usage
    with world.start_gateway(world.validator, usage) as running:
        yield running


@pytest.fixture(scope="module")
def client(gateway: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def greedy(client: openai.OpenAI) -> str:
    completion = client.completions.create(
        model="crucible-subnet", prompt=PROMPT, max_tokens=12, temperature=0
    )
    return completion.choices[0].text


def _prompt_tokens(text: str) -> int:
    return len(TOKENIZER.encode(text))


def test_models_lists_the_served_competitions_and_unknown_models_are_404(
    client: openai.OpenAI,
) -> None:
    assert [m.id for m in client.models.list().data] == ["crucible-subnet", "tiny@1"]
    assert client.models.retrieve("tiny@1").id == "tiny@1"
    for call in (
        lambda: client.completions.create(model="gpt-4", prompt="Thou", max_tokens=1),
        lambda: client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=1
        ),
        lambda: client.models.retrieve("gpt-4"),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "model_not_found"


def test_a_completion_counts_its_prompt_and_comes_from_an_honest_miner(
    client: openai.OpenAI, world: World, greedy: str
) -> None:
    completion = client.completions.create(
        model="tiny@1", prompt=PROMPT, max_tokens=12, temperature=0
    )
    assert completion.choices[0].text == greedy and greedy
    assert completion.usage.prompt_tokens == _prompt_tokens(PROMPT) > 0
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    served = completion.model_extra["crucible"]["served_by"][0]
    assert served["uid"] in (world.uids["good"], world.uids["twin"])


def test_a_streamed_completion_is_the_same_text_in_pieces_with_usage_at_the_end(
    client: openai.OpenAI, greedy: str
) -> None:
    chunks = list(
        client.completions.create(
            model="crucible-subnet", prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len([t for t in texts if t]) > 1 and "".join(texts) == greedy
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == _prompt_tokens(PROMPT)
    assert chunks[-1].usage.completion_tokens == 12


def test_stop_ends_the_text_before_the_stop_sequence(client: openai.OpenAI, greedy: str) -> None:
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
    cut = greedy.find(stop)
    for stream in (False, True):
        answer = client.completions.create(
            model="crucible-subnet", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop],
            stream=stream,
        )  # fmt: skip
        chunks = list(answer) if stream else [answer]
        text = "".join(c.choices[0].text for c in chunks)
        assert text == greedy[:cut] and stop not in text
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_zero_with_echo_scores_the_prompt_like_the_miners_logprobs(
    client: openai.OpenAI, world: World
) -> None:
    completion = client.completions.create(
        model="crucible-subnet", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1
    )
    choice, ids = completion.choices[0], TOKENIZER.encode(PROMPT)
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 0 and completion.usage.prompt_tokens == len(ids)
    lp = choice.logprobs
    assert lp.tokens == [TOKENIZER.decode([i]) for i in ids] and lp.token_logprobs[0] is None
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert all(len(top) == 1 for top in lp.top_logprobs[1:])
    good = world.hotkeys["good"]
    target = Target(good.ss58_address, world.servers["good"].url)
    direct = query(
        keypair("scorer"), [target], LOGPROBS_PATH, LogprobsRequest(token_ids=ids), LogprobsResponse
    )[0]
    assert direct.ok
    for got, want in zip(lp.token_logprobs[1:], direct.value.logprobs_nats, strict=True):
        assert abs(got - want) < 1e-5


def test_echo_with_new_tokens_gives_prompt_then_completion_logprobs(
    client: openai.OpenAI, greedy: str
) -> None:
    completion = client.completions.create(
        model="crucible-subnet", prompt=PROMPT, max_tokens=12, temperature=0, echo=True, logprobs=2
    )
    choice = completion.choices[0]
    assert choice.text == PROMPT + greedy
    lp = choice.logprobs
    assert len(lp.tokens) == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert all(v is None or v <= 0 for v in lp.token_logprobs)
    assert all(len(top) <= 2 for top in lp.top_logprobs if top is not None)
    completion_offsets = lp.text_offset[completion.usage.prompt_tokens :]
    assert completion_offsets[0] == len(PROMPT)


def test_the_same_seed_gives_the_same_sample_and_n_gives_n_choices(client: openai.OpenAI) -> None:
    def sample(seed: int, n: int = 1):
        return client.completions.create(
            model="crucible-subnet", prompt=["Thou art", "Once upon"], max_tokens=8,
            temperature=1.0, top_p=0.9, seed=seed, n=n,
        )  # fmt: skip

    first, again, other = sample(7), sample(7), sample(8)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert [c.text for c in first.choices] != [c.text for c in other.choices]
    three = sample(7, n=3)
    assert [c.index for c in three.choices] == list(range(6))
    assert three.choices[0].text == first.choices[0].text  # choice 0 keeps the seed
    assert three.usage.prompt_tokens == first.usage.prompt_tokens  # counted once per prompt
    assert 6 <= three.usage.completion_tokens <= 6 * 8


def test_a_streamed_n_interleaves_choices_by_index(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="crucible-subnet", prompt="Thou art", max_tokens=6, temperature=1.0, seed=3,
            n=2, stream=True,
        )
    )  # fmt: skip
    whole = client.completions.create(
        model="crucible-subnet", prompt="Thou art", max_tokens=6, temperature=1.0, seed=3, n=2
    )
    for index in (0, 1):
        text = "".join(c.choices[0].text for c in chunks if c.choices[0].index == index)
        assert text == whole.choices[index].text


def test_chat_completions_use_the_documented_template_and_stream_the_same_reply(
    client: openai.OpenAI,
) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Who art thou?"}]},
    ]
    reply = client.chat.completions.create(
        model="crucible-subnet", messages=messages, max_tokens=10, temperature=0
    )
    prompt = render_chat([ChatMessage.model_validate(m) for m in messages])
    assert prompt == "System: You are terse.\n\nUser: Who art thou?\n\nAssistant:"
    assert reply.usage.prompt_tokens == _prompt_tokens(prompt)
    message = reply.choices[0].message
    assert message.role == "assistant" and message.content == message.content.lstrip()
    assert not any(stop in message.content for stop in CHAT_STOPS)
    chunks = list(
        client.chat.completions.create(
            model="crucible-subnet", messages=messages, max_tokens=10, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason


def test_chat_logprobs_give_each_tokens_alternatives(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="crucible-subnet", messages=[{"role": "user", "content": "Hello"}], max_tokens=4,
        temperature=0, logprobs=True, top_logprobs=3,
    )  # fmt: skip
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 4
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    assert all(t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in content)  # greedy: the top


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": 65}, "max_tokens"),
        ({"suffix": "x"}, "suffix"),
        ({"logprobs": 6}, "logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
    ],
)
def test_bad_parameters_are_400s_in_openais_shape_naming_the_param(
    client: openai.OpenAI, kwargs: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(
            model="crucible-subnet", prompt="Thou", **{"max_tokens": 2, **kwargs}
        )
    body = info.value.body
    assert body["param"] == param and body["type"] == "invalid_request_error" and body["code"]


def test_a_wrong_key_is_401(gateway: RunningServer) -> None:
    wrong = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key="wrong-key-wrong-key", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="crucible-subnet", prompt="x", max_tokens=1)


def test_a_gateway_on_a_validator_hotkey_is_not_throttled_like_a_stranger(
    client: openai.OpenAI, world: World, tmp_path: Path
) -> None:
    """Miners give strangers 2 generations/s (burst 4) per hotkey; the validator tier's own
    allowance carries a gateway's traffic. The same 12 quick requests from a gateway on an
    unregistered hotkey run out once every miner has throttled it."""
    for _ in range(12):
        assert client.completions.create(
            model="crucible-subnet", prompt="Thou", max_tokens=1
        ).choices
    with world.start_gateway(keypair("stranger-gateway"), tmp_path / "usage.jsonl") as stranger:
        other = openai.OpenAI(base_url=f"{stranger.url}/v1", api_key=API_KEY, max_retries=0)
        failures = []
        for _ in range(12):
            try:
                other.completions.create(model="crucible-subnet", prompt="Thou", max_tokens=1)
            except openai.APIStatusError as exc:
                failures.append(exc)
    assert failures and all(f.status_code == 503 for f in failures)
    assert "rate" in str(failures[0].body["message"])


def test_the_usage_log_records_who_asked_and_who_answered(
    world: World, client: openai.OpenAI
) -> None:
    client.completions.create(model="crucible-subnet", prompt="Thou", max_tokens=2, temperature=0)
    entries = [json.loads(line) for line in world.usage_log.read_text().splitlines()]
    last = [e for e in entries if e["ok"]][-1]
    assert last["key"] == "tester" and last["prompt_tokens"] == _prompt_tokens("Thou")
    assert last["served_by"][0]["uid"] in (world.uids["good"], world.uids["twin"])
