"""A real NeuronServer on 127.0.0.1, real keys registered on a real local chain, real HTTP.

Every refusal must come back with the right status and stable code, signed by the server, and
the server must keep answering afterwards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from bittensor_core import Keypair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible.chain.interface import BurnedRegister
from crucible.client.transport import SignedClient, Target, query
from crucible.protocol.auth import sign_request, verify_response
from crucible.protocol.messages import INFO_PATH, ModelInfoResponse
from crucible.server.app import CallContext, NeuronServer
from crucible.server.policy import Access, RoutePolicy
from crucible.server.runner import RunningServer, run_in_thread
from crucible.server.testing import (
    ECHO_PATH,
    STAKED_ECHO_PATH,
    VALIDATOR_ECHO_PATH,
    EchoRequest,
    EchoResponse,
    build_echo_server,
)
from tests.conftest import keypair
from tests.server.conftest import Net

BODY = EchoRequest(text="hello").model_dump_json().encode()


def run(coro):
    return asyncio.run(coro)


async def raw_post(
    server: RunningServer,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    expected_hotkey: str,
    nonce: int | None = None,
) -> tuple[int, dict]:
    """POST exactly these bytes and headers; check the answer is signed; return (status, json)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url + path, data=body, headers=headers) as resp:
            raw = await resp.read()
            if nonce is None:
                nonce = int(headers.get("X-Bittensor-Nonce", "0") or 0)
            verify_response(
                resp.headers,
                raw,
                method="POST",
                path=path,
                status=resp.status,
                request_nonce_ns=nonce if str(nonce).isdigit() else 0,
                expected_hotkey_ss58=expected_hotkey,
            )
            return resp.status, json.loads(raw)


def signed(
    net: Net, kp: Keypair, body: bytes = BODY, path: str = ECHO_PATH, **kw
) -> dict[str, str]:
    return sign_request(
        kp,
        method="POST",
        path=path,
        body=body,
        receiver_ss58=kw.pop("receiver", net.server_kp.ss58_address),
        **kw,
    )


def still_answers(net: Net, server: RunningServer) -> None:
    """The server serves a good request after whatever the test threw at it."""
    target = Target(net.server_kp.ss58_address, server.url)
    result = query(net.miner_kp, [target], ECHO_PATH, EchoRequest(text="alive"), EchoResponse)[0]
    assert result.ok, result
    assert result.value is not None and result.value.text == "alive"


@pytest.fixture(scope="module")
def echo(net: Net) -> Iterator[RunningServer]:
    # Generous limits: the fuzzers send hundreds of requests; limits are tested on `tight`.
    policy = RoutePolicy(rate_per_s=1000, burst=1000, max_concurrent=64)
    server = build_echo_server(
        net.server_kp, net.chain, net.netuid, policy=policy, min_stake_rao=net.min_stake_rao
    )
    with run_in_thread(server.app) as running:
        yield running


def _target(net: Net, server: RunningServer) -> Target:
    return Target(net.server_kp.ss58_address, server.url)


def test_registered_caller_gets_a_signed_echo(net: Net, echo: RunningServer) -> None:
    result = query(
        net.miner_kp, [_target(net, echo)], ECHO_PATH, EchoRequest(text="hi"), EchoResponse
    )[0]
    assert result.ok and result.code == "ok" and result.status == 200
    assert result.value == EchoResponse(
        text="hi", caller_hotkey=net.miner_kp.ss58_address, caller_uid=net.uid_of(net.miner_kp)
    )
    assert result.latency_ms > 0


def test_info_route_takes_a_get_with_no_body(net: Net, echo: RunningServer) -> None:
    result = query(net.miner_kp, [_target(net, echo)], INFO_PATH, None, ModelInfoResponse)[0]
    assert result.ok, result
    assert result.value is not None and result.value.hotkey == net.server_kp.ss58_address


def test_forged_signature_is_401(net: Net, echo: RunningServer) -> None:
    headers = signed(net, net.miner_kp)
    headers["X-Bittensor-Signature"] = "0x" + net.stranger_kp.sign(b"something else").hex()
    status, body = run(
        raw_post(echo, ECHO_PATH, BODY, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, body["error"]["code"]) == (401, "bad_signature")
    still_answers(net, echo)


def test_body_swapped_after_signing_is_401(net: Net, echo: RunningServer) -> None:
    headers = signed(net, net.miner_kp)
    other = EchoRequest(text="evil").model_dump_json().encode()
    status, body = run(
        raw_post(echo, ECHO_PATH, other, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, body["error"]["code"]) == (401, "bad_signature")


def test_replayed_request_is_401(net: Net, echo: RunningServer) -> None:
    headers = signed(net, net.miner_kp)
    first = run(
        raw_post(echo, ECHO_PATH, BODY, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    again = run(
        raw_post(echo, ECHO_PATH, BODY, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert first[0] == 200
    assert (again[0], again[1]["error"]["code"]) == (401, "replayed_request")


def test_stale_nonce_is_401(net: Net, echo: RunningServer) -> None:
    headers = signed(net, net.miner_kp, nonce_ns=time.time_ns() - 60 * 10**9)
    status, body = run(
        raw_post(echo, ECHO_PATH, BODY, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, body["error"]["code"]) == (401, "stale_request")


def test_request_signed_for_another_receiver_is_401(net: Net, echo: RunningServer) -> None:
    headers = signed(net, net.miner_kp, receiver=net.validator_kp.ss58_address)
    status, body = run(
        raw_post(echo, ECHO_PATH, BODY, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, body["error"]["code"]) == (401, "wrong_receiver")


def test_client_aiming_at_another_hotkey_reports_wrong_responder(
    net: Net, echo: RunningServer
) -> None:
    # The metagraph says this URL belongs to the validator's hotkey, but the server answers as
    # itself: the client must not believe the answer.
    target = Target(net.validator_kp.ss58_address, echo.url)
    result = query(net.miner_kp, [target], ECHO_PATH, EchoRequest(text="hi"), EchoResponse)[0]
    assert not result.ok and result.code == "wrong_responder" and result.status == 401


def test_unregistered_caller_is_403(net: Net, echo: RunningServer) -> None:
    result = query(
        net.stranger_kp, [_target(net, echo)], ECHO_PATH, EchoRequest(text="hi"), EchoResponse
    )[0]
    assert (result.status, result.code) == (403, "not_registered")
    assert net.stranger_kp.ss58_address in result.error


def test_validator_route_refuses_a_miner_and_admits_a_validator(
    net: Net, echo: RunningServer
) -> None:
    target = _target(net, echo)
    request = EchoRequest(text="v")
    as_miner = query(net.miner_kp, [target], VALIDATOR_ECHO_PATH, request, EchoResponse)[0]
    assert (as_miner.status, as_miner.code) == (403, "no_validator_permit")
    as_validator = query(net.validator_kp, [target], VALIDATOR_ECHO_PATH, request, EchoResponse)[0]
    assert as_validator.ok, as_validator


def test_min_stake_route_checks_the_callers_stake(net: Net, echo: RunningServer) -> None:
    target = _target(net, echo)
    request = EchoRequest(text="s")
    poor = query(net.miner_kp, [target], STAKED_ECHO_PATH, request, EchoResponse)[0]
    assert (poor.status, poor.code) == (403, "insufficient_stake")
    rich = query(net.validator_kp, [target], STAKED_ECHO_PATH, request, EchoResponse)[0]
    assert rich.ok, rich


def test_oversized_body_is_413_without_being_read(net: Net, echo: RunningServer) -> None:
    big = json.dumps({"text": "x" * (300 * 1024)}).encode()  # limit is 256 KiB
    headers = signed(net, net.miner_kp, body=big)
    status, body = run(
        raw_post(echo, ECHO_PATH, big, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    still_answers(net, echo)


def test_oversized_chunked_body_is_413(net: Net, echo: RunningServer) -> None:
    async def chunks():
        for _ in range(40):
            yield b"x" * 8192  # 320 KiB with no Content-Length

    async def go() -> tuple[int, dict]:
        headers = signed(net, net.miner_kp, body=b"")
        async with aiohttp.ClientSession() as session:
            async with session.post(echo.url + ECHO_PATH, data=chunks(), headers=headers) as resp:
                return resp.status, json.loads(await resp.read())

    status, body = run(go())
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    still_answers(net, echo)


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b'{"text": 5}', b'{"text": "a", "x": 1}', b"\xff"]
)
def test_malformed_body_is_400(net: Net, echo: RunningServer, body: bytes) -> None:
    headers = signed(net, net.miner_kp, body=body)
    status, out = run(
        raw_post(echo, ECHO_PATH, body, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, out["error"]["code"]) == (400, "malformed")


def test_unknown_route_is_a_signed_404(net: Net, echo: RunningServer) -> None:
    headers = signed(net, net.miner_kp, path="/v1/nope")
    status, out = run(
        raw_post(echo, "/v1/nope", BODY, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    assert (status, out["error"]["code"]) == (404, "not_found")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(["text", "sleep_ms", "version", "extra"]),
            st.one_of(st.none(), st.integers(-5, 10**20), st.text(max_size=30), st.floats()),
            max_size=4,
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_fuzzed_signed_bodies_get_200_or_400_and_the_server_survives(
    net: Net, echo: RunningServer, body: bytes
) -> None:
    headers = signed(net, net.miner_kp, body=body)
    status, out = run(
        raw_post(echo, ECHO_PATH, body, headers, expected_hotkey=net.server_kp.ss58_address)
    )
    if status == 200:
        EchoResponse.model_validate(out)
    else:
        assert (status, out["error"]["code"]) == (400, "malformed")


header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    st.integers(-(10**25), 10**25).map(str),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    overrides=st.dictionaries(
        st.sampled_from(
            [
                "X-Bittensor-Version",
                "X-Bittensor-Hotkey",
                "X-Bittensor-Nonce",
                "X-Bittensor-Signature",
                "X-Bittensor-Receiver",
                "X-Bittensor-Crypto",
            ]
        ),
        header_values,
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_auth_headers_are_refused_cleanly(net: Net, echo: RunningServer, overrides) -> None:
    headers = {**signed(net, net.miner_kp), **overrides}

    async def go() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.post(echo.url + ECHO_PATH, data=BODY, headers=headers) as resp:
                return resp.status, await resp.read()

    status, raw = run(go())
    if status != 200:  # a header override can be a no-op (e.g. the same value)
        assert status in (400, 401, 413), (status, raw)
        code = json.loads(raw)["error"]["code"]
        assert code in {
            "malformed",
            "malformed_auth",
            "bad_signature",
            "stale_request",
            "wrong_receiver",
            "replayed_request",
            "body_too_large",
        }


def test_server_survives_the_fuzzers(net: Net, echo: RunningServer) -> None:
    still_answers(net, echo)


# -- response tampering, timeouts, dead endpoints, limits ----------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_response_tampered_in_flight_is_detected_by_the_client(
    net: Net, echo: RunningServer
) -> None:
    """A man in the middle on loopback rewrites the echo text; the signature no longer matches."""

    async def go():
        async def relay(request: web.Request) -> web.Response:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    echo.url + request.path, data=await request.read(), headers=request.headers
                ) as upstream:
                    raw = (await upstream.read()).replace(b"hello", b"HACKED")
                    keep = {
                        k: v
                        for k, v in upstream.headers.items()
                        if k.lower().startswith("x-crucible")
                    }
                    return web.Response(body=raw, status=upstream.status, headers=keep)

        app = web.Application()
        app.router.add_post("/{tail:.*}", relay)
        runner = web.AppRunner(app)
        await runner.setup()
        port = _free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            async with SignedClient(net.miner_kp) as client:
                target = Target(net.server_kp.ss58_address, f"http://127.0.0.1:{port}")
                return await client.call(target, ECHO_PATH, EchoRequest(text="hello"), EchoResponse)
        finally:
            await runner.cleanup()

    result = run(go())
    assert not result.ok and result.value is None
    assert result.code == "bad_response_signature"


def test_slow_and_dead_targets_are_reported_per_target(net: Net, echo: RunningServer) -> None:
    good = _target(net, echo)
    dead = Target(net.server_kp.ss58_address, f"http://127.0.0.1:{_free_port()}")

    async def go():
        async with SignedClient(net.miner_kp, timeout_s=0.5) as client:
            fast = client.call_many([good, dead], ECHO_PATH, EchoRequest(text="x"), EchoResponse)
            slow = client.call(good, ECHO_PATH, EchoRequest(text="x", sleep_ms=3000), EchoResponse)
            return await asyncio.gather(fast, slow)

    (ok, unreachable), slow = run(go())
    assert ok.ok and ok.target == good
    assert (unreachable.ok, unreachable.code, unreachable.status) == (False, "unreachable", None)
    assert (slow.ok, slow.code, slow.status) == (False, "timeout", None)
    assert slow.latency_ms >= 500
    still_answers(net, echo)


@pytest.fixture
def tight(net: Net) -> Iterator[tuple[NeuronServer, RunningServer]]:
    """A server whose routes time out at 0.2 s, allow 3 requests of burst, 1 at a time."""
    server = NeuronServer(net.server_kp, net.chain, net.netuid)
    policy = RoutePolicy(rate_per_s=0.5, burst=3, max_concurrent=1, timeout_s=0.2)

    async def echo_handler(request: EchoRequest, ctx: CallContext) -> EchoResponse:
        await asyncio.sleep(request.sleep_ms / 1000)
        return EchoResponse(text=request.text, caller_hotkey=ctx.hotkey, caller_uid=ctx.neuron.uid)

    async def broken(request: EchoRequest, ctx: CallContext) -> EchoResponse:
        raise ZeroDivisionError("handler bug")

    server.route(ECHO_PATH, EchoRequest, EchoResponse, echo_handler, policy=policy)
    server.route("/v1/broken", EchoRequest, EchoResponse, broken)
    with run_in_thread(server.app) as running:
        yield server, running


def test_handler_past_its_timeout_is_504(net: Net, tight) -> None:
    _, running = tight
    result = query(
        net.miner_kp,
        [_target(net, running)],
        ECHO_PATH,
        EchoRequest(text="z", sleep_ms=1000),
        EchoResponse,
    )[0]
    assert (result.status, result.code) == (504, "handler_timeout")


def test_rate_limit_is_429_per_hotkey(net: Net, tight) -> None:
    _, running = tight
    target = _target(net, running)
    codes = [
        query(net.miner_kp, [target], ECHO_PATH, EchoRequest(text="r"), EchoResponse)[0].code
        for _ in range(5)
    ]
    assert codes[:3] == ["ok", "ok", "ok"]
    assert codes[3:] == ["rate_limited", "rate_limited"]
    other = query(net.validator_kp, [target], ECHO_PATH, EchoRequest(text="r"), EchoResponse)[0]
    assert other.ok  # another hotkey has its own bucket


def test_concurrency_cap_is_429(net: Net, tight) -> None:
    _, running = tight
    target = _target(net, running)

    async def go():
        async with SignedClient(net.miner_kp) as client:
            return await asyncio.gather(
                client.call(target, ECHO_PATH, EchoRequest(text="a", sleep_ms=150), EchoResponse),
                client.call(target, ECHO_PATH, EchoRequest(text="b", sleep_ms=150), EchoResponse),
            )

    codes = sorted(r.code for r in run(go()))
    assert codes == ["ok", "too_many_concurrent"]


def test_handler_bug_is_500_and_the_server_keeps_serving(net: Net, tight) -> None:
    _, running = tight
    target = _target(net, running)
    result = query(net.miner_kp, [target], "/v1/broken", EchoRequest(text="b"), EchoResponse)[0]
    assert (result.status, result.code) == (500, "internal_error")
    assert query(net.validator_kp, [target], ECHO_PATH, EchoRequest(text="ok"), EchoResponse)[0].ok


def test_client_refuses_an_oversized_response(net: Net, echo: RunningServer) -> None:
    async def go():
        async with SignedClient(net.miner_kp, max_response_bytes=64) as client:
            return await client.call(
                _target(net, echo), ECHO_PATH, EchoRequest(text="y" * 200), EchoResponse
            )

    result = run(go())
    assert (result.ok, result.code) == (False, "response_too_large")


def test_client_refuses_a_wallet_object() -> None:
    from bittensor import Wallet

    from crucible.protocol.errors import ConfigError

    with pytest.raises(ConfigError, match="Keypair, not a Wallet"):
        SignedClient(Wallet(name="nobody", path="/tmp/crucible-no-such-wallet"))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",
    ],
)
def test_broken_http_does_not_take_the_server_down(
    net: Net, echo: RunningServer, raw: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    # The HTTP parser refuses it (400) or the connection just closes; either way no 2xx.
    assert not answer.startswith(b"HTTP/1.1 2")
    still_answers(net, echo)


def test_signed_route_admits_an_unregistered_caller_but_still_checks_the_signature(
    net: Net,
) -> None:
    server = NeuronServer(net.server_kp, net.chain, net.netuid)

    async def public(request: EchoRequest, ctx: CallContext) -> EchoResponse:
        uid = -1 if ctx.neuron is None else ctx.neuron.uid
        return EchoResponse(text=request.text, caller_hotkey=ctx.hotkey, caller_uid=uid)

    server.route(
        ECHO_PATH, EchoRequest, EchoResponse, public, policy=RoutePolicy(access=Access.SIGNED)
    )
    with run_in_thread(server.app) as running:
        target = _target(net, running)
        stranger = query(net.stranger_kp, [target], ECHO_PATH, EchoRequest(text="p"), EchoResponse)[
            0
        ]
        assert stranger.ok and stranger.value is not None
        assert (stranger.value.caller_hotkey, stranger.value.caller_uid) == (
            net.stranger_kp.ss58_address,
            -1,
        )
        headers = signed(net, net.stranger_kp)
        headers["X-Bittensor-Signature"] = "0x" + "11" * 64
        status, out = run(
            raw_post(running, ECHO_PATH, BODY, headers, expected_hotkey=net.server_kp.ss58_address)
        )
        assert (status, out["error"]["code"]) == (401, "bad_signature")


def test_a_new_registration_is_admitted_after_the_next_metagraph_refresh(net: Net) -> None:
    latecomer = keypair("server-tests-latecomer")
    server = build_echo_server(net.server_kp, net.chain, net.netuid, metagraph_refresh_s=0.1)
    with run_in_thread(server.app) as running:
        target = _target(net, running)
        before = query(latecomer, [target], ECHO_PATH, EchoRequest(text="l"), EchoResponse)[0]
        assert (before.status, before.code) == (403, "not_registered")
        net.chain.submit(
            BurnedRegister(netuid=net.netuid, hotkey=latecomer.ss58_address),
            keypair("server-tests-coldkey"),
        ).raise_for_failure()
        deadline = time.monotonic() + 10
        while True:
            after = query(latecomer, [target], ECHO_PATH, EchoRequest(text="l"), EchoResponse)[0]
            if after.ok or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert after.ok, after
        assert after.value is not None and after.value.caller_uid == net.uid_of(latecomer)
