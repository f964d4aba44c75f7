"""``crucible-validator verify`` for collab rounds: the measurements and the next checkpoint
recomputed from the payloads and the checkpoint in the store, and the round's block hashes
checked against the chain.

``reevaluate_collab`` fetches the round's base checkpoint and every measured uid's payload by
the hashes its commitment names, redraws the scoring data from the recorded block hashes, reruns
``crucible.collab.engine.score_payloads`` and compares every measured loss and overlap bit for
bit; then it aggregates the recorded contributors with ``aggregate_round`` and checks the digest
of the result against the bundle's and against the next checkpoint held in the store.

With ``sources`` (the endpoints of the validator that signed the bundle: ``crucible audit``
from another machine) the checkpoints and payloads this store lacks are copied from there
first, each kept only if it hashes to the id the bundle names.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from crucible.chain.interface import Chain
from crucible.collab.aggregate import aggregate_round, tensors_digest
from crucible.collab.checkpoint import CHECKPOINT_FILE, load_checkpoint_dir, max_checkpoint_bytes
from crucible.collab.codec import decode_payload, decompress, max_payload_bytes
from crucible.collab.engine import Submission, draw_round_data, score_payloads
from crucible.collab.payload_store import PAYLOAD_FILE, fetch_payload
from crucible.collab.peer_sync import pull_from_any
from crucible.collab.shared_model import build_shared_model, genesis_params, param_shapes
from crucible.protocol.collab import CollabSpec, PayloadCommitment
from crucible.protocol.errors import ChainError, CrucibleError
from crucible.store.base import ModelStore
from crucible.store.local import LocalStore
from crucible.validator.collab_record import CollabRound, MeasuredLosses

__all__ = ["check_collab_inputs", "reevaluate_bundle_collab", "reevaluate_collab"]


def check_collab_inputs(rounds: list[CollabRound], chain: Chain) -> list[str]:
    problems = []
    for r in rounds:
        for block, claimed in (
            (r.window[0], r.assign_block_hash),
            (r.data_block, r.data_block_hash),
        ):
            try:
                if chain.block_hash(block) != claimed:
                    problems.append(
                        f"{r.competition} round {r.round_index}: block {block}'s hash is not the chain's"
                    )
            except ChainError as exc:
                problems.append(
                    f"{r.competition} round {r.round_index}: block {block}: {exc.message}"
                )
    return problems


def _checkpoint(store: ModelStore, digest: str, spec: CollabSpec, tmp: Path):
    folder = store.get("local", digest, tmp, max_bytes=1 << 34, allowed_files={CHECKPOINT_FILE})
    return load_checkpoint_dir(folder, param_shapes(genesis_params(spec)), competition=spec.key)


def _submissions(
    r: CollabRound, spec: CollabSpec, store: ModelStore, shapes, tmp: Path
) -> dict[int, Submission]:
    subs = {}
    for uid in sorted(r.measured):
        c = PayloadCommitment.parse(r.commitments[uid])
        raw = fetch_payload(
            store, c.store_ref, c.content_hash, tmp, max_payload_bytes(shapes, spec.codec)
        )
        subs[uid] = Submission(uid, r.hotkeys[uid], r.commit_blocks[uid], c.content_hash,
                               decode_payload(raw, shapes, spec.codec)[1])  # fmt: skip
    for uid, why in r.rejected.items():
        subs[uid] = Submission(
            uid, r.hotkeys.get(uid, ""), r.commit_blocks.get(uid, 0), "", rejected=why
        )
    return subs


def _copy_inputs(
    r: CollabRound, spec: CollabSpec, store: LocalStore, sources: list[str]
) -> list[str]:
    """Copy the round's checkpoints and measured payloads this store lacks from ``sources``;
    why any could not be had."""
    shapes = param_shapes(genesis_params(spec))
    wanted = [
        (c, CHECKPOINT_FILE, max_checkpoint_bytes(shapes))
        for c in (r.base_checkpoint, r.next_checkpoint)
    ]
    cap = max_payload_bytes(shapes, spec.codec)
    wanted += [
        (PayloadCommitment.parse(r.commitments[u]).content_hash, PAYLOAD_FILE, cap)
        for u in sorted(r.measured)
    ]
    missing = []
    for digest, name, max_bytes in wanted:
        tried = pull_from_any(store, sources, digest, name, max_bytes)
        if tried:
            missing.append(f"{name} {digest[:12]}…: {tried[-1]}")
    return missing


def _inputs(r: CollabRound, spec: CollabSpec, store: ModelStore, sources: list[str] | None):
    """(base checkpoint, submissions, next checkpoint) from ``store`` (copied from ``sources``
    first where it lacks them), or why they are unavailable."""
    if sources and isinstance(store, LocalStore):
        missing = _copy_inputs(r, spec, store, sources)
        if missing:
            return missing
    with tempfile.TemporaryDirectory(prefix="crucible-verify-collab-") as tmp:
        try:
            base = _checkpoint(store, r.base_checkpoint, spec, Path(tmp))
            subs = _submissions(r, spec, store, param_shapes(base.params), Path(tmp))
            return base, subs, _checkpoint(store, r.next_checkpoint, spec, Path(tmp))
        except CrucibleError as exc:
            return [exc.message]


def reevaluate_collab(
    r: CollabRound,
    spec: CollabSpec,
    store: ModelStore,
    train_tokens,
    eval_tokens,
    sources: list[str] | None = None,
) -> list[str]:
    """Differences between the bundle's collab round and its recomputation here (empty: none)."""
    where = f"{r.competition} round {r.round_index}"
    if spec.key != r.competition or spec.spec_hash != r.spec_hash:
        return [f"{where}: spec not available with hash {r.spec_hash[:12]}"]
    inputs = _inputs(r, spec, store, sources)
    if isinstance(inputs, list):
        return [f"{where}: inputs unavailable: {m}" for m in inputs]
    base, subs, following = inputs
    shapes = param_shapes(base.params)
    model = build_shared_model(spec, base.params)
    accepted = {u: s.hotkey for u, s in subs.items() if s.compressed is not None}
    data = draw_round_data(spec, train_tokens, eval_tokens, accepted, r.round_index,
                           r.assign_block_hash, r.data_block_hash)  # fmt: skip
    result = score_payloads(
        spec, model, base.params, base.momentum, subs, data, {}, r.ratings_before, r.held
    )
    out = []
    for uid, m in sorted(result.measured.items()):
        if (
            MeasuredLosses(**{k: getattr(m, k) for k in MeasuredLosses.model_fields})
            != r.measured[uid]
        ):
            out.append(f"{where}: uid {uid}'s measured losses differ")
    if [(a, b, v) for (a, b), v in sorted(result.overlaps.items())] != [
        tuple(o) for o in r.overlaps
    ]:
        out.append(f"{where}: the overlaps differ")
    deltas = {u: decompress(subs[u].compressed, shapes, spec.codec) for u in r.selected}
    agg = aggregate_round(
        base.params,
        base.momentum,
        deltas,
        lr=r.outer_lr,
        momentum_factor=r.outer_momentum,
        nesterov=r.nesterov,
    )
    digest = tensors_digest(agg.params)
    if digest != r.next_digest:
        out.append(
            f"{where}: the aggregate of uids {r.selected} is not the bundle's next checkpoint"
        )
    if tensors_digest(following.params) != r.next_digest:
        out.append(
            f"{where}: the stored next checkpoint {r.next_checkpoint[:12]}… is not the aggregate"
        )
    return out


def reevaluate_bundle_collab(
    bundle, specs_dir: Path, data_dir: Path, store: ModelStore, sources: list[str] | None = None
) -> list[str]:
    """Every collab round of ``bundle`` rerun here (``reevaluate_collab``); the differences."""
    if not bundle.collab:
        return []
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.protocol.collab import load_collab_specs

    specs = {s.key: s for s in load_collab_specs(specs_dir).values()}
    out = []
    for r in bundle.collab:
        spec = specs.get(r.competition)
        if spec is None:
            out.append(f"{r.competition}: no such collab spec in {specs_dir}")
            continue
        tok = load_tokenizer(specs_dir / spec.model.tokenizer)
        train, held = (token_stream(data_dir, split, tok) for split in ("train", "eval"))
        out += reevaluate_collab(r, spec, store, train, held, sources)
    return out
