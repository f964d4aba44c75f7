"""Run the miner's server and keep it serving the model this hotkey has committed on chain.

A watcher polls the chain; when the commitment changes (a new publish), it fetches the model from
the store, verifies it, and swaps it in without stopping the server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from crucible.chain.interface import Chain, ServeEndpoint, Signer
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel
from crucible.models.fetch import fetch_and_verify
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import CrucibleError
from crucible.store.resolve import StoreResolver

__all__ = ["CommitmentWatcher", "load_committed", "register_endpoint"]

log = logging.getLogger(__name__)


def load_committed(
    chain: Chain, netuid: int, hotkey: str, competitions: dict[str, CompetitionSpec], specs_dir: Path,
    resolve_store: StoreResolver, cache_dir: Path,
) -> ServedModel:  # fmt: skip
    commitment = chain.commitments(netuid).get(hotkey)
    if commitment is None:
        raise CrucibleError(
            f"hotkey {hotkey} has no commitment on netuid {netuid}",
            code="no_commitment",
            fix="run `crucible-miner publish` first",
        )
    fetched = fetch_and_verify(commitment.data, hotkey, competitions, resolve_store, cache_dir)
    spec = next(s for s in competitions.values() if s.key == fetched.commitment.competition)
    return ServedModel(
        model=fetched.loaded.model, tokenizer=load_tokenizer(specs_dir / spec.model.tokenizer),
        competition=spec.key, commitment=commitment.data, commit_block=commitment.block,
        max_positions=spec.model.sequence_length,
    )  # fmt: skip


def register_endpoint(chain: Chain, netuid: int, keypair: Signer, ip: str, port: int) -> None:
    neuron = chain.metagraph(netuid).by_hotkey(keypair.ss58_address)
    if (
        neuron is not None
        and neuron.endpoint is not None
        and (neuron.endpoint.ip, neuron.endpoint.port) == (ip, port)
    ):
        return
    chain.submit(ServeEndpoint(netuid=netuid, ip=ip, port=port), keypair).raise_for_failure()


class CommitmentWatcher:
    def __init__(self, slot: ModelSlot, interval_s: float, load: Callable[[], ServedModel]) -> None:
        self._slot, self._interval, self._load = slot, interval_s, load
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commitment-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                served = self._load()
            except CrucibleError as exc:
                log.warning("cannot load the committed model: %s", exc)
                continue
            if served.commitment != self._slot.current.commitment:
                self._slot.swap(served)
                log.info("now serving %s", served.commitment)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
