"""``connect(network)``: the right ``Chain`` backend for a ``--network`` value.

``localnet`` (the default) → our embedded chain at ``--chain-endpoint`` /
``CRUCIBLE_LOCALNET_URL`` (default ``http://127.0.0.1:9946``); ``finney``, ``test``, ``local``,
``archive``, ``ws://…``, ``wss://…`` → the real network through the bittensor 11 SDK.
"""

from __future__ import annotations

import os

from crucible.chain.interface import Chain
from crucible.chain.local.client import DEFAULT_LOCALNET_URL, LocalChain
from crucible.protocol.errors import ConfigError

__all__ = ["REAL_NETWORKS", "connect"]

REAL_NETWORKS = ("finney", "test", "local", "archive", "devnet")


def connect(
    network: str = "localnet", *, endpoint: str | None = None, timeout_s: float = 10.0
) -> Chain:
    if network == "localnet":
        return LocalChain(
            endpoint or os.environ.get("CRUCIBLE_LOCALNET_URL", DEFAULT_LOCALNET_URL),
            timeout_s=timeout_s,
        )
    if network in REAL_NETWORKS or network.startswith(("ws://", "wss://")):
        from crucible.chain.bittensor import BittensorChain

        return BittensorChain(network if endpoint is None else endpoint, timeout_s=timeout_s)
    raise ConfigError(
        f"unknown network {network!r}",
        fix="use localnet (default), finney, test, local, or a ws:// / wss:// endpoint",
    )
