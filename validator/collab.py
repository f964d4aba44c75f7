"""The validator's part in a collab competition: one closed round at a time.

For the newest round whose scoring block exists (``closed_round``): read the round's payload
commitments from the metagraph, fetch and decode each uid's payload on its own (a bad one is a
rejection with its reason; a store outage holds the uid, rating kept), draw the scoring data
from the block after the deadline, run ``crucible.collab.engine.score_payloads`` (the pure
round), store the next checkpoint, sign its pointer when this validator is an aggregator, and
return the ``CollabRound`` the bundle records. A round with nobody in it still moves the
checkpoint's round index forward (unchanged weights): training slows, never stalls.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crucible.chain.interface import Metagraph, Neuron
from crucible.collab.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointPointer,
    aggregator_hotkeys,
    latest_pointer,
    load_checkpoint_dir,
    publish_pointer,
    round_checkpoint,
    store_checkpoint,
)
from crucible.collab.codec import Compressed, decode_payload, max_payload_bytes
from crucible.collab.engine import Submission, draw_round_data, score_payloads
from crucible.collab.payload_store import fetch_payload
from crucible.collab.peer_sync import (
    PayloadPull,
    aggregator_endpoints,
    payload_limits,
    pull_checkpoint,
    pull_payloads,
    pull_published,
)
from crucible.collab.shared_model import (
    build_shared_model,
    genesis_params,
    load_params,
    param_shapes,
)
from crucible.observe.logs import log_event
from crucible.protocol.collab import CollabSpec, PayloadCommitment
from crucible.protocol.errors import CommitmentError, CrucibleError, PayloadRejected, StoreError
from crucible.store.local import LocalStore
from crucible.validator.bundle import CarriedCompetition
from crucible.validator.collab_record import CollabRound, MeasuredLosses
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import CollabProgress, ValidatorState

__all__ = ["CollabRuntime", "aggregators", "closed_round", "prefetch_open_round", "score_collab"]

log = logging.getLogger(__name__)
HISTORY = 64


@dataclass
class CollabRuntime:
    """What a validator loads once per collab competition, and the checkpoint it holds."""

    spec: CollabSpec
    train_tokens: np.ndarray
    eval_tokens: np.ndarray
    payloads: dict[str, Compressed] = field(default_factory=dict)  # last round's, by hash
    checkpoint_id: str | None = None
    checkpoint: Checkpoint | None = None
    model: torch.nn.Module | None = None
    # (the open round, the payload hashes already tried in it)
    prefetched: tuple[int, set[str]] = field(default_factory=lambda: (-1, set()))


def closed_round(spec: CollabSpec, block: int) -> int:
    """The newest round whose scoring block (``spec.data_block``) is at or before ``block``."""
    return (block - spec.scoring.eval_delay_blocks + 1) // spec.round_blocks - 1


def aggregators(spec: CollabSpec, mg: Metagraph) -> set[str]:
    return aggregator_hotkeys(spec, mg.owner_hotkey)


def _point(
    rt: ValidatorRuntime,
    cr: CollabRuntime,
    mg: Metagraph,
    round_index: int,
    ckpt: str,
    prev: str | None,
) -> str | None:
    me = rt.keypair.ss58_address
    if rt.documents is None or me not in aggregators(cr.spec, mg):
        return None
    pointer = CheckpointPointer(cr.spec.key, round_index, ckpt, prev, me, mg.block).signed(
        rt.keypair
    )
    return publish_pointer(rt.documents, pointer)


def _aggregators_checkpoint(
    rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph, opens: int, mine: str
) -> str | None:
    """What an aggregator's pointer says round ``opens`` starts from, if it is out already; a
    different id than this validator's own is logged (one of the two computed wrongly)."""
    if rt.documents is None:
        return None
    pointer = latest_pointer(rt.documents, cr.spec.key, aggregators(cr.spec, mg))
    if pointer is None or pointer.round_index != opens:
        return None
    if pointer.checkpoint != mine:
        log_event(log, "collab_checkpoint_mismatch", level=logging.WARNING, round=opens - 1,
                  ours=mine[:16], aggregators=pointer.checkpoint[:16])  # fmt: skip
    return pointer.checkpoint


def _start(rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph) -> CollabProgress:
    """Checkpoint 0 from the spec's seed, for the round now open."""
    first = cr.spec.round_of(mg.block)
    ckpt = store_checkpoint(
        rt.resolve_store("local"), genesis_params(cr.spec), None, competition=cr.spec.key
    )
    _point(rt, cr, mg, first, ckpt, None)
    log_event(log, "collab_genesis", competition=cr.spec.key, checkpoint=ckpt, round=first)
    return CollabProgress(checkpoint=ckpt, checkpoint_round=first, history=[ckpt])


def _catch_up(
    rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph, progress: CollabProgress, r: int
) -> None:
    """Score round ``r`` from the checkpoint the aggregators published for it when this
    validator's own differs (it missed rounds, joined late, or computed another one): that is
    what the round's miners trained from, and scoring them from any other would reject every
    honest payload as stale. Its own is kept when none is published or the published one is
    missing or corrupt in the store."""
    if rt.documents is None:
        return
    theirs = round_checkpoint(mg, rt.documents, cr.spec.key, aggregators(cr.spec, mg), r)
    if theirs is None or theirs == progress.checkpoint:
        return
    try:
        _hold_checkpoint(rt, cr, mg, theirs)
    except CrucibleError as exc:
        if exc.transient:
            raise  # the store is down here: the round waits, as for this validator's own
        log_event(log, "collab_checkpoint_unavailable", level=logging.WARNING, round=r,
                  checkpoint=theirs[:16], code=exc.code, message=exc.message[:200])  # fmt: skip
        return
    log_event(log, "collab_checkpoint_adopted", level=logging.WARNING, round=r,
              ours=progress.checkpoint[:16], ours_opens=progress.checkpoint_round,
              aggregators=theirs[:16])  # fmt: skip
    progress.checkpoint, progress.checkpoint_round = theirs, r
    progress.history = (progress.history + [theirs])[-HISTORY:]


def _hold_checkpoint(rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph, ckpt: str) -> None:
    """Load checkpoint ``ckpt`` (copied from an aggregator's endpoint first if this validator's
    store lacks it)."""
    if cr.checkpoint_id == ckpt and cr.model is not None:
        return
    shapes = param_shapes(genesis_params(cr.spec))
    store = rt.resolve_store("local")
    if isinstance(store, LocalStore):
        pull_checkpoint(cr.spec, mg, store, ckpt, shapes, skip=rt.keypair.ss58_address)
    folder = store.get(
        "local",
        ckpt,
        rt.config.work_dir / "collab",
        max_bytes=1 << 34,
        allowed_files={CHECKPOINT_FILE},
    )
    cr.checkpoint = load_checkpoint_dir(folder, shapes, competition=cr.spec.key)
    cr.model = build_shared_model(cr.spec, cr.checkpoint.params, device="cpu")
    cr.checkpoint_id = ckpt


def _payload(
    rt: ValidatorRuntime,
    cr: CollabRuntime,
    sub: Submission,
    c: PayloadCommitment,
    base: str,
    r: int,
    tmp: Path,
    unavailable: dict[int, str],
) -> Submission:
    """The uid's decoded payload, or its rejection (``unavailable``: uids whose payload could not
    be copied from their endpoint, and why); ``StoreError`` that is transient propagates."""
    spec = cr.spec
    shapes = param_shapes(cr.checkpoint.params)
    reject = _refused(spec, sub, c, r)
    if reject:
        return Submission(**{**sub.__dict__, "rejected": reject})
    if sub.uid in unavailable:
        return Submission(
            **{**sub.__dict__, "rejected": f"payload unavailable: {unavailable[sub.uid]}"}
        )
    try:
        raw = fetch_payload(rt.resolve_store(c.store_ref), c.store_ref, c.content_hash, tmp,
                            max_payload_bytes(shapes, spec.codec))  # fmt: skip
        meta, compressed = decode_payload(raw, shapes, spec.codec)
    except StoreError as exc:
        if exc.transient:
            raise
        return Submission(
            **{**sub.__dict__, "rejected": f"payload unavailable: {exc.code}: {exc.message}"[:200]}
        )
    except PayloadRejected as exc:
        return Submission(**{**sub.__dict__, "rejected": f"{exc.code}: {exc.message}"[:200]})
    wrong = [
        what for what, ok in (
            ("competition", meta.competition == spec.key), ("round", meta.round_index == r),
            ("hotkey", meta.hotkey == sub.hotkey),
        ) if not ok
    ]  # fmt: skip
    if wrong:
        return Submission(
            **{**sub.__dict__, "rejected": f"payload names another {', '.join(wrong)}"}
        )
    if meta.base_checkpoint != base:
        return Submission(
            **{
                **sub.__dict__,
                "rejected": f"stale: trained from {meta.base_checkpoint[:12]}…, the round's checkpoint is {base[:12]}…",
            }
        )
    return Submission(**{**sub.__dict__, "compressed": compressed, "payload_bytes": len(raw)})


def _refused(spec: CollabSpec, sub: Submission, c: PayloadCommitment, r: int) -> str | None:
    """Why a commitment is refused before its payload is fetched (late, or not this hotkey's)."""
    first, deadline = spec.window(r)
    if not first <= sub.commit_block <= deadline:
        return f"late: committed at block {sub.commit_block}, the window is {first}–{deadline}"
    if not c.matches(sub.hotkey):
        return "commitment not bound to this hotkey (secure hash mismatch)"
    return None


def _pull(
    rt: ValidatorRuntime,
    cr: CollabRuntime,
    mg: Metagraph,
    found: list[tuple[Neuron, Submission, PayloadCommitment]],
    r: int,
) -> dict[int, str]:
    """Copy the round's acceptable payloads this validator's store lacks from their miners'
    endpoints (or the aggregators' copies); uid → why one could not be had."""
    store = rt.resolve_store("local")
    if not isinstance(store, LocalStore):
        return {}
    pulls = [
        PayloadPull(n.uid, n.endpoint.url if n.endpoint else None, c.content_hash)
        for n, sub, c in found if c.store_ref == "local" and _refused(cr.spec, sub, c, r) is None
    ]  # fmt: skip
    shapes = param_shapes(cr.checkpoint.params if cr.checkpoint else genesis_params(cr.spec))
    cap = max_payload_bytes(shapes, cr.spec.codec)
    others = aggregator_endpoints(cr.spec, mg, skip=rt.keypair.ss58_address)
    return pull_payloads(store, pulls, cap, payload_limits(cap), others)


def _found(cr: CollabRuntime, mg: Metagraph, r: int):
    """(neuron, submission, commitment) of every uid committed to round ``r``."""
    out = []
    for neuron in mg.neurons:
        c = _commitment(neuron, cr.spec.key, r)
        if c is not None:
            sub = Submission(neuron.uid, neuron.hotkey, neuron.commitment.block, c.content_hash)
            out.append((neuron, sub, c))
    return out


def prefetch_open_round(rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph) -> None:
    """Copy the open round's payloads as soon as they are committed, each hash tried once: a
    miner that commits and then goes away still counts, and one that serves nothing costs
    one try now and one when the round is scored."""
    r = cr.spec.round_of(mg.block)
    if cr.prefetched[0] != r:
        cr.prefetched = (r, set())
    tried = cr.prefetched[1]
    fresh = [(n, sub, c) for n, sub, c in _found(cr, mg, r) if c.content_hash not in tried]
    tried.update(c.content_hash for _, _, c in fresh)
    if fresh:
        _pull(rt, cr, mg, fresh, r)  # the reasons are asked for again when the round is scored


def _collect(
    rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph, r: int, base: str
) -> tuple[dict[int, Submission], dict[int, str], dict[int, str]]:
    """(submissions, held, raw commitments) for round ``r``, each uid on its own."""
    subs: dict[int, Submission] = {}
    held: dict[int, str] = {}
    found = _found(cr, mg, r)
    raws = {neuron.uid: neuron.commitment.data for neuron, _, _ in found}
    unavailable = _pull(rt, cr, mg, found, r)
    with tempfile.TemporaryDirectory(prefix="crucible-payloads-") as tmp:
        for neuron, sub, c in found:
            try:
                subs[neuron.uid] = _payload(rt, cr, sub, c, base, r, Path(tmp), unavailable)
            except CrucibleError as exc:  # transient: the store is down here, not the miner's fault
                held[neuron.uid] = f"{exc.code}: {exc.message}"[:200]
            except Exception as exc:  # noqa: BLE001 — one hostile payload never stops the round
                log.exception("uid %d: unexpected error on its collab payload", neuron.uid)
                held[neuron.uid] = f"validator error: {type(exc).__name__}"
    return subs, held, raws


def _commitment(neuron: Neuron, key: str, r: int) -> PayloadCommitment | None:
    if neuron.commitment is None or not PayloadCommitment.looks_like(neuron.commitment.data):
        return None
    try:
        c = PayloadCommitment.parse(neuron.commitment.data)
    except CommitmentError:
        return None
    return c if c.competition == key and c.round_index == r else None


def _carried(cr: CollabRuntime, progress: CollabProgress) -> CarriedCompetition:
    from crucible.collab.rating import collab_weights

    return CarriedCompetition(
        competition=cr.spec.key, round_block=cr.spec.window(max(progress.last_scored or 0, 0))[0],
        ema=collab_weights(progress.ratings, cr.spec.scoring.min_rating_fraction),
        reward_share=cr.spec.reward_share, serving_share=0.0,
    )  # fmt: skip


def _ratings_before(progress: CollabProgress, mg: Metagraph) -> dict[int, float]:
    """Ratings of uids still held by the hotkey that earned them (a re-registered uid: 0)."""
    live = {n.uid: n.hotkey for n in mg.neurons}
    return {
        u: v for u, v in progress.ratings.items() if live.get(u) == progress.rating_hotkeys.get(u)
    }


def score_collab(
    rt: ValidatorRuntime, cr: CollabRuntime, mg: Metagraph, state: ValidatorState
) -> CollabRound | CarriedCompetition | None:
    """The newest closed round, scored and aggregated; its carried ratings when there is none."""
    spec = cr.spec
    progress = state.collab.get(spec.id) or _start(rt, cr, mg)
    state.collab[spec.id] = progress
    prefetch_open_round(rt, cr, mg)
    r = closed_round(spec, mg.block)
    if r < progress.checkpoint_round or (
        progress.last_scored is not None and r <= progress.last_scored
    ):
        return _carried(cr, progress)
    try:
        assign_hash = rt.chain.block_hash(spec.window(r)[0])
        data_hash = rt.chain.block_hash(spec.data_block(r))
    except CrucibleError as exc:
        log.warning("%s: round %d blocks unavailable: %s", spec.key, r, exc)
        return _carried(cr, progress)
    if rt.documents is not None:
        for note in pull_published(spec, mg, rt.documents, skip=rt.keypair.ss58_address):
            log_event(log, "collab_peer_unavailable", level=logging.WARNING, note=note)
    _catch_up(rt, cr, mg, progress, r)
    _hold_checkpoint(rt, cr, mg, progress.checkpoint)
    subs, held, raws = _collect(rt, cr, mg, r, progress.checkpoint)
    accepted = {u: s.hotkey for u, s in subs.items() if s.compressed is not None}
    data = draw_round_data(
        spec, cr.train_tokens, cr.eval_tokens, accepted, r, assign_hash, data_hash
    )
    ratings_before = _ratings_before(progress, mg)
    result = score_payloads(spec, cr.model, cr.checkpoint.params, cr.checkpoint.momentum, subs, data,
                            cr.payloads, ratings_before, held)  # fmt: skip
    agg = result.aggregate
    next_id = store_checkpoint(
        rt.resolve_store("local"), agg.params, agg.momentum, competition=spec.key
    )
    pointer = _point(rt, cr, mg, r + 1, next_id, progress.checkpoint)
    theirs = None if pointer else _aggregators_checkpoint(rt, cr, mg, r + 1, next_id)
    record = CollabRound(
        competition=spec.key, spec_hash=spec.spec_hash, round_index=r, window=spec.window(r),
        assign_block_hash=assign_hash, data_block=spec.data_block(r), data_block_hash=data_hash,
        base_checkpoint=progress.checkpoint, next_checkpoint=next_id, next_digest=result.next_digest,
        pointer_id=pointer, aggregator_checkpoint=theirs, hotkeys={u: s.hotkey for u, s in subs.items()}, commitments=raws,
        commit_blocks={u: s.commit_block for u, s in subs.items()},
        payload_bytes={u: s.payload_bytes for u, s in subs.items() if s.compressed is not None},
        measured={u: MeasuredLosses(**{k: getattr(m, k) for k in MeasuredLosses.model_fields})
                  for u, m in result.measured.items()},
        rejected=result.rejected, held=held,
        overlaps=[(a, b, v) for (a, b), v in sorted(result.overlaps.items())],
        replayed=result.replayed, scoring=spec.scoring, outer_lr=spec.outer_lr,
        outer_momentum=spec.outer_momentum, nesterov=spec.nesterov,
        clip_norms=agg.norms, clip_median=agg.median, ratings_before=ratings_before,
        scores=result.judged.scores, verdicts=result.judged.verdicts, selected=result.judged.selected,
        ratings_after=result.judged.ratings_after, weights=result.judged.weights,
        reward_share=spec.reward_share,
    )  # fmt: skip
    _advance(cr, progress, record, subs, mg, agg)
    log_event(log, "collab_round_scored", competition=spec.key, round=r, payloads=len(subs),
              accepted=len(accepted), selected=len(record.selected), checkpoint=next_id[:16])  # fmt: skip
    return record


def _advance(
    cr: CollabRuntime, progress: CollabProgress, record: CollabRound, subs, mg: Metagraph, agg
) -> None:
    """Hold the new checkpoint and remember what the next round needs (replays, ratings)."""
    progress.checkpoint, progress.checkpoint_round = record.next_checkpoint, record.round_index + 1
    progress.last_scored = record.round_index
    progress.ratings = record.ratings_after
    progress.rating_hotkeys = {n.uid: n.hotkey for n in mg.neurons if n.uid in record.ratings_after}
    cr.payloads = {s.payload_hash: s.compressed for s in subs.values() if s.compressed is not None}
    progress.recent_payloads = sorted(cr.payloads)
    progress.history = (progress.history + [record.next_checkpoint])[-HISTORY:]
    cr.checkpoint = Checkpoint(agg.params, agg.momentum)
    load_params(cr.model, agg.params)
    cr.checkpoint_id = record.next_checkpoint
