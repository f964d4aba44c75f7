"""Hostile streaming miners cost only themselves, and abandoned streams cost the miner nothing.

A real local chain; an honest miner (the real miner app, a real tiny model) ranked below hostile
ones that stall before their first token, send bytes that are no event stream, forward another
hotkey's signed stream, or break off after their first token. Clients (``Subnet`` and the
OpenAI gateway with the official ``openai`` package) must get the honest answer wherever that is
still possible, and a clear error where it is not. Then callers who open more streams than
there are slots and walk away must leave the honest miner's capacity whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web

from crucible.chain.interface import ServeEndpoint, SetCommitment, SetWeights
from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.client.gateway import ApiKeys, build_gateway
from crucible.client.subnet import Subnet
from crucible.client.transport import SignedClient, StreamBroken, Target
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.models.build import tiny_model
from crucible.protocol.auth import sign_request
from crucible.protocol.messages import (
    GENERATE_PATH,
    GENERATE_STREAM_PATH,
    STREAM_DELTA,
    STREAM_END,
    STREAM_START,
    GenerateRequest,
    GenerateResponse,
    StreamDelta,
    StreamEnd,
    StreamStart,
)
from crucible.server import NeuronServer, RoutePolicy, RunningServer, run_in_thread
from crucible.server.policy import Access
from tests.client.world import _register
from tests.conftest import TEST_HYPERPARAMETERS, keypair

KEY = "sk-hostile-0123456789"
HOSTILE = ("stalls", "garbage", "forwards", "breaks")
KINDS = {STREAM_START: StreamStart, STREAM_DELTA: StreamDelta, STREAM_END: StreamEnd}


def commitment(name: str) -> str:
    return f"tiny@1:local:{'abcdef'[len(name) % 6] * 64}:{name.encode().hex()[:32].ljust(32, '0')}"


@dataclass
class Net:
    node: LocalNode
    validator: object
    uids: dict[str, int] = field(default_factory=dict)
    hotkeys: dict[str, object] = field(default_factory=dict)
    servers: list = field(default_factory=list)
    honest: RunningServer | None = None


class _HostileStream:
    """What the hostile miners send on the stream route (their other routes are absent)."""

    def __init__(self, behaviour: str, commitment: str, honest_url: str) -> None:
        self.behaviour, self.commitment, self.honest_url = behaviour, commitment, honest_url

    async def handle(self, request: GenerateRequest, ctx) -> AsyncIterator:
        return self._events(request)

    async def _events(self, request: GenerateRequest) -> AsyncIterator:
        yield STREAM_START, StreamStart(commitment=self.commitment, prompt_tokens=1)
        if self.behaviour == "stalls":
            await asyncio.sleep(60)
        yield STREAM_DELTA, StreamDelta(token_ids=[5], text=" hostile")
        raise StreamBroken("the hostile miner breaks off", code="work_cancelled")


def _raw_app(behaviour: str, honest: Target, own_key) -> web.Application:
    """A miner endpoint outside the toolkit: garbage, or the honest miner's signed stream for
    the same request (asked under its own key) passed off as its own."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if behaviour == "garbage":
            return web.Response(
                body=b"\x00\xffnot a frame at all\n\n", content_type="text/event-stream"
            )
        body = await request.read()
        headers = sign_request(
            own_key, method="POST", path=GENERATE_STREAM_PATH, body=body,
            receiver_ss58=honest.hotkey,
        )  # fmt: skip
        headers["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as session,
            session.post(honest.url + GENERATE_STREAM_PATH, data=body, headers=headers) as resp,
        ):
            raw = await resp.read()
            return web.Response(body=raw, status=resp.status, content_type=resp.content_type)

    app = web.Application()
    app.router.add_post(GENERATE_STREAM_PATH, handle)
    return app


class _RawServer:
    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        import threading

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("hostile-streams")
    node = LocalNode(
        tmp / "chain",
        NodeConfig(
            owner_coldkey=keypair("owner-coldkey").ss58_address,
            hyperparameters=TEST_HYPERPARAMETERS,
        ),
    )
    _, validator = _register(node, "hostile-validator", stake_tao=100)
    world = Net(node, validator)
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    for name in (*HOSTILE, "honest"):
        world.uids[name], world.hotkeys[name] = _register(node, f"hostile-{name}")
        node.submit(
            SetCommitment(netuid=1, data=commitment(name)), world.hotkeys[name]
        ).raise_for_failure()
    served = ServedModel(tiny_model(vocab_size=8192), tok, "tiny@1", commitment("honest"), 1, 64)
    world.honest = run_in_thread(
        build_miner_server(
            world.hotkeys["honest"], node, 1, ModelSlot(served), metagraph_refresh_s=0.5
        ).app
    )
    world.servers.append(world.honest)
    for name in HOSTILE:
        if name in ("garbage", "forwards"):
            honest = Target(world.hotkeys["honest"].ss58_address, world.honest.url)
            raw = _RawServer(_raw_app(name, honest, world.hotkeys[name]))
            world.servers.append(raw)
            port = raw.port
        else:
            app = NeuronServer(world.hotkeys[name], node, 1)
            policy = RoutePolicy(access=Access.SIGNED, timeout_s=120)
            handler = _HostileStream(name, commitment(name), world.honest.url).handle
            app.stream_route(GENERATE_STREAM_PATH, GenerateRequest, handler, policy=policy)
            running = run_in_thread(app.app)
            world.servers.append(running)
            port = running.port
        node.submit(
            ServeEndpoint(netuid=1, ip="127.0.0.1", port=port), world.hotkeys[name]
        ).raise_for_failure()
    node.submit(
        ServeEndpoint(netuid=1, ip="127.0.0.1", port=world.honest.port), world.hotkeys["honest"]
    ).raise_for_failure()
    node.step(TEST_HYPERPARAMETERS.tempo)
    uids = tuple(world.uids[n] for n in (*HOSTILE, "honest"))
    weights = (50_000, 40_000, 30_000, 20_000, 1_000)  # every hostile miner ranks above
    node.submit(SetWeights(netuid=1, uids=uids, values=weights), validator).raise_for_failure()
    node.step(TEST_HYPERPARAMETERS.tempo)
    yield world
    for server in world.servers:
        server.stop()
    node.close()


def _subnet(net: Net, **kwargs) -> Subnet:
    return Subnet(
        net.node, 1, net.validator, timeout_s=2, metagraph_ttl_s=60, max_attempts=8, **kwargs
    )


def test_hostile_miners_before_the_first_token_only_cost_an_attempt(net: Net) -> None:
    """stalls (no token within the wait), garbage (no event stream), forwards (signed by another
    hotkey) are passed over; breaks gives its first token, so it is the answer — and then the
    stream ends in ``StreamBroken``, not in a silent truncation."""
    subnet = _subnet(net)
    items = []
    with pytest.raises(StreamBroken, match="breaks off"):
        for item in subnet.stream("Thou art", max_new_tokens=4):
            items.append(item)
    started = items[0]
    u = net.uids
    assert started.uid == u["breaks"]
    assert started.attempts[u["stalls"]].startswith("timeout")
    assert started.attempts[u["garbage"]].startswith("bad_stream:")
    assert started.attempts[u["forwards"]].startswith("bad_stream_signature")
    # the miner that broke now waits out its cool-down: the next stream is the honest one
    again = list(subnet.stream("Thou art", max_new_tokens=4))
    assert again[0].uid == u["honest"] and again[-1].completion_tokens == 4


def test_the_gateway_answers_whole_from_another_miner_and_ends_a_broken_stream_with_an_error(
    net: Net, tmp_path: Path
) -> None:
    subnet = _subnet(net)
    app = build_gateway(
        subnet, ApiKeys({KEY: "x"}), usage_log=tmp_path / "u.jsonl", rate_per_s=100, burst=100
    )
    with run_in_thread(app) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
        whole = client.completions.create(
            model="crucible-subnet", prompt="Thou art", max_tokens=4, temperature=0
        )
        assert whole.model_extra["crucible"]["served_by"][0]["uid"] == net.uids["honest"]
        assert "hostile" not in whole.choices[0].text
        for hotkey in (net.hotkeys["breaks"].ss58_address,):
            subnet.latency.record(hotkey, 0.01)  # out of its cool-down: it is tried first again
        with pytest.raises(openai.APIError, match="broke off"):
            list(
                client.completions.create(
                    model="crucible-subnet", prompt="Thou art", max_tokens=4, stream=True
                )
            )


def test_callers_who_open_streams_and_walk_away_leave_the_capacity_whole(net: Net) -> None:
    target = Target(net.hotkeys["honest"].ss58_address, net.honest.url)

    async def walk_away(i: int) -> None:
        async with SignedClient(net.validator, timeout_s=30) as client:
            request = GenerateRequest(prompt="Thou art", max_new_tokens=200)
            stream = await client.open_stream(target, GENERATE_STREAM_PATH, request, KINDS)
            if stream.opened.ok:
                await anext(stream)
            await stream.close()

    async def run() -> list:
        for wave in range(3):  # 36 abandoned streams: more than the 32 slots there are
            await asyncio.gather(*(walk_away(wave * 12 + i) for i in range(12)))
            await asyncio.sleep(0.5)
        async with SignedClient(net.validator) as client:
            request = GenerateRequest(prompt="Thou art", max_new_tokens=8)
            return [
                await client.call(target, GENERATE_PATH, request, GenerateResponse)
                for _ in range(5)
            ]

    answers = asyncio.run(run())
    assert all(a.ok for a in answers), [a.code for a in answers]
