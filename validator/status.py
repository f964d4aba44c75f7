"""``crucible-validator status``: what the last round did and what the chain shows now.

From the state file (the last round's outcome, a pending reveal, the newest bundle and the one
anchored) and from the chain (this hotkey's uid, permit, stake, the block its weights last
landed, whether its row is there, the commitment it anchors) — the two side by side, so "the log
said committed" and "the chain has it" can no longer be confused.
"""

from __future__ import annotations

from crucible.chain.interface import Chain
from crucible.protocol.anchor import parse_anchor
from crucible.validator.state import ValidatorState

__all__ = ["describe_status"]

RAO_PER_TAO = 1_000_000_000


def _chain_lines(chain: Chain, netuid: int, hotkey: str) -> list[str]:
    mg = chain.metagraph(netuid)
    me = mg.by_hotkey(hotkey)
    if me is None:
        return [
            f"chain: {hotkey} is not registered on netuid {netuid} (`crucible-validator register`)"
        ]
    row = {u: v for u, v in mg.weights.get(me.uid, {}).items() if v}
    anchor = parse_anchor(me.commitment.data if me.commitment else None)
    return [
        f"chain (block {mg.block}): uid {me.uid}, stake {me.stake_rao / RAO_PER_TAO:,.4f} TAO, "
        f"validator permit {'yes' if me.validator_permit else 'NO (stake more: `crucible stake add`)'}, "
        f"vtrust {me.validator_trust:.4f}, dividends {me.dividends:.4f}",
        f"chain: weights on {len(row)} uids, last update at block {me.last_update}"
        if row
        else "chain: no weights from this validator",
        f"chain: anchors bundle {anchor[:16]}…" if anchor else "chain: no bundle anchored",
    ]


def describe_status(state: ValidatorState, chain: Chain, netuid: int, hotkey: str) -> str:
    lines = [f"validator {hotkey} on netuid {netuid}"]
    report = state.last_report
    if report is None:
        lines.append("last round: none yet (`crucible-validator run`)")
    else:
        lines += [
            f"last round at block {report.block}: {report.set_weights}",
            f"  bundle: {report.published}",
        ]
    if state.pending_reveal is not None:
        p = state.pending_reveal
        lines.append(
            f"pending reveal: committed at block {p.commit_block}, due in epoch {p.reveal_epoch}"
        )
    if state.pending_anchor:
        lines.append(f"pending anchor: bundle {state.pending_anchor[:16]}… (commitment rate limit)")
    if state.last_bundle:
        lines.append(f"newest bundle: {state.last_bundle}")
    lines += _chain_lines(chain, netuid, hotkey)
    return "\n".join(lines)
