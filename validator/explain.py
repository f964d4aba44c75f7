"""Why a uid has its weight, step by step, with the numbers each step turned into the next.

Eligibility and the model; per competition the mean loss, every pair the uid took part in (the
ε the earlier model was given, both adjusted means, the sign test's p), the win rate, the
softmax, the EMA (α·softmax + (1 − α)·before = after), the uid's share of the competition's EMA,
what the serving probe took, the reward share, the normalisation over every uid into the final
weight and its u16 — and, given the metagraph, what the chain then paid. All from the bundle
(and the chain), so the numbers add up for anyone who reruns them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from crucible.chain.interface import Metagraph
from crucible.validator.bundle import Bundle, CompetitionRound
from crucible.validator.collab_record import CollabRound
from crucible.validator.state import ValidatorState

__all__ = ["Explanation", "explain"]

RAO_PER_TAO = 1_000_000_000


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


def _pairs(uid: int, r: CompetitionRound) -> list[str]:
    out = []
    for p in r.pairs:
        if uid not in (p["earlier"], p["later"]):
            continue
        earlier = p["earlier"] == uid
        other = p["later"] if earlier else p["earlier"]
        won = p["later_wins"] != earlier
        mine, theirs = (
            (p["earlier_adjusted_mean"], p["later_mean"])
            if earlier
            else (p["later_mean"], p["earlier_adjusted_mean"])
        )
        role = (
            f"earlier: your loss counted ×(1 − ε), ε = {p['epsilon']:.4%}"
            if earlier
            else f"later: uid {other}'s loss counted ×(1 − ε), ε = {p['epsilon']:.4%}"
        )
        out.append(
            f"vs uid {other}: {'won' if won else 'lost'} ({role}); mean {mine:.4f} vs {theirs:.4f}, "
            f"sign test p = {p['p_value']:.3g} (needs < {r.significance_level:g} and a lower mean to take it)"
        )
    return out


def _merge_line(uid: int, r: CompetitionRound, burn_uid: int | None) -> tuple[str, float]:
    total = math.fsum(r.ema_after.values())
    share = r.ema_after.get(uid, 0.0) / total if total > 0 else 0.0
    line = f"share of the competition's EMA: {r.ema_after.get(uid, 0.0):.4f} / Σ {total:.4f} = {share:.4f}"
    if uid in r.serving_failed:
        kept = share * (1 - r.serving_share)
        to = f"uid {burn_uid} (the owner: burned)" if burn_uid is not None else "the other uids"
        line += f"; serving probe FAILED ({r.serving_failed[uid]}): keeps (1 − {r.serving_share:.0%}) → {kept:.4f}, the rest goes to {to}"
        share = kept
    elif uid in r.serving_inconclusive:
        line += f"; serving probe inconclusive ({r.serving_inconclusive[uid]}): no penalty"
    elif uid in r.losses:
        line += "; serving probe passed"
    return (
        line + f"; × reward share {r.reward_share:g} = {share * r.reward_share:.4f}",
        share * r.reward_share,
    )


def _round_lines(
    uid: int, r: CompetitionRound, burn_uid: int | None
) -> tuple[list[str], float, dict]:
    name = r.competition
    if uid in r.held:
        return (
            [
                f"{name}: held this round (not the miner's fault: {r.held[uid]}); EMA kept at {r.ema_after.get(uid, 0.0):.4f}"
            ],
            0.0,
            {},
        )
    if uid in r.eval_errors:
        return (
            [f"{name}: evaluation failed: {r.eval_errors[uid]} (worst score this round)"],
            0.0,
            {},
        )
    if uid not in r.losses:
        return (
            [
                f"{name}: not evaluated in round {r.round_block} (no eligible model: none, or committed after the round block minus the eval delay)"
            ],
            0.0,
            {},
        )
    mean = math.fsum(r.losses[uid]) / len(r.losses[uid])
    lines = [
        f"{name}: mean loss {mean:.4f} nats on {len(r.losses[uid])} samples (round block {r.round_block}, seed {r.seed})"
    ]
    if uid in r.not_competitive:
        lines.append(f"{name}: not competitive — {r.not_competitive[uid]}")
    lines += [f"{name}: {line}" for line in _pairs(uid, r)]
    if r.competitive == [uid]:
        lines.append(f"{name}: the only competitive model this round")
    if uid in r.win_rates:
        before, after, soft = r.ema_before.get(uid, 0.0), r.ema_after.get(uid, 0.0), r.softmax[uid]
        lines.append(
            f"{name}: win rate {r.win_rates[uid]:.3f} → softmax at T = {r.softmax_temperature:g}: {soft:.4f} → "
            f"EMA {r.ema_alpha:g}·{soft:.4f} + {1 - r.ema_alpha:g}·{before:.4f} = {after:.4f}"
        )
    merge, contribution = _merge_line(uid, r, burn_uid)
    lines.append(f"{name}: {merge}")
    return (
        lines,
        contribution,
        {"losses_mean": mean, "win_rate": r.win_rates.get(uid), "ema_after": r.ema_after.get(uid)},
    )


def _collab_lines(uid: int, r: CollabRound) -> tuple[list[str], float, dict]:
    """A collab round: the payload's verdict, its measured effect, the rating, the share."""
    if uid not in r.verdicts and uid not in r.ratings_after and uid not in r.held:
        return [], 0.0, {}
    where = f"{r.competition} round {r.round_index}"
    if uid in r.held:
        lines = [f"{where}: held ({r.held[uid]}): rating kept at {r.ratings_after.get(uid, 0):.5f}"]
    else:
        lines = [f"{where}: {r.verdicts.get(uid, 'no payload')}"]
    m = r.measured.get(uid)
    if m is not None:
        lines.append(
            f"{where}: its Δ alone at lr {r.outer_lr * r.scoring.score_lr_factor:g}: held-out "
            f"{m.held_out_before:.4f} → {m.held_out_after:.4f}, own data {m.own_before:.4f} → "
            f"{m.own_after:.4f}, random data {m.random_before:.4f} → {m.random_after:.4f}; "
            f"score {r.scores.get(uid, 0.0):.5f}{' (aggregated)' if uid in r.selected else ''}"
        )
    a = r.scoring.ema_alpha
    before, after = r.ratings_before.get(uid, 0.0), r.ratings_after.get(uid, 0.0)
    share = r.weights.get(uid, 0.0)
    lines.append(
        f"{where}: rating {a:g}·{r.scores.get(uid, 0.0):.5f} + {1 - a:g}·{before:.5f} = {after:.5f}; "
        f"share of the collab weights {share:.4f} × reward share {r.reward_share:g} = {share * r.reward_share:.4f}"
    )
    return lines, share * r.reward_share, {"verdict": r.verdicts.get(uid), "rating": after}


def explain(
    uid: int, bundle: Bundle, state: ValidatorState | None = None, mg: Metagraph | None = None
) -> Explanation:
    lines: list[str] = []
    details: dict = {}
    entry = state.models.get(uid) if state else None
    if uid in bundle.rejections:
        lines.append(f"model rejected: {bundle.rejections[uid]}")
    elif entry is not None:
        lines.append(f"commitment {entry.commitment} at block {entry.commit_block}")
    contribution = 0.0
    for r in bundle.rounds:
        round_lines, part, info = _round_lines(uid, r, bundle.burn_uid)
        lines += round_lines
        contribution += part
        if info:
            details[r.competition] = info
    for r in bundle.collab:
        round_lines, part, info = _collab_lines(uid, r)
        lines += round_lines
        contribution += part
        if info:
            details[r.competition] = info
    weight = bundle.weights.get(uid, 0.0)
    if uid == bundle.burn_uid and weight > 0:
        lines.append(
            f"the subnet owner's uid: receives the serving shares withheld from uids that failed their probe (burned): weight {weight:.4f}"
        )
    if contribution > 0:
        lines.append(
            f"merged: {contribution:.4f}, normalised over every uid's merged weight (÷ {contribution / weight if weight else math.inf:.4f}) "
            f"= weight {weight:.4f} (u16 {bundle.weights_u16.get(uid, 0)}, max-upscaled by the chain)"
        )
    if mg is not None and uid < mg.n:
        n = mg.neurons[uid]
        lines.append(
            f"the chain now (block {mg.block}): incentive {n.incentive:.4f}, emission {n.emission_rao / RAO_PER_TAO:.4f} TAO per epoch"
        )
    return Explanation(uid, weight, lines, details)
