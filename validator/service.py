"""The validator as a long-running process: rounds on an interval, reveals on every tick, the
published bundles served, chain outages retried with backoff — never fatal.

``run_service`` loops until ``rounds`` are done (0: forever) or a stop signal raises out of it:
* a round every ``interval_s`` (``loop.run_round``);
* between rounds, every ``tick_s``: a pending commit is revealed as soon as the chain's window
  opens (``submit.try_reveal``), so the reveal does not wait for the next round;
* the chain unreachable (or timing out): reported, retried after 1, 2, 4 … ``max_backoff_s``
  seconds; the state on disk stays whole in between.
``serve_bundles`` starts the public, keyless bundle endpoint and registers it on chain; it also
serves the collab checkpoints and payloads of the validator's store and its signed checkpoint
pointers, for miners and validators that share no disk with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from crucible.chain.interface import ServeEndpoint
from crucible.collab.checkpoint import latest_pointer
from crucible.protocol.errors import ChainError, ChainUnavailable
from crucible.server import RunningServer, run_in_thread
from crucible.server.objects import ClientLimit
from crucible.store.documents import DocumentStore
from crucible.store.local import LocalStore
from crucible.validator.bundle_server import build_bundle_server
from crucible.validator.loop import RoundOutcome, run_round
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import ValidatorState, save_state
from crucible.validator.submit import try_reveal

__all__ = ["ServiceConfig", "run_service", "serve_bundles"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceConfig:
    interval_s: float = 60.0
    tick_s: float = 6.0
    rounds: int = 0  # 0: forever
    max_backoff_s: float = 60.0


def _transient_chain_error(exc: ChainError) -> bool:
    return isinstance(exc, ChainUnavailable) or exc.code in ("timeout", "bad_response")


def run_service(
    rt: ValidatorRuntime,
    state: ValidatorState,
    cfg: ServiceConfig,
    *,
    on_round: Callable[[RoundOutcome], None],
    on_note: Callable[[str], None],
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Returns the number of rounds run."""
    done, backoff, next_round, last_note = 0, 0.0, clock(), None
    while True:
        try:
            if clock() >= next_round:
                on_round(run_round(rt, state))
                done, next_round = done + 1, clock() + cfg.interval_s
                if cfg.rounds and done >= cfg.rounds:
                    return done
            elif state.pending_reveal is not None:
                note = try_reveal(rt, state)
                save_state(state, rt.config.state_path)
                if note is not None and note != last_note:
                    on_note(note)
                last_note = note
            backoff = 0.0
        except ChainError as exc:
            if not _transient_chain_error(exc):
                raise
            backoff = min(cfg.max_backoff_s, max(1.0, backoff * 2))
            on_note(f"chain unavailable ({exc.message}); retrying in {backoff:g} s")
            sleep(backoff)
            continue
        sleep(max(0.0, min(cfg.tick_s, next_round - clock())))


def _own_pointer(documents: DocumentStore, hotkey: str) -> Callable[[str], bytes | None]:
    """The newest checkpoint pointer this validator signed for a competition, as stored."""

    def newest(competition: str) -> bytes | None:
        pointer = latest_pointer(documents, competition, {hotkey})
        return None if pointer is None else pointer.to_bytes()

    return newest


def serve_bundles(
    rt: ValidatorRuntime,
    state: ValidatorState,
    host: str,
    port: int,
    external_ip: str,
    limit: ClientLimit = ClientLimit(),
) -> RunningServer:
    """Serve this validator's bundles and put the endpoint on chain (where auditors look);
    ``limit`` is each client address's allowance (miners fetch checkpoints here too)."""
    if rt.documents is None:
        raise ValueError("the runtime has no document store to serve bundles from")

    def latest() -> str | None:
        return state.last_bundle.removesuffix(".json") if state.last_bundle else None

    store = rt.resolve_store("local")
    app = build_bundle_server(
        rt.documents, latest, limit=limit, metrics=rt.metrics.registry,
        objects=store if isinstance(store, LocalStore) else None,
        latest_pointer=_own_pointer(rt.documents, rt.keypair.ss58_address),
    )  # fmt: skip
    running = run_in_thread(app, host, port)
    mg = rt.chain.metagraph(rt.config.netuid)
    me = mg.by_hotkey(rt.keypair.ss58_address)
    if (
        me is None
        or me.endpoint is None
        or (me.endpoint.ip, me.endpoint.port) != (external_ip, running.port)
    ):
        result = rt.chain.submit(
            ServeEndpoint(rt.config.netuid, external_ip, running.port), rt.keypair
        )
        if not result.ok:
            log.warning(
                "bundle endpoint not registered on chain: %s: %s", result.code, result.message
            )
    return running
