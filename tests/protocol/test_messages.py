"""The v1 schemas accept what the endpoints need and refuse everything else with RequestError."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.protocol.errors import RequestError
from crucible.protocol.messages import (
    MAX_INPUT_TOKENS,
    MAX_NEW_TOKENS,
    MAX_VOCAB_ID,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    LogprobsRequest,
    LogprobsResponse,
    ModelInfoResponse,
    SamplingParams,
    parse_message,
)

HOTKEY = "5FujxoE5ud9FebDwHMxAaBCQSUZUymFV4mpso1hjxN211fpB"


def test_generate_request_round_trips_through_json() -> None:
    request = GenerateRequest(
        token_ids=[1, 2, 3],
        max_new_tokens=8,
        sampling=SamplingParams(temperature=0.7, top_p=0.9, top_k=50, seed=42),
    )
    parsed = parse_message(GenerateRequest, request.model_dump_json().encode())
    assert parsed == request
    assert parsed.version == 1


def test_generate_request_needs_exactly_one_of_prompt_or_token_ids() -> None:
    with pytest.raises(RequestError, match="exactly one"):
        parse_message(GenerateRequest, b'{"max_new_tokens": 4}')
    with pytest.raises(RequestError, match="exactly one"):
        parse_message(GenerateRequest, b'{"prompt": "a", "token_ids": [1]}')
    assert parse_message(GenerateRequest, b'{"prompt": "hello"}').prompt == "hello"


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"prompt": "a", "max_new_tokens": "8"}', "max_new_tokens"),  # strict: no str→int
        (b'{"prompt": "a", "max_new_tokens": 0}', "max_new_tokens"),
        (f'{{"prompt": "a", "max_new_tokens": {MAX_NEW_TOKENS + 1}}}'.encode(), "max_new_tokens"),
        (b'{"token_ids": [-1]}', "token_ids"),
        (f'{{"token_ids": [{MAX_VOCAB_ID}]}}'.encode(), "token_ids"),
        (b'{"token_ids": [1.5]}', "token_ids"),
        (b'{"prompt": "a", "sampling": {"temperature": 2.5}}', "temperature"),
        (b'{"prompt": "a", "sampling": {"top_p": 0}}', "top_p"),
        (b'{"prompt": "a", "sampling": {"seed": -1}}', "seed"),
        (b'{"prompt": "a", "sampling": {"temperature": NaN}}', "temperature"),
        (b'{"prompt": "a", "extra": 1}', "extra"),
        (b'{"prompt": "a", "version": 2}', "version"),
        (b'{"prompt": ""}', "prompt"),
    ],
)
def test_generate_request_refuses_out_of_bounds_fields(body: bytes, field: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_message(GenerateRequest, body)
    assert info.value.code == "malformed"
    assert field in info.value.message


def test_token_lists_are_bounded() -> None:
    too_many = json.dumps({"token_ids": [1] * (MAX_INPUT_TOKENS + 1)}).encode()
    with pytest.raises(RequestError, match="token_ids"):
        parse_message(LogprobsRequest, too_many)
    with pytest.raises(RequestError, match="token_ids"):
        parse_message(LogprobsRequest, b'{"token_ids": [7]}')  # nothing to score
    assert len(parse_message(LogprobsRequest, b'{"token_ids": [7, 8]}').token_ids) == 2


def test_logprobs_response_needs_one_finite_nonpositive_value_per_predicted_token() -> None:
    ok = LogprobsResponse(token_ids=[1, 2, 3], logprobs_nats=[-0.5, -2.0])
    assert ok.logprobs_nats == [-0.5, -2.0]
    with pytest.raises(RequestError, match="exactly one logprob"):
        parse_message(LogprobsResponse, b'{"token_ids": [1, 2, 3], "logprobs_nats": [-1.0]}')
    with pytest.raises(RequestError, match="finite"):
        parse_message(LogprobsResponse, b'{"token_ids": [1, 2], "logprobs_nats": [0.5]}')


def test_model_info_validates_hotkey_and_commitment_length() -> None:
    info = ModelInfoResponse(hotkey=HOTKEY, competition_id="tiny", commitment="c" * 128)
    assert parse_message(ModelInfoResponse, info.model_dump_json().encode()) == info
    with pytest.raises(RequestError, match="commitment"):
        parse_message(
            ModelInfoResponse,
            json.dumps({"hotkey": HOTKEY, "competition_id": "t", "commitment": "c" * 129}).encode(),
        )
    with pytest.raises(RequestError, match="hotkey"):
        parse_message(ModelInfoResponse, b'{"hotkey": "not an address", "competition_id": "t"}')


def test_generate_response_and_error_body_parse() -> None:
    resp = GenerateResponse(token_ids=[5, 6], text="hi", finish_reason="length")
    assert parse_message(GenerateResponse, resp.model_dump_json().encode()) == resp
    err = parse_message(ErrorResponse, b'{"error": {"code": "rate_limited", "message": "slow"}}')
    assert err.error.code == "rate_limited"


@pytest.mark.parametrize("body", [b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"prompt": 1}'])
def test_garbage_bodies_are_malformed_requests(body: bytes) -> None:
    with pytest.raises(RequestError) as info:
        parse_message(GenerateRequest, body)
    assert info.value.code == "malformed"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["prompt", "token_ids", "max_new_tokens", "sampling", "version", "temperature", "x"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(field_names, json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    )
)
def test_fuzzed_bodies_parse_or_raise_request_error(body: bytes) -> None:
    for model in (GenerateRequest, LogprobsRequest, ModelInfoResponse, ErrorResponse):
        try:
            parse_message(model, body)
        except RequestError as exc:
            assert exc.code == "malformed"
