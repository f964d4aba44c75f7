"""The round's weights to the chain: ``SetWeights``, or a commit now and its reveal later.

SetWeights first: the bittensor backend handles commit-reveal itself (timelocked, revealed by
the chain); only a chain that answers ``commit_reveal_enabled`` (the local chain, CRv2) gets an
explicit commit whose salt and values wait in the state for ``try_reveal``.
"""

from __future__ import annotations

import secrets

from crucible.chain.interface import CommitWeights, Metagraph, RevealWeights, SetWeights
from crucible.chain.weights import weights_commit_hash, weights_to_u16
from crucible.protocol.version import SPEC_VERSION
from crucible.validator.runtime import ValidatorRuntime
from crucible.validator.state import PendingReveal, ValidatorState

__all__ = ["submit_weights", "try_reveal"]


def submit_weights(
    rt: ValidatorRuntime, mg: Metagraph, weights: dict[int, float], state: ValidatorState
) -> str:
    if not rt.config.set_weights:
        return "skipped: --no-set-weights"
    if not weights:
        return "skipped: no weights (nothing evaluated or everything rejected)"
    uids, values = weights_to_u16(weights)
    # SetWeights first: the bittensor backend handles commit-reveal itself (timelocked, revealed
    # by the chain); only a chain that asks for an explicit commit gets the commit/reveal pair.
    result = rt.chain.submit(SetWeights(rt.config.netuid, uids, values, SPEC_VERSION), rt.keypair)
    if result.ok:
        state.last_weights_block = mg.block
        return "set"
    if result.code != "commit_reveal_enabled":
        return f"refused: {result.code}: {result.message}"
    salt = tuple(secrets.randbelow(65536) for _ in range(8))
    digest = weights_commit_hash(
        rt.keypair.ss58_address, rt.config.netuid, uids, values, salt, SPEC_VERSION
    )
    result = rt.chain.submit(CommitWeights(rt.config.netuid, digest), rt.keypair)
    if not result.ok:
        return f"refused: {result.code}: {result.message}"
    state.pending_reveal = PendingReveal(
        uids=list(uids),
        values=list(values),
        salt=list(salt),
        version_key=SPEC_VERSION,
        commit_block=mg.block,
    )
    return "committed"


def try_reveal(rt: ValidatorRuntime, state: ValidatorState) -> str | None:
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
    if result.ok or result.code in ("reveal_expired", "no_matching_commit"):
        state.pending_reveal = None
    return "revealed" if result.ok else result.code
