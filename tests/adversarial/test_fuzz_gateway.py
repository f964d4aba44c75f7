"""The OpenAI-compatible gateway answers bad input with a 4xx JSON error, never a 500.

A real chain, a real miner serving a real tiny model on 127.0.0.1 with its commitment on chain,
the real ``Subnet`` client and the gateway in front of it: fuzzed requests with a valid API key
on ``/v1/completions``, ``/v1/chat/completions`` (streamed or not, every parameter the gateway
serves or refuses) and ``/v1/models`` (and the wrong methods and paths around them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.chain.interface import ServeEndpoint, SetCommitment
from crucible.client.gateway import ApiKeys, build_gateway
from crucible.client.subnet import Subnet
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, ServingLimits, build_miner_server
from crucible.models.build import tiny_model
from crucible.protocol.messages import GENERATE_PATH, GENERATE_STREAM_PATH, INFO_PATH
from crucible.server import Access, RoutePolicy, RunningServer, run_in_thread
from tests.server.conftest import open_net
from tests.server.rawhttp import RawHttp

KEY = "fuzz-key-0123456789abcdef"
MAX_TOKENS = 8  # the gateway's and the miner's limit: valid requests stay cheap
COMMITMENT = "tiny@1:local:" + "a" * 64 + ":" + "b" * 32


@dataclass(frozen=True)
class Gateway:
    server: RunningServer
    http: RawHttp

    def send(self, method: str, path: str, body: bytes, key: str = KEY) -> tuple[int, dict]:
        """(status, JSON body); a stream comes back as ``{"stream": [chunk, …]}``."""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        status, raw = self.http.send(method, path, body, headers)
        if status == 200 and raw.startswith(b"data: "):
            events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
            assert events[-1] == b"[DONE]" or b'"error"' in events[-1], raw[-300:]
            return status, {"stream": [json.loads(e) for e in events if e != b"[DONE]"]}
        return status, json.loads(raw)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    served = ServedModel(tiny_model(vocab_size=8192), tok, "tiny@1", COMMITMENT, 1, 64)
    # the gateway's hotkey may call this miner as often as the fuzz needs
    trusted = RoutePolicy(access=Access.SIGNED, rate_per_s=1e6, burst=10**6, max_concurrent=64)
    with open_net(Path(tmp_path_factory.mktemp("fuzz-gateway-chain"))) as net:
        net.chain.submit(
            SetCommitment(netuid=net.netuid, data=COMMITMENT), net.server_kp
        ).raise_for_failure()
        miner = build_miner_server(
            net.server_kp,
            net.chain,
            net.netuid,
            ModelSlot(served),
            policies={GENERATE_PATH: trusted, GENERATE_STREAM_PATH: trusted, INFO_PATH: trusted},
            limits=ServingLimits(max_new_tokens=MAX_TOKENS, public_max_new_tokens=MAX_TOKENS),
        )
        with run_in_thread(miner.app) as running_miner:
            net.chain.submit(
                ServeEndpoint(netuid=net.netuid, ip="127.0.0.1", port=running_miner.port),
                net.server_kp,
            ).raise_for_failure()
            subnet = Subnet(net.chain, net.netuid, net.miner_kp, top_k=1, metagraph_ttl_s=60)
            app = build_gateway(
                subnet,
                ApiKeys({KEY: "fuzzer"}),
                rate_per_s=1e6,
                burst=10**6,
                max_tokens=MAX_TOKENS,
            )
            with run_in_thread(app) as running, RawHttp(running.url) as http:
                yield Gateway(running, http)


edge_floats = st.sampled_from([5e-324, 1e-300, 9.99e-4, 1e-3, 0.0, -0.0, 1.0, 2.0, 2.5, 1e308])
edge_ints = st.sampled_from(
    [-1, 0, 1, MAX_TOKENS, MAX_TOKENS + 1, 1024, 1025, 2**63 - 1, 2**63, 2**64, 10**30]
)
scalars = (
    st.none() | st.booleans() | st.integers() | edge_ints | st.floats() | edge_floats | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
prompts = st.text(min_size=1, max_size=80) | st.lists(
    st.text(min_size=1, max_size=40), min_size=1, max_size=3
)
prompts = prompts | st.lists(st.integers(0, 8191) | edge_ints, min_size=1, max_size=12)
models = st.sampled_from(["crucible-subnet", "crucible-subnet", "crucible-subnet", "gpt-4", ""])
stops = st.none() | st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=5)
shared = {
    "max_tokens": st.integers(0, MAX_TOKENS) | st.integers(1, MAX_TOKENS) | edge_ints,
    "temperature": st.just(0.0) | st.floats(1e-3, 2.0) | edge_floats | st.none(),
    "top_p": st.floats(1e-3, 1.0) | edge_floats | st.none(),
    "seed": st.none() | st.integers(0, 2**63 - 1) | edge_ints,
    "n": st.integers(1, 2) | edge_ints,
    "stream": st.booleans(),
    "stream_options": st.none() | st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop": stops,
    "user": st.text(max_size=20),
    "presence_penalty": st.sampled_from([0, 0.0, 0.5, None]),
    "logit_bias": st.none() | st.just({}) | st.just({"5": 1.0}),
}
near_completion = st.fixed_dictionaries(
    {"model": models, "prompt": prompts},
    optional={
        **shared,
        "logprobs": st.none() | st.integers(0, 5) | edge_ints,
        "echo": st.booleans(),
        "suffix": st.none() | st.text(max_size=3),
        "best_of": st.none() | st.integers(0, 3),
    },
)
loose_completion = st.dictionaries(
    st.sampled_from(
        ["model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "logprobs",
         "echo", "stream", "n", "x"]
    ),
    json_values | prompts,
    max_size=6,
)  # fmt: skip
content = st.text(max_size=40) | st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=20)}
    ),
    max_size=3,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"]),
         "content": content | st.none()}
    ),
    min_size=0,
    max_size=4,
)  # fmt: skip
near_chat = st.fixed_dictionaries(
    {"model": models, "messages": messages},
    optional={
        **shared,
        "max_completion_tokens": st.none() | st.integers(0, MAX_TOKENS) | edge_ints,
        "logprobs": st.booleans() | st.none(),
        "top_logprobs": st.none() | st.integers(0, 20) | edge_ints,
        "tools": st.none() | st.just([]) | st.just([{"type": "function"}]),
        "response_format": st.none() | st.just({"type": "text"}) | st.just({"type": "json_object"}),
    },
)
loose_chat = st.dictionaries(
    st.sampled_from(["model", "messages", "max_tokens", "temperature", "stream", "n", "logprobs"]),
    json_values | messages,
    max_size=6,
)
pathological = st.sampled_from(
    [
        b"",
        b"null",
        b"[" * 64 + b"]" * 64,
        b'{"prompt": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"prompt": "a", "seed": 1' + b"0" * 5000 + b"}",
        b'{"prompt": "\\ud800"}',
        b'{"prompt": "a", "temperature": NaN}',
        json.dumps({"prompt": ["a"] * 17}).encode(),
        json.dumps({"prompt": "a" * 20_000}).encode(),
        b"\xff\xfe\x00",
    ]
)


def encoded(strategy: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda value: json.dumps(value).encode())


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
anything = encoded(json_values) | st.binary(max_size=200) | pathological


def _check_answer(status: int, answer: dict, kind: str) -> None:
    assert status < 500, (status, answer)
    if status != 200:
        assert answer["error"]["code"] and answer["error"]["message"], answer
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        return
    for chunk in answer.get("stream", [answer]):
        if "error" in chunk:  # a stream may end in an error event, never in a 500
            assert chunk["error"]["code"] != "internal_error", chunk
            continue
        assert chunk["object"] in (kind, kind + ".chunk") and "choices" in chunk


@FUZZ
@given(
    body=st.one_of(
        encoded(near_completion),
        encoded(near_completion),
        encoded(near_completion),
        encoded(loose_completion),
        anything,
    )
)
def test_fuzzed_completions_never_get_a_500(gateway: Gateway, body: bytes) -> None:
    status, answer = gateway.send("POST", "/v1/completions", body)
    _check_answer(status, answer, "text_completion")


@FUZZ
@given(
    body=st.one_of(
        encoded(near_chat), encoded(near_chat), encoded(near_chat), encoded(loose_chat), anything
    )
)
def test_fuzzed_chat_completions_never_get_a_500(gateway: Gateway, body: bytes) -> None:
    status, answer = gateway.send("POST", "/v1/chat/completions", body)
    _check_answer(status, answer, "chat.completion")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(["/v1/models", "/v1/models", "/v1/models/crucible-subnet", "/v1"])
    | st.text(max_size=20).map(lambda tail: "/v1/models?" + quote(tail)),
    body=st.just(b"") | anything,
)
def test_fuzzed_models_requests_never_get_a_500(
    gateway: Gateway, method: str, path: str, body: bytes
) -> None:
    status, answer = gateway.send(method, path, body)
    assert status < 500, (status, answer)
    if status == 200 and answer["object"] == "list":
        assert answer["data"][0]["id"] == "crucible-subnet"
    elif status == 200:
        assert answer == {
            "id": "crucible-subnet",
            "object": "model",
            "created": 0,
            "owned_by": "crucible",
        }
    else:
        assert answer["error"]["code"] and answer["error"]["message"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"prompt": "Thou", "temperature": 5e-324}, 400, "malformed"),
        ({"prompt": "Thou", "top_p": 1e-300}, 400, "malformed"),
        ({"prompt": "Thou", "seed": 2**63}, 400, "malformed"),
        ({"prompt": ["Thou", ""]}, 400, "malformed"),
        ({"prompt": "Thou", "max_tokens": MAX_TOKENS + 1}, 400, "limit_exceeded"),
        ({"prompt": "x" * (1 << 20)}, 413, "body_too_large"),
        ({"prompt": "Thou", "model": "gpt-4"}, 404, "model_not_found"),
        ({"prompt": "Thou", "suffix": "!"}, 400, "unsupported_parameter"),
        ({"prompt": "Thou", "n": 17}, 400, "malformed"),
        ({"prompt": ["Thou"] * 9, "n": 2}, 400, "malformed"),
        ({"prompt": "Thou", "stop": ["a"] * 5}, 400, "malformed"),
        ({"prompt": [1 << 20]}, 400, "malformed"),
    ],
)
def test_what_used_to_500_is_a_4xx_with_a_code(
    gateway: Gateway, body: dict, status: int, code: str
) -> None:
    got, answer = gateway.send("POST", "/v1/completions", json.dumps(body).encode())
    assert (got, answer["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": None}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_bad_chat_requests_are_400s_naming_the_param(
    gateway: Gateway, body: dict, param: str
) -> None:
    got, answer = gateway.send("POST", "/v1/chat/completions", json.dumps(body).encode())
    assert got == 400 and answer["error"]["param"] == param, answer


def test_unknown_routes_and_methods_answer_in_the_openai_error_shape(gateway: Gateway) -> None:
    assert gateway.send("GET", "/v1/nothing", b"")[0] == 404
    status, answer = gateway.send("GET", "/v1/completions", b"")
    assert (status, answer["error"]["code"]) == (405, "method_not_allowed")
    status, answer = gateway.send("GET", "/v1/models", b"", key="not-a-key-not-a-key")
    assert (status, answer["error"]["code"]) == (401, "invalid_api_key")


def test_the_gateway_still_completes_after_the_fuzzers(gateway: Gateway) -> None:
    body = json.dumps({"prompt": ["Thou art", "It is"], "max_tokens": 4}).encode()
    status, answer = gateway.send("POST", "/v1/completions", body)
    assert status == 200, answer
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert answer["usage"]["completion_tokens"] >= 2 and answer["usage"]["prompt_tokens"] == 4
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True}
    status, answer = gateway.send("POST", "/v1/chat/completions", json.dumps(chat).encode())
    assert status == 200 and answer["stream"][0]["choices"][0]["delta"]["role"] == "assistant"
