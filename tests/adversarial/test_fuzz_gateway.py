"""The OpenAI-compatible gateway answers bad input with a 4xx JSON error, never a 500.

A real chain, a real miner serving a real tiny model on 127.0.0.1 with its commitment on chain,
the real ``Subnet`` client and the gateway in front of it: fuzzed requests with a valid API key
on ``/v1/completions`` and ``/v1/models`` (and the wrong methods and paths around them).
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
from crucible.protocol.messages import GENERATE_PATH, INFO_PATH
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
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        status, raw = self.http.send(method, path, body, headers)
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
            policies={GENERATE_PATH: trusted, INFO_PATH: trusted},
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
near_completion = st.fixed_dictionaries(
    {"model": st.just("crucible-subnet"), "prompt": prompts},
    optional={
        "max_tokens": st.integers(1, MAX_TOKENS) | st.integers(1, MAX_TOKENS) | edge_ints,
        "temperature": st.just(0.0) | st.floats(1e-3, 2.0) | edge_floats,
        "top_p": st.floats(1e-3, 1.0) | edge_floats,
        "seed": st.none() | st.integers(0, 2**63 - 1) | edge_ints,
        "n": st.integers(1, 2),
        "stream": st.just(False),
        "user": st.text(max_size=20),
    },
)
loose_completion = st.dictionaries(
    st.sampled_from(["model", "prompt", "max_tokens", "temperature", "top_p", "seed", "x"]),
    json_values | prompts,
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
    assert status < 500, (status, answer)
    if status == 200:
        assert answer["object"] == "text_completion" and answer["choices"]
    else:
        assert answer["error"]["code"] and answer["error"]["message"]


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
    if status == 200:
        assert answer["object"] == "list" and answer["data"][0]["id"] == "crucible-subnet"
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
    ],
)
def test_what_used_to_500_is_a_4xx_with_a_code(
    gateway: Gateway, body: dict, status: int, code: str
) -> None:
    got, answer = gateway.send("POST", "/v1/completions", json.dumps(body).encode())
    assert (got, answer["error"]["code"]) == (status, code)


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
    assert answer["usage"]["completion_tokens"] >= 2
