"""The miner's part in a collab competition: one round after another.

A round ``r`` (``spec.window(r)``): take the newest checkpoint an aggregator signed a pointer for
(checkpoint 0 from the spec's seed before any exists), fetch it from the store by its id, train
``inner_steps`` AdamW steps on this hotkey's assignment for the round (a pure function of hotkey,
round and the window's first block hash), add the error-feedback residual, compress, commit the
payload's hash on chain and only then put the payload in the store (so nobody can copy it and
commit first), and keep the new residual on disk. A round whose deadline passes before the
commitment lands is skipped with its reason, and the residual is left as it was. The inner
AdamW's moments are kept on disk too, from one round to the next (``InnerMoments``: a fresh
optimizer every round costs the run far more than any other choice a miner makes here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from crucible.chain.interface import Chain, SetCommitment, Signer
from crucible.collab.checkpoint import (
    CHECKPOINT_FILE,
    aggregator_hotkeys,
    anchored_checkpoint,
    checkpoint_id,
    latest_pointer,
    load_checkpoint_dir,
)
from crucible.collab.codec import ErrorFeedback, PayloadMeta, encode_payload
from crucible.collab.engine import assigned_windows
from crucible.collab.payload_store import payload_hash, put_payload
from crucible.collab.peer_sync import pull_checkpoint, pull_published
from crucible.collab.shared_model import build_shared_model, genesis_params, param_shapes
from crucible.miner.collab_train import InnerMoments, inner_train
from crucible.miner.distributed import broadcast_object
from crucible.observe.logs import log_event
from crucible.protocol.collab import CollabSpec, PayloadCommitment
from crucible.protocol.errors import ConfigError, CrucibleError
from crucible.store.base import ModelStore
from crucible.store.documents import DocumentStore
from crucible.store.local import LocalStore

__all__ = ["CollabMiner", "RoundReport", "commit_payload", "follow"]

log = logging.getLogger(__name__)
T = TypeVar("T")
RESIDUAL_FILE = "residual.safetensors"
# every rank reads it at start (one work dir for all); rank 0 writes it
MOMENTS_FILE = "inner_moments.safetensors"


@dataclass(frozen=True)
class RoundReport:
    round_index: int
    outcome: str  # "committed" or why not
    base_checkpoint: str = ""
    payload_hash: str = ""
    payload_bytes: int = 0
    dense_bytes: int = 0
    block: int | None = None
    train_seconds: float = 0.0


@dataclass
class CollabMiner:
    chain: Chain
    hotkey: Signer
    netuid: int
    spec: CollabSpec
    store: ModelStore
    documents: DocumentStore
    train_tokens: np.ndarray
    work_dir: Path
    device: str = "cpu"
    cluster: object | None = None

    @property
    def _rank(self) -> int:
        return 0 if self.cluster is None else self.cluster.rank

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._genesis = genesis_params(self.spec)
        self._shapes = param_shapes(self._genesis)
        self._genesis_id = checkpoint_id(self._genesis, None, competition=self.spec.key)
        self.feedback = _kept(
            self.work_dir / RESIDUAL_FILE,
            lambda path: ErrorFeedback.load(path, self._shapes, self.spec.codec),
            lambda: ErrorFeedback(self._shapes, self.spec.codec),
        )
        self.moments = _kept(
            self.work_dir / MOMENTS_FILE,
            lambda path: InnerMoments.load(path, self._shapes),
            InnerMoments,
        )

    def current_checkpoint(self) -> tuple[str, int | None]:
        """(checkpoint id, the round it opens; None for checkpoint 0): the one an aggregator's
        bundle anchored on chain names, or a newer one its signed pointer names (the anchor may
        wait for the commitment rate limit)."""
        mg = self.chain.metagraph(self.netuid)
        aggregators = aggregator_hotkeys(self.spec, mg.owner_hotkey)
        pointer = latest_pointer(self.documents, self.spec.key, aggregators)
        if pointer is None or pointer.round_index < self.spec.round_of(mg.block):
            # ask the aggregators' endpoints only while the open round's pointer is missing
            for note in pull_published(self.spec, mg, self.documents):
                log_event(log, "collab_peer_unavailable", level=logging.WARNING, note=note)
            pointer = latest_pointer(self.documents, self.spec.key, aggregators)
        anchored = anchored_checkpoint(mg, self.documents, self.spec.key, aggregators)
        if pointer is not None and (anchored is None or pointer.round_index > anchored[1]):
            return pointer.checkpoint, pointer.round_index
        return anchored if anchored is not None else (self._genesis_id, None)

    def checkpoint_params(self, checkpoint: str) -> dict[str, torch.Tensor]:
        """The parameters of checkpoint ``checkpoint`` (fetched from the store, every name and
        shape checked against the spec's model; checkpoint 0 is built from the seed)."""
        if checkpoint == self._genesis_id:
            return self._genesis
        if isinstance(self.store, LocalStore) and not self.store.exists("local", checkpoint):
            mg = self.chain.metagraph(self.netuid)  # only to find the aggregators' endpoints
            pull_checkpoint(self.spec, mg, self.store, checkpoint, self._shapes)
        folder = self.store.get("local", checkpoint, self.work_dir / "checkpoints" / f"rank{self._rank}", max_bytes=1 << 34,
                                allowed_files={CHECKPOINT_FILE})  # fmt: skip
        return load_checkpoint_dir(folder, self._shapes, competition=self.spec.key).params

    def train_round(self, r: int, checkpoint: str):
        """(compressed payload, Δ's training seconds) for round ``r`` from ``checkpoint``."""
        first, _ = self.spec.window(r)
        starts = assigned_windows(self.spec, self.hotkey.ss58_address, r, self.chain.block_hash(first),
                                  len(self.train_tokens))  # fmt: skip
        model = build_shared_model(
            self.spec, self.checkpoint_params(checkpoint), device=self.device
        )
        started = time.perf_counter()
        delta = inner_train(
            model, self.train_tokens, starts, steps=self.spec.inner_steps, batch_size=self.spec.batch_size,
            lr=self.spec.inner_lr, weight_decay=self.spec.inner_weight_decay, device=self.device,
            cluster=self.cluster, sequence_length=self.spec.model.sequence_length,
            moments=self.moments,
        )  # fmt: skip
        if self.cluster is None or self.cluster.is_main:
            self.moments.save(self.work_dir / MOMENTS_FILE)
        return delta, time.perf_counter() - started

    def submit(self, r: int, checkpoint: str, delta: dict[str, torch.Tensor]) -> RoundReport:
        """Compress Δ with error feedback, commit its hash, then store it."""
        from crucible.collab.codec import dense_bytes

        before = self.feedback.residual
        compressed = self.feedback.step(delta)
        meta = PayloadMeta(self.spec.key, r, checkpoint, self.hotkey.ss58_address)
        raw = encode_payload(compressed, meta)
        digest, result = commit_payload(self.chain, self.netuid, self.hotkey, self.spec.key, r, raw)
        deadline = self.spec.window(r)[1]
        if not result.ok or (result.block is not None and result.block > deadline):
            self.feedback.restore(before)
            why = (
                result.message
                if not result.ok
                else f"committed at block {result.block}, after the deadline {deadline}"
            )
            return RoundReport(
                r, f"not counted: {why}", checkpoint, digest, len(raw), block=result.block
            )
        put_payload(self.store, raw)
        self.feedback.save(self.work_dir / RESIDUAL_FILE)
        log_event(log, "collab_payload_committed", round=r, block=result.block, payload=digest[:16],
                  bytes=len(raw), checkpoint=checkpoint[:16])  # fmt: skip
        return RoundReport(
            r, "committed", checkpoint, digest, len(raw), dense_bytes(self._shapes), result.block
        )

    def run_round(self, r: int, checkpoint: str | None = None) -> RoundReport:
        """Train round ``r`` (every rank under torchrun) and submit it (rank 0 only)."""
        checkpoint = checkpoint or self.current_checkpoint()[0]
        delta, seconds = self.train_round(r, checkpoint)
        if self.cluster is not None and not self.cluster.is_main:
            return RoundReport(
                r, f"trained on rank {self.cluster.rank}", checkpoint, train_seconds=seconds
            )
        report = self.submit(r, checkpoint, delta)
        return RoundReport(**{**report.__dict__, "train_seconds": seconds})


def _kept(path: Path, load: Callable[[Path], T], fresh: Callable[[], T]) -> T:
    """What a miner keeps between rounds (its residual, its AdamW moments), read back from
    ``path``; a missing file, or one for another model, starts afresh (logged)."""
    if not path.exists():
        return fresh()
    try:
        return load(path)
    except ConfigError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return fresh()


def commit_payload(chain: Chain, netuid: int, hotkey: Signer, competition: str, r: int, raw: bytes):
    """Commit the hash of the encoded payload ``raw`` for round ``r``, bound to ``hotkey``
    (store the bytes only after: nobody can copy a payload and commit it first). Returns
    (payload hash, the chain's result)."""
    digest = payload_hash(raw)
    text = str(PayloadCommitment.for_payload(competition, r, "local", digest, hotkey.ss58_address))
    return digest, chain.submit(SetCommitment(netuid, text), hotkey)


def _next_round(miner: CollabMiner, last: int | None) -> tuple[int, str] | None:
    """(round, checkpoint) to train now, or None to wait: a new window whose checkpoint the
    aggregator has published (or half the window gone: the newest there is)."""
    spec = miner.spec
    block = miner.chain.block()
    r = spec.round_of(block)
    if r == last:
        return None
    checkpoint, opens = miner.current_checkpoint()
    if opens is not None and opens < r and block < spec.window(r)[0] + spec.round_blocks // 2:
        return None  # the aggregator is still scoring the last round
    return r, checkpoint


def _decide(miner: CollabMiner, last: int | None, poll_s: float, stop) -> tuple[int, str] | None:
    """Rank 0 waits for the next round (None: stopped); under torchrun every rank gets it."""
    cluster = miner.cluster
    decision = None
    if cluster is None or cluster.is_main:
        while decision is None and not (stop is not None and stop.is_set()):
            try:
                decision = _next_round(miner, last)
            except CrucibleError as exc:
                if not exc.transient:
                    raise
                log_event(log, "collab_waiting", level=logging.WARNING, code=exc.code,
                          message=exc.message[:300])  # fmt: skip
            if decision is None:
                time.sleep(poll_s)
    return decision if cluster is None else broadcast_object(decision, cluster)


def follow(miner: CollabMiner, rounds: int | None = None, *, poll_s: float = 2.0, stop=None):
    """Take part in every round from now on (``rounds`` of them, or until ``stop`` is set):
    wait for the aggregator's checkpoint of the round (at most half the window, then train from
    the newest there is), train, submit; yields each round's report. A chain or store that is
    briefly unreachable is waited for, and a round whose checkpoint cannot be had for now
    (an aggregator out of reach, or busy) is tried again while its window is open; a round
    that cannot be trained (its checkpoint is corrupt) is skipped with its reason. Under
    torchrun rank 0 decides the round and every rank trains its share of each batch."""
    done, last = 0, None
    while rounds is None or done < rounds:
        decision = _decide(miner, last, poll_s, stop)
        if decision is None:
            return
        previous, (last, checkpoint) = last, decision
        try:
            report = miner.run_round(last, checkpoint)
        except CrucibleError as exc:
            if miner.cluster is not None and miner.cluster.distributed:
                raise  # every rank must stop together: torchrun tears the group down
            if exc.transient:
                log_event(log, "collab_round_retry", level=logging.WARNING, round=last,
                          code=exc.code, message=exc.message[:300])  # fmt: skip
                last = previous  # the same round again, if its window is still open
                time.sleep(poll_s)
                continue
            log_event(log, "collab_round_skipped", level=logging.WARNING, round=last,
                      code=exc.code, message=exc.message[:300])  # fmt: skip
            report = RoundReport(last, f"skipped: {exc.code}: {exc.message}"[:300])
        done += 1
        yield report
