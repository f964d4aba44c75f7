"""btauth/1 request checks map to our codes; response signatures bind signer, body, status, nonce."""

from __future__ import annotations

import time

import pytest
from bittensor_core import Keypair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.protocol.auth import (
    RESPONSE_HOTKEY_HEADER,
    RESPONSE_SIGNATURE_HEADER,
    new_nonce_store,
    request_nonce,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from crucible.protocol.errors import AuthError

CLIENT = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
SERVER = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
OTHER = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
BODY = b'{"prompt": "hello"}'


def _signed(nonce_ns: int | None = None, receiver: str = SERVER.ss58_address) -> dict[str, str]:
    return sign_request(
        CLIENT,
        method="POST",
        path="/v1/generate",
        body=BODY,
        receiver_ss58=receiver,
        nonce_ns=nonce_ns,
    )


def _verify(headers: dict[str, str], body: bytes = BODY, store=None, path: str = "/v1/generate"):
    return verify_request(
        headers,
        body,
        method="POST",
        path=path,
        self_hotkey_ss58=SERVER.ss58_address,
        nonce_store=store if store is not None else new_nonce_store(),
    )


def test_signed_request_verifies_and_names_the_caller() -> None:
    caller = _verify(_signed())
    assert caller.hotkey_ss58 == CLIENT.ss58_address


@pytest.mark.parametrize(
    "tamper, code",
    [
        (lambda h: {**h, "X-Bittensor-Signature": "0x" + "00" * 64}, "bad_signature"),
        (lambda h: {k: v for k, v in h.items() if k != "X-Bittensor-Signature"}, "malformed_auth"),
        (lambda h: {**h, "X-Bittensor-Hotkey": OTHER.ss58_address}, "bad_signature"),
        (lambda h: {**h, "X-Bittensor-Nonce": "12x"}, "malformed_auth"),
        (lambda h: {**h, "X-Bittensor-Version": "2"}, "malformed_auth"),
    ],
)
def test_tampered_headers_are_refused_with_a_code(tamper, code: str) -> None:
    with pytest.raises(AuthError) as info:
        _verify(tamper(_signed()))
    assert info.value.code == code


def test_tampered_body_or_path_fails_the_signature() -> None:
    with pytest.raises(AuthError) as info:
        _verify(_signed(), body=b'{"prompt": "HELLO"}')
    assert info.value.code == "bad_signature"
    with pytest.raises(AuthError) as info:
        _verify(_signed(), path="/v1/logprobs")
    assert info.value.code == "bad_signature"


def test_replayed_request_is_refused() -> None:
    store = new_nonce_store()
    headers = _signed()
    _verify(headers, store=store)
    with pytest.raises(AuthError) as info:
        _verify(headers, store=store)
    assert info.value.code == "replayed_request"


def test_stale_and_future_nonces_are_refused() -> None:
    with pytest.raises(AuthError) as info:
        _verify(_signed(nonce_ns=time.time_ns() - 30 * 10**9))
    assert info.value.code == "stale_request"
    with pytest.raises(AuthError) as info:
        _verify(_signed(nonce_ns=time.time_ns() + 30 * 10**9))
    assert info.value.code == "stale_request"


def test_a_request_bound_to_no_receiver_is_refused() -> None:
    """A signature over no receiver could be replayed to any server: servers require one."""
    headers = {k: v for k, v in _signed().items() if k != "X-Bittensor-Receiver"}
    with pytest.raises(AuthError, match="missing X-Bittensor-Receiver") as info:
        _verify(headers)
    assert info.value.code == "wrong_receiver"


def test_request_for_another_receiver_is_refused() -> None:
    with pytest.raises(AuthError) as info:
        _verify(_signed(receiver=OTHER.ss58_address))
    assert info.value.code == "wrong_receiver"


def test_request_nonce_reads_only_plausible_nonces() -> None:
    assert request_nonce({"x-bittensor-nonce": "123"}) == 123
    assert request_nonce({"X-Bittensor-Nonce": "9" * 400}) == 0
    assert request_nonce({"X-Bittensor-Nonce": "-5"}) == 0
    assert request_nonce({}) == 0


def _response_headers(status: int = 200, body: bytes = b'{"ok": 1}', nonce: int = 77):
    return sign_response(
        SERVER, method="POST", path="/v1/echo", status=status, body=body, request_nonce_ns=nonce
    )


def _check_response(headers, body=b'{"ok": 1}', status=200, nonce=77, expected=SERVER.ss58_address):
    verify_response(
        headers,
        body,
        method="POST",
        path="/v1/echo",
        status=status,
        request_nonce_ns=nonce,
        expected_hotkey_ss58=expected,
    )


def test_response_signature_verifies_for_the_server_hotkey() -> None:
    _check_response(_response_headers())


@pytest.mark.parametrize(
    "change, code",
    [
        ({"body": b'{"ok": 2}'}, "bad_response_signature"),
        ({"status": 500}, "bad_response_signature"),
        ({"nonce": 78}, "bad_response_signature"),
        ({"expected": OTHER.ss58_address}, "wrong_responder"),
    ],
)
def test_altered_or_misattributed_response_is_detected(change: dict, code: str) -> None:
    with pytest.raises(AuthError) as info:
        _check_response(_response_headers(), **change)
    assert info.value.code == code


def test_response_signed_by_an_impostor_claiming_the_server_hotkey_is_detected() -> None:
    forged = sign_response(
        OTHER, method="POST", path="/v1/echo", status=200, body=b'{"ok": 1}', request_nonce_ns=77
    )
    forged[RESPONSE_HOTKEY_HEADER] = SERVER.ss58_address
    with pytest.raises(AuthError) as info:
        _check_response(forged)
    assert info.value.code == "bad_response_signature"


def test_unsigned_response_is_detected() -> None:
    with pytest.raises(AuthError) as info:
        _check_response({})
    assert info.value.code == "unsigned_response"


header_text = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"0x[0-9a-f]{0,140}", fullmatch=True),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from([CLIENT.ss58_address, SERVER.ss58_address, "1", "sr25519", "ed25519", "ecdsa"]),
)
header_names = st.sampled_from(
    [
        "X-Bittensor-Version",
        "X-Bittensor-Hotkey",
        "X-Bittensor-Nonce",
        "X-Bittensor-Signature",
        "X-Bittensor-Receiver",
        "X-Bittensor-Crypto",
        RESPONSE_HOTKEY_HEADER,
        RESPONSE_SIGNATURE_HEADER,
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    overrides=st.dictionaries(header_names, header_text, max_size=6),
    drop=st.sets(header_names, max_size=3),
    body=st.binary(max_size=64),
)
def test_fuzzed_auth_headers_verify_or_raise_auth_error(overrides, drop, body: bytes) -> None:
    headers = {**_signed(), **_response_headers()}
    headers.update(overrides)
    for name in drop:
        headers.pop(name, None)
    try:
        _verify(headers, body=body)
    except AuthError as exc:
        assert exc.code in {
            "malformed_auth",
            "wrong_receiver",
            "stale_request",
            "bad_signature",
            "replayed_request",
        }
    try:
        _check_response(headers, body=body)
    except AuthError as exc:
        assert exc.code in {"unsigned_response", "wrong_responder", "bad_response_signature"}
    assert isinstance(request_nonce(headers), int)
