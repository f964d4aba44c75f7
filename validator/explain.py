"""Why a uid has its weight: eligibility, losses, ε applied, pairwise results, smoothing."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from crucible.validator.bundle import Bundle
from crucible.validator.state import ValidatorState

__all__ = ["Explanation", "consensus_distance", "explain"]


@dataclass(frozen=True)
class Explanation:
    uid: int
    weight: float
    lines: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_text(self) -> str:
        return f"uid {self.uid}: weight {self.weight:.4f}\n" + "\n".join(
            f"  - {line}" for line in self.lines
        )

    def to_json(self) -> dict:
        return asdict(self)


def explain(uid: int, bundle: Bundle, state: ValidatorState | None = None) -> Explanation:
    lines: list[str] = []
    details: dict = {}
    entry = state.models.get(uid) if state else None
    if uid in bundle.rejections:
        lines.append(f"model rejected: {bundle.rejections[uid]}")
    elif entry is not None:
        lines.append(f"commitment {entry.commitment} at block {entry.commit_block}")
    for r in bundle.rounds:
        if uid not in r.losses and uid not in r.eval_errors:
            lines.append(
                f"{r.competition}: not evaluated in round {r.round_block} (no eligible model: committed too late or none)"
            )
            continue
        if uid in r.eval_errors:
            lines.append(f"{r.competition}: evaluation failed: {r.eval_errors[uid]}")
            continue
        mean = math.fsum(r.losses[uid]) / len(r.losses[uid])
        lines.append(
            f"{r.competition}: mean loss {mean:.4f} nats on {len(r.losses[uid])} samples (round {r.round_block}, seed {r.seed})"
        )
        if uid in r.not_competitive:
            lines.append(f"{r.competition}: not competitive — {r.not_competitive[uid]}")
        for pair in r.pairs:
            if uid in (pair["earlier"], pair["later"]):
                other = pair["later"] if pair["earlier"] == uid else pair["earlier"]
                won = (pair["later"] == uid) == pair["later_wins"]
                role = "earlier (gets ε)" if pair["earlier"] == uid else "later"
                lines.append(
                    f"{r.competition}: vs uid {other}: {'won' if won else 'lost'} as the {role}, ε = {pair['epsilon']:.4%}, sign test p = {pair['p_value']:.3g}"
                )
        if r.competitive == [uid]:
            lines.append(f"{r.competition}: the only competitive model this round")
        if uid in r.win_rates:
            lines.append(
                f"{r.competition}: win rate {r.win_rates[uid]:.3f} → softmax {r.softmax[uid]:.4f} → EMA {r.ema_before.get(uid, 0):.4f} → {r.ema_after.get(uid, 0):.4f}"
            )
        if uid in r.serving_failed:
            lines.append(
                f"{r.competition}: serving probe failed ({r.serving_failed[uid]}): loses the {r.serving_share:.0%} serving share"
            )
        details[r.competition] = {
            "losses_mean": mean,
            "win_rate": r.win_rates.get(uid),
            "ema_after": r.ema_after.get(uid),
        }
    return Explanation(uid, bundle.weights.get(uid, 0.0), lines, details)


def consensus_distance(
    mine: dict[int, float],
    others: dict[int, dict[int, float]],
    stakes: dict[int, float],
    kappa: float = 0.5,
) -> float:
    """The validator trust these weights would get: Σ_j min(mine_j, C_j), with C_j the
    stake-weighted κ-quantile (the largest level at least κ of the others' stake supports)."""
    total = math.fsum(stakes.get(v, 0.0) for v in others)
    if total <= 0:
        return 1.0
    norm = math.fsum(mine.values()) or 1.0
    trust = 0.0
    for uid in mine:
        levels = sorted(
            (
                (row.get(uid, 0.0) / (math.fsum(row.values()) or 1.0), stakes.get(v, 0.0) / total)
                for v, row in others.items()
            ),
            reverse=True,
        )
        supported, consensus = 0.0, 0.0
        for level, stake in levels:
            supported += stake
            if supported >= kappa:
                consensus = level
                break
        trust += min(mine[uid] / norm, consensus)
    return trust
