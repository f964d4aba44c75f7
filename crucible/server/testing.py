"""A trivial echo app on the real toolkit: what tests, the demo and ``bench/protocol.py`` serve.

Not a fake: it is a ``NeuronServer`` with real auth, registration checks, limits and signing;
only the handlers are trivial (echo the text back, optionally after sleeping).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from pydantic import Field

from crucible.chain.interface import Chain
from crucible.protocol.auth import Signer
from crucible.protocol.messages import INFO_PATH, Message, ModelInfoResponse
from crucible.server.app import CallContext, NeuronServer
from crucible.server.policy import Access, RoutePolicy

__all__ = [
    "ECHO_PATH",
    "STAKED_ECHO_PATH",
    "VALIDATOR_ECHO_PATH",
    "EchoRequest",
    "EchoResponse",
    "build_echo_server",
]

ECHO_PATH = "/v1/echo"
VALIDATOR_ECHO_PATH = "/v1/validator/echo"
STAKED_ECHO_PATH = "/v1/staked/echo"


class EchoRequest(Message):
    text: str = Field(max_length=4096)
    sleep_ms: int = Field(default=0, ge=0, le=60_000)


class EchoResponse(Message):
    text: str = Field(max_length=4096)
    caller_hotkey: str
    caller_uid: int


async def _echo(request: EchoRequest, ctx: CallContext) -> EchoResponse:
    if request.sleep_ms:
        await asyncio.sleep(request.sleep_ms / 1000)
    return EchoResponse(text=request.text, caller_hotkey=ctx.hotkey, caller_uid=ctx.neuron.uid)


def build_echo_server(
    keypair: Signer,
    chain: Chain,
    netuid: int,
    *,
    policy: RoutePolicy | None = None,
    min_stake_rao: int = 1,
    metagraph_refresh_s: float = 12.0,
) -> NeuronServer:
    """Echo routes for any registered caller, validators only, and callers with stake."""
    policy = policy or RoutePolicy()
    server = NeuronServer(keypair, chain, netuid, metagraph_refresh_s=metagraph_refresh_s)
    server.route(ECHO_PATH, EchoRequest, EchoResponse, _echo, policy=policy)
    server.route(
        VALIDATOR_ECHO_PATH,
        EchoRequest,
        EchoResponse,
        _echo,
        policy=_with_access(policy, Access.VALIDATOR, 0),
    )
    server.route(
        STAKED_ECHO_PATH,
        EchoRequest,
        EchoResponse,
        _echo,
        policy=_with_access(policy, Access.MIN_STAKE, min_stake_rao),
    )
    hotkey = keypair.ss58_address

    async def info(_request: None, _ctx: CallContext) -> ModelInfoResponse:
        return ModelInfoResponse(hotkey=hotkey, competition_id="echo")

    server.route(INFO_PATH, None, ModelInfoResponse, info, policy=policy)
    return server


def _with_access(policy: RoutePolicy, access: Access, min_stake_rao: int) -> RoutePolicy:
    return replace(policy, access=access, min_stake_rao=min_stake_rao)
