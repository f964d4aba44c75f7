"""Signed event streams (crucible-stream/1) on a real NeuronServer over loopback HTTP.

A counting stream route on the real toolkit and the real signed client; a man in the middle
(a real aiohttp proxy) that alters, drops, strips or replays frames must be caught by the
client, and a caller that leaves must free its slot and stop the handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from aiohttp import ClientSession, web
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.client.transport import SignedClient, StreamBroken, Target
from crucible.protocol.errors import RequestError
from crucible.protocol.messages import (
    STREAM_DELTA,
    STREAM_END,
    STREAM_START,
    GenerateRequest,
    StreamDelta,
    StreamEnd,
    StreamStart,
)
from crucible.server.app import CallContext, NeuronServer
from crucible.server.errors import Overloaded
from crucible.server.policy import Access, RoutePolicy, TierLimits
from crucible.server.runner import RunningServer, run_in_thread
from crucible.server.streaming import FrameDecoder
from crucible.server.testing import ECHO_PATH, EchoRequest, EchoResponse, build_echo_server
from tests.server.conftest import Net

COUNT_PATH = "/v1/count"
KINDS = {STREAM_START: StreamStart, STREAM_DELTA: StreamDelta, STREAM_END: StreamEnd}


class Counter:
    """A stream route: start, one delta per number, end. The prompt steers it: ``refuse``
    (before the stream), ``fail`` / ``bug`` (midway), ``slow`` (a delta every 50 ms)."""

    def __init__(self) -> None:
        self.closed = 0  # handler iterators that were closed (finished or abandoned)

    async def handle(self, request: GenerateRequest, ctx: CallContext) -> AsyncIterator:
        if request.prompt == "refuse":
            raise Overloaded("no room for you", code="server_busy")
        return self._events(request)

    async def _events(self, request: GenerateRequest) -> AsyncIterator:
        try:
            yield STREAM_START, StreamStart(commitment="c", prompt_tokens=1)
            for i in range(request.max_new_tokens):
                if request.prompt == "fail" and i == 2:
                    raise Overloaded("gave up midway", code="work_cancelled")
                if request.prompt == "bug" and i == 2:
                    raise RuntimeError("a handler bug")
                if request.prompt == "slow":
                    await asyncio.sleep(0.05)
                yield STREAM_DELTA, StreamDelta(token_ids=[i], text=f"{i} ")
            yield (
                STREAM_END,
                StreamEnd(finish_reason="length", completion_tokens=request.max_new_tokens),
            )
        finally:
            self.closed += 1


@pytest.fixture(scope="module")
def counter() -> Counter:
    return Counter()


@pytest.fixture(scope="module")
def server(net: Net, counter: Counter) -> Iterator[RunningServer]:
    app = NeuronServer(net.server_kp, net.chain, net.netuid)
    policy = RoutePolicy(
        access=Access.SIGNED, rate_per_s=1000, burst=1000, max_concurrent=1, timeout_s=5
    )
    app.stream_route(COUNT_PATH, GenerateRequest, counter.handle, policy=policy)
    with run_in_thread(app.app) as running:
        yield running


async def _collect(net: Net, url: str, prompt: str = "go", count: int = 5, *, kp=None) -> tuple:
    target = Target(net.server_kp.ss58_address, url)
    request = GenerateRequest(prompt=prompt, max_new_tokens=count)
    async with SignedClient(kp or net.miner_kp, timeout_s=10) as client:
        stream = await client.open_stream(target, COUNT_PATH, request, KINDS)
        if not stream.opened.ok:
            return stream.opened, []
        events = []
        try:
            async for kind, message in stream:
                events.append((kind, message))
        except StreamBroken as exc:
            events.append(("broken", exc))
        return stream.opened, events


def test_a_stream_is_verified_frame_by_frame_and_arrives_whole(
    net: Net, server: RunningServer
) -> None:
    opened, events = asyncio.run(_collect(net, server.url, count=30))
    assert opened.ok and [k for k, _ in events] == ["start"] + ["delta"] * 30 + ["end"]
    assert "".join(m.text for k, m in events if k == "delta") == "".join(f"{i} " for i in range(30))


def test_a_refusal_before_the_first_frame_is_a_signed_error_with_its_status(
    net: Net, server: RunningServer
) -> None:
    opened, events = asyncio.run(_collect(net, server.url, "refuse"))
    assert (opened.ok, opened.status, opened.code, events) == (False, 503, "server_busy", [])


@pytest.mark.parametrize("prompt, code", [("fail", "work_cancelled"), ("bug", "internal_error")])
def test_an_error_midway_ends_the_stream_with_a_signed_error_frame(
    net: Net, server: RunningServer, prompt: str, code: str
) -> None:
    opened, events = asyncio.run(_collect(net, server.url, prompt))
    kind, error = events[-1]
    assert opened.ok and [k for k, _ in events[:-1]] == ["start", "delta", "delta"]
    assert kind == "broken" and error.code == code


def test_a_stream_past_the_route_timeout_ends_with_handler_timeout(
    net: Net, server: RunningServer
) -> None:
    _, events = asyncio.run(_collect(net, server.url, "slow", count=1000))
    assert events[-1][0] == "broken" and events[-1][1].code == "handler_timeout"
    assert 50 < len(events) < 1000


def test_a_caller_that_leaves_frees_its_slot_and_closes_the_handler(
    net: Net, server: RunningServer, counter: Counter
) -> None:
    async def leave_early() -> None:
        target = Target(net.server_kp.ss58_address, server.url)
        request = GenerateRequest(prompt="slow", max_new_tokens=1000)
        async with SignedClient(net.miner_kp, timeout_s=10) as client:
            stream = await client.open_stream(target, COUNT_PATH, request, KINDS)
            await anext(stream)
            await anext(stream)
            await stream.close()  # the caller goes away mid-stream

    closed = counter.closed
    asyncio.run(leave_early())
    for _ in range(100):  # the server notices the disconnect within a frame or two
        if counter.closed > closed:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert counter.closed == closed + 1
    opened, events = asyncio.run(_collect(net, server.url))  # max_concurrent=1: the slot is free
    assert opened.ok and events[-1][0] == "end"


# -- a man in the middle -------------------------------------------------------------------


def _proxy(upstream: str, change: Callable[[bytes, list[bytes]], bytes]) -> web.Application:
    """Forwards each request unchanged; the answer's body goes through ``change(body, seen)``
    (``seen``: the bodies of earlier answers, for replays)."""
    seen: list[bytes] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with (
            ClientSession() as session,
            session.post(upstream + request.path_qs, data=body, headers=headers) as resp,
        ):
            raw = await resp.read()
            out = change(raw, list(seen))
            seen.append(raw)
            return web.Response(body=out, status=resp.status, content_type=resp.content_type)

    app = web.Application()
    app.router.add_post(COUNT_PATH, forward)
    return app


def _through(net: Net, server: RunningServer, change) -> list:
    async def run() -> list:
        runner = web.AppRunner(_proxy(server.url, change))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            await _collect(net, f"http://127.0.0.1:{port}")  # the first answer (for replays)
            return (await _collect(net, f"http://127.0.0.1:{port}"))[1]
        finally:
            await runner.cleanup()

    return asyncio.run(run())


def _altered_text(raw: bytes, _: list[bytes]) -> bytes:
    return raw.replace(b'"text":"2 "', b'"text":"X "')


def _dropped_frame(raw: bytes, _: list[bytes]) -> bytes:
    frames = raw.split(b"\n\n")
    return b"\n\n".join(frames[:3] + frames[4:])


def _unsigned_start(raw: bytes, _: list[bytes]) -> bytes:
    head, sep, rest = raw.partition(b"\n\n")
    return (
        b"\n".join(line for line in head.split(b"\n") if not line.startswith(b"sig:")) + sep + rest
    )


def _replayed(raw: bytes, seen: list[bytes]) -> bytes:
    return seen[-1] if seen else raw


def _truncated(raw: bytes, _: list[bytes]) -> bytes:
    return raw[: raw.rfind(b"event: end")]


@pytest.mark.parametrize(
    "change, code",
    [
        (_altered_text, "bad_stream_signature"),
        (_dropped_frame, "bad_stream_signature"),
        (_unsigned_start, "unsigned_stream"),
        (_replayed, "bad_stream_signature"),
        (_truncated, "stream_truncated"),
    ],
)
def test_a_stream_changed_in_flight_is_refused(
    net: Net, server: RunningServer, change, code
) -> None:
    events = _through(net, server, change)
    assert events and events[-1][0] == "broken" and events[-1][1].code == code, events[-1:]
    assert all(k != "end" for k, _ in events)


def test_an_unchanged_stream_through_the_proxy_is_believed(net: Net, server: RunningServer) -> None:
    events = _through(net, server, lambda raw, _: raw)
    assert events[-1][0] == "end"


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(
        st.binary(max_size=80)
        | st.sampled_from([b"\n\n", b"event: delta\n", b"data: {}\n", b"sig: 0x00\n"]),
        max_size=12,
    )
)
def test_the_frame_parser_gives_frames_or_a_named_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_bytes=256)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert frame.kind in ("start", "delta", "end", "error")
    except RequestError as exc:
        assert exc.code == "bad_stream"


# -- a validator's own allowance -----------------------------------------------------------


def test_validator_permit_holders_get_their_own_per_hotkey_allowance(net: Net) -> None:
    policy = RoutePolicy(rate_per_s=0.01, burst=2, validator=TierLimits(rate_per_s=100, burst=50))
    server = build_echo_server(net.server_kp, net.chain, net.netuid, policy=policy)

    async def burst(kp, n: int) -> list[str]:
        target = Target(net.server_kp.ss58_address, running.url)
        async with SignedClient(kp) as client:
            return [
                (await client.call(target, ECHO_PATH, EchoRequest(text="x"), EchoResponse)).code
                for _ in range(n)
            ]

    with run_in_thread(server.app) as running:
        assert asyncio.run(burst(net.miner_kp, 4)) == ["ok", "ok", "rate_limited", "rate_limited"]
        assert asyncio.run(burst(net.validator_kp, 20)) == ["ok"] * 20
