"""After a round: put the signed bundle in the store's bundle area and anchor its id on chain.

The anchor is the validator's commitment (``protocol.anchor``); the chain's commitment rate
limit decides how often it may move, so a refused anchor is kept as pending and the newest
bundle is anchored at the next round the chain allows — never silently dropped. What happened is
returned as one line for the logs and ``crucible-validator status``.
"""

from __future__ import annotations

from crucible.chain.interface import SetCommitment
from crucible.protocol.anchor import anchor_text
from crucible.protocol.errors import ChainError, StoreError
from crucible.validator.bundle import Bundle, bundle_bytes
from crucible.validator.bundle_server import KIND
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import ValidatorState

__all__ = ["publish_bundle"]


def publish_bundle(rt: ValidatorRuntime, bundle: Bundle, state: ValidatorState) -> str:
    bundle_id = bundle.bundle_id
    if rt.documents is not None:
        try:
            rt.documents.put(KIND, bundle_id, bundle_bytes(bundle))
        except StoreError as exc:
            return f"not published: {exc.code}: {exc.message}"
    state.pending_anchor = bundle_id
    return anchor_pending(rt, state)


def anchor_pending(rt: ValidatorRuntime, state: ValidatorState) -> str:
    """Anchor the newest unanchored bundle if the chain allows it now."""
    bundle_id = state.pending_anchor
    if bundle_id is None:
        return (
            f"anchored {state.anchored_bundle[:16]}…"
            if state.anchored_bundle
            else "nothing to anchor"
        )
    try:
        result = rt.chain.submit(
            SetCommitment(rt.config.netuid, anchor_text(bundle_id)), rt.keypair
        )
    except ChainError as exc:
        return f"published; anchor pending (chain unreachable: {exc.message})"
    if result.ok:
        state.anchored_bundle, state.pending_anchor = bundle_id, None
        return f"published and anchored {bundle_id[:16]}… at block {result.block}"
    if result.code == "commitment_rate_limited":
        return (
            f"published; anchor pending until the commitment rate limit allows ({result.message})"
        )
    return f"published; anchor refused: {result.code}: {result.message}"
