"""A collab miner's endpoint: the payloads it committed, served to every validator by content hash.

Validators on other machines copy each round's payload from the endpoint of the hotkey that
committed it (``crucible.collab.peer_sync.pull_payloads``) and keep it only if it hashes to the
committed id; a miner that serves nothing, the wrong bytes or too many is rejected for that round,
no one else is. The miner puts a payload in its store only after its commitment landed, so nothing
is served that could be copied and committed first.

Port 0 means the port this hotkey already has on chain for this address when it is free (a
restarted miner keeps its endpoint: the chain refuses a changed one for a while), else any free
one. An endpoint the chain refuses to record is a warning, not a stop: the miner still trains,
and its payloads reach validators that share its store.
"""

from __future__ import annotations

import logging

from crucible.chain.interface import Chain, Signer
from crucible.collab.payload_store import PAYLOAD_FILE
from crucible.miner.serving_loop import register_endpoint
from crucible.observe.logs import log_event
from crucible.protocol.errors import ConfigError, CrucibleError
from crucible.server.objects import build_object_server
from crucible.server.runner import RunningServer, run_in_thread
from crucible.store.local import LocalStore

__all__ = ["serve_payloads"]

log = logging.getLogger(__name__)


def _port_on_chain(chain: Chain, netuid: int, hotkey: str, ip: str) -> int | None:
    neuron = chain.metagraph(netuid).by_hotkey(hotkey)
    if neuron is None or neuron.endpoint is None or neuron.endpoint.ip != ip:
        return None
    return neuron.endpoint.port


def serve_payloads(
    chain: Chain, netuid: int, hotkey: Signer, store: LocalStore, host: str, port: int,
    external_ip: str | None = None,
) -> RunningServer:  # fmt: skip
    """Serve ``store``'s payloads on ``host:port`` and put the endpoint on chain."""
    ip = external_ip or host
    app = build_object_server(store, {PAYLOAD_FILE})
    known = _port_on_chain(chain, netuid, hotkey.ss58_address, ip) if port == 0 else None
    try:
        running = run_in_thread(app, host, known or port)
    except ConfigError:
        if known is None:
            raise
        running = run_in_thread(app, host, 0)  # the old port is taken: any free one
    try:
        register_endpoint(chain, netuid, hotkey, ip, running.port)
    except CrucibleError as exc:
        if exc.transient:
            running.stop()
            raise
        log_event(log, "collab_endpoint_not_registered", level=logging.WARNING, code=exc.code,
                  message=exc.message[:300], fix="validators on other machines cannot fetch "
                  "this miner's payloads until its endpoint is on chain")  # fmt: skip
    return running
