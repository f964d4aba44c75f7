"""Which uid has a verified model this round — each uid fetched and checked on its own.

A uid's commitment is fetched and verified once; what happens to a failure depends on whose it is:

* ``ModelRejected`` — the miner's (bad commitment, hash mismatch, constraints …): recorded in the
  state with its reason and not fetched again until the commitment changes;
* ``transient`` errors (``ModelUnavailable``: the store or Hub unreachable or disabled here;
  ``ResourceExhausted``: this machine's memory) — the validator's or nobody's: the uid is *held*
  this round (its score is carried over, not lowered) and fetched again next round;
* anything else raised while handling one uid's files is logged with its traceback and also holds
  that uid: one hostile file can never stop the round for everyone else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from crucible.chain.interface import Metagraph, Neuron
from crucible.models.fetch import FetchedModel, evict_cache, fetch_and_verify
from crucible.observe.logs import log_event
from crucible.protocol.anchor import parse_anchor
from crucible.protocol.collab import PayloadCommitment
from crucible.protocol.errors import CrucibleError, ModelRejected
from crucible.protocol.release import ReleaseCommitment
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import ModelEntry, ValidatorState

__all__ = ["SyncedModels", "sync_models"]

log = logging.getLogger(__name__)


@dataclass
class SyncedModels:
    ok: dict[int, FetchedModel] = field(default_factory=dict)
    held: dict[int, str] = field(default_factory=dict)  # uid → validator-side reason


def _entry(neuron: Neuron, **fields: object) -> ModelEntry:
    assert neuron.commitment is not None
    return ModelEntry(
        hotkey=neuron.hotkey,
        commitment=neuron.commitment.data,
        commit_block=neuron.commitment.block,
        **fields,
    )


def _fetch_one(
    rt: ValidatorRuntime, neuron: Neuron, state: ValidatorState, out: SyncedModels
) -> None:
    assert neuron.commitment is not None
    try:
        fetched = fetch_and_verify(
            neuron.commitment.data,
            neuron.hotkey,
            rt.competitions,
            rt.resolve_store,
            rt.config.cache_dir,
        )
    except ModelRejected as exc:
        state.models[neuron.uid] = _entry(neuron, status=exc.reason, reason=exc.message)
        rt.metrics.models_rejected.labels(exc.reason).inc()
        log_event(log, "model_rejected", level=logging.WARNING, uid=neuron.uid,
                  reason=exc.reason, message=exc.message[:300])  # fmt: skip
        return
    except CrucibleError as exc:  # transient (store down, out of memory) or not ours to judge
        if exc.transient:
            log_event(log, "model_held", level=logging.WARNING, uid=neuron.uid, code=exc.code,
                      message=exc.message[:300])  # fmt: skip
        else:
            log.exception("uid %d held this round: unexpected %s", neuron.uid, exc.code)
        out.held[neuron.uid] = f"{exc.code}: {exc.message}"[:300]
        return
    except Exception as exc:  # noqa: BLE001 — isolated per uid, logged with its traceback
        log.exception("uid %d: unexpected error while fetching its model", neuron.uid)
        out.held[neuron.uid] = f"validator error while fetching: {type(exc).__name__}: {exc}"[:300]
        return
    rt.loaded[fetched.content_hash] = fetched
    state.models[neuron.uid] = _entry(
        neuron, status="ok", content_hash=fetched.content_hash, path=str(fetched.path)
    )
    out.ok[neuron.uid] = fetched
    log_event(log, "model_fetched", uid=neuron.uid, content_hash=fetched.content_hash,
              competition=fetched.commitment.competition)  # fmt: skip


def sync_models(rt: ValidatorRuntime, mg: Metagraph, state: ValidatorState) -> SyncedModels:
    out = SyncedModels()
    for neuron in mg.neurons:
        if (
            neuron.commitment is None
            or parse_anchor(neuron.commitment.data) is not None  # a validator's bundle anchor
            or ReleaseCommitment.looks_like(neuron.commitment.data)  # a publisher's data release
            or PayloadCommitment.looks_like(neuron.commitment.data)  # a collab payload
        ):
            state.models.pop(neuron.uid, None)  # not a model commitment
            continue
        entry = state.models.get(neuron.uid)
        same = (
            entry is not None
            and entry.hotkey == neuron.hotkey
            and entry.commitment == neuron.commitment.data
        )
        if same and entry.status != "ok":
            continue  # rejected before: the same commitment is rejected again without refetching
        if same and entry.content_hash in rt.loaded:
            out.ok[neuron.uid] = rt.loaded[entry.content_hash]
            continue
        _fetch_one(rt, neuron, state, out)
    for uid in [u for u in state.models if u >= mg.n]:
        state.models.pop(uid)
    live = {m.content_hash for m in out.ok.values()}
    for digest in [d for d in rt.loaded if d not in live]:
        rt.loaded.pop(digest)
    evict_cache(
        rt.config.cache_dir, rt.config.max_cache_bytes, keep={m.path for m in out.ok.values()}
    )
    return out
