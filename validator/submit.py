"""The round's weights to the chain — and back: what landed is read from the chain, never assumed.

``SetWeights`` first: the bittensor backend handles commit-reveal itself (timelocked, revealed by
the chain); only a chain that answers ``commit_reveal_enabled`` (the local chain, CRv2) gets an
explicit commit whose salt and values wait in the state, and ``try_reveal`` is called on every
tick of the run loop (not every round), so the reveal lands in the epoch the chain names however
long the round interval is. After a set or a reveal the validator reads its row back from the
metagraph and reports the block it landed at; a refusal is reported with the chain's reason and
what to do about it (``FIXES``).
"""

from __future__ import annotations

import secrets

from crucible.chain.interface import (
    CommitWeights,
    ExtrinsicResult,
    Metagraph,
    RevealWeights,
    SetWeights,
)
from crucible.chain.weights import max_upscale_u16, weights_commit_hash, weights_to_u16
from crucible.protocol.version import SPEC_VERSION
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import PendingReveal, ValidatorState

__all__ = ["FIXES", "submit_weights", "try_reveal"]

FIXES = {
    "no_validator_permit": "stake more: the top max_allowed_validators hotkeys by stake hold a "
    "permit, decided at each epoch (`crucible stake add`)",
    "not_registered": "register the hotkey first (`crucible-validator register`)",
    "rate_limited": "the chain allows weights once every weights_rate_limit blocks; a later round will",
    "bad_version_key": "upgrade crucible: this subnet asks for a newer weights version",
    "too_many_commits": "earlier commits were never revealed; they expire after their window",
}


def _refused(result: ExtrinsicResult) -> str:
    fix = FIXES.get(result.code)
    return f"refused: {result.code}: {result.message}" + (f" — {fix}" if fix else "")


def _landed(rt: ValidatorRuntime, uids, values) -> str:
    """Read our row back: the chain stores weights max-upscaled."""
    mg = rt.chain.metagraph(rt.config.netuid)
    me = mg.by_hotkey(rt.keypair.ss58_address)
    expected = {u: v for u, v in zip(uids, max_upscale_u16(list(values)), strict=True) if v}
    row = {u: v for u, v in mg.weights.get(me.uid, {}).items() if v} if me else {}
    if row == expected:
        return f"landed at block {me.last_update}"
    return "NOT on chain yet (the chain's row differs)"


def _permit_problem(mg: Metagraph, hotkey: str) -> str | None:
    me = mg.by_hotkey(hotkey)
    if me is None:
        return f"refused before sending: not_registered — {FIXES['not_registered']}"
    if not me.validator_permit:
        return f"refused before sending: no_validator_permit — {FIXES['no_validator_permit']}"
    return None


def submit_weights(
    rt: ValidatorRuntime, mg: Metagraph, weights: dict[int, float], state: ValidatorState
) -> str:
    if not rt.config.set_weights:
        return "skipped: --no-set-weights"
    if not weights:
        return "skipped: no weights (nothing evaluated or everything rejected)"
    problem = _permit_problem(mg, rt.keypair.ss58_address)
    if problem is not None:
        return problem
    uids, values = weights_to_u16(weights)
    result = rt.chain.submit(SetWeights(rt.config.netuid, uids, values, SPEC_VERSION), rt.keypair)
    if result.ok:
        state.last_weights_block = mg.block
        return f"set; {_landed(rt, uids, values)}"
    if result.code != "commit_reveal_enabled":
        return _refused(result)
    salt = tuple(secrets.randbelow(65536) for _ in range(8))
    digest = weights_commit_hash(
        rt.keypair.ss58_address, rt.config.netuid, uids, values, salt, SPEC_VERSION
    )
    result = rt.chain.submit(CommitWeights(rt.config.netuid, digest), rt.keypair)
    if not result.ok:
        return _refused(result)
    reveal_epoch = result.data.get("reveal_epoch")
    state.pending_reveal = PendingReveal(
        uids=list(uids), values=list(values), salt=list(salt), version_key=SPEC_VERSION,
        commit_block=mg.block, reveal_epoch=reveal_epoch,
    )  # fmt: skip
    return (
        f"committed; reveal due in epoch {reveal_epoch}"
        if reveal_epoch is not None
        else "committed"
    )


def try_reveal(rt: ValidatorRuntime, state: ValidatorState) -> str | None:
    """Reveal the pending commit if its window is open; None when there is nothing to reveal."""
    pending = state.pending_reveal
    if pending is None:
        return None
    call = RevealWeights(
        rt.config.netuid,
        tuple(pending.uids),
        tuple(pending.values),
        tuple(pending.salt),
        pending.version_key,
    )
    result = rt.chain.submit(call, rt.keypair)
    if result.ok:
        state.pending_reveal = None
        state.last_weights_block = result.block or state.last_weights_block
        return f"revealed; {_landed(rt, pending.uids, pending.values)}"
    if result.code == "reveal_too_early":
        return f"reveal waiting: {result.message}"
    state.pending_reveal = None  # expired or unknown to the chain: it can never land now
    return (
        f"REVEAL LOST: {result.code}: {result.message} — the weights committed at block "
        f"{pending.commit_block} never landed; the next round commits again"
    )
