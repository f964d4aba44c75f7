"""A literal, scalar Yuma epoch over Python integers: the oracle the vectorised epoch must equal.

It follows ``specs/yuma.md`` §4 line by line with sparse rows as ``{column: raw}`` dicts (dict
order is irrelevant: every row is sorted before output). Slow (pure Python) and obviously
correct is the point; ``chain.yuma.epoch`` is what the chain runs.
"""

from __future__ import annotations

from crucible.chain.yuma.fixed import (
    ONE,
    exp_q,
    from_int,
    q_div,
    q_div_sat,
    q_mul,
    ratio_u16,
    to_u16,
)
from crucible.chain.yuma.types import EpochInput, EpochOutput

__all__ = ["reference_epoch"]

Row = dict[int, int]


def _normalize(values: list[int]) -> list[int]:
    total = sum(values)
    return list(values) if total == 0 else [q_div(v, total) for v in values]


def _col_normalize(rows: list[Row], n: int) -> list[Row]:
    sums = [0] * n
    for row in rows:
        for j, v in row.items():
            sums[j] += v
    return [{j: (q_div(v, sums[j]) if sums[j] else v) for j, v in row.items()} for row in rows]


def _permits(stake: list[int], k: int, owner: int | None) -> list[bool]:
    n = len(stake)
    mark = [s != 0 for s in stake]
    if n >= k:
        order = sorted(range(n), key=lambda i: (stake[i], i))
        for i in order[: n - k]:
            mark[i] = False
    if owner is not None and owner < n:
        mark[owner] = True
    return mark


def _consensus(weights: list[Row], active_stake: list[int], kappa: int, n: int) -> list[int]:
    validators = [i for i, a in enumerate(active_stake) if a > 0]
    if not validators:
        return [0] * n
    u = _normalize([active_stake[i] for i in validators])
    total = sum(u)
    m = total - kappa
    out = []
    for j in range(n):
        scored = sorted((weights[i].get(j, 0), ui) for i, ui in zip(validators, u, strict=True))
        cumulative, chosen = 0, None
        for score, ui in scored:
            cumulative += ui
            if cumulative > m:
                chosen = score
                break
        # Ties: the first position past m holds the smallest qualifying score (see module doc
        # of chain.yuma.epoch); no qualifying score means the largest one.
        out.append(scored[-1][0] if chosen is None else chosen)
    return out


def _alpha_sigmoid(w: int, b: int, c: int, lo: int, hi: int, steepness: int) -> int:
    d = w - c if w >= b else b - w
    d = max(0, min(ONE, d))
    arg = q_mul(q_div_sat(from_int(steepness), from_int(-100)), d - ONE // 2)
    sigma = q_div_sat(ONE, ONE + exp_q(arg))
    return max(lo, min(hi, lo + q_mul(sigma, hi - lo)))


def reference_epoch(inp: EpochInput) -> EpochOutput:
    p = inp.params
    n = inp.n
    block = inp.block
    owner = p.owner_uid if p.owner_uid is not None and p.owner_uid < n else None

    # 4.1 activity
    active = [not (lu + p.activity_cutoff_blocks < block) for lu in inp.last_update]

    # 4.2 stake (Q64 normalisation then floor to Q == floor(s·2^32/Σs))
    raw = [0 if (s < p.stake_threshold and i != owner) else s for i, s in enumerate(inp.stake)]
    total_stake = sum(raw)
    stake = [(s << 32) // total_stake if total_stake else 0 for s in raw]

    # 4.3 permits (old ones mask this epoch; new ones are stored for the next)
    old_permit = [i < len(inp.validator_permit) and inp.validator_permit[i] for i in range(n)]
    if owner is not None:
        old_permit[owner] = True
    new_permit = _permits(stake, p.max_allowed_validators, owner)

    # 4.4 active stake
    active_stake = _normalize(
        [s if active[i] and old_permit[i] else 0 for i, s in enumerate(stake)]
    )

    # 4.5 weights
    reg = inp.block_at_registration
    weights: list[Row] = []
    for i in range(n):
        row: Row = {}
        if old_permit[i]:
            commit = inp.commit_block[i] if inp.commit_block is not None else None
            for j, v in inp.weights[i]:
                if j >= n or (j == i and i != owner) or inp.last_update[i] <= reg[j]:
                    continue
                if commit is not None and commit < reg[j]:
                    continue
                row[j] = from_int(v)
        total = sum(row.values())
        weights.append({j: q_div(v, total) for j, v in row.items()} if total > 0 else row)

    # 4.6 consensus
    kappa = ratio_u16(p.kappa)
    consensus = _consensus(weights, active_stake, kappa, n)

    # 4.7 clipping, validator trust
    clipped: list[Row] = []
    for row in weights:
        out: Row = {}
        for j, v in row.items():
            if v <= consensus[j]:
                out[j] = v
            elif consensus[j] > 0:
                out[j] = consensus[j]
        clipped.append(out)
    validator_trust = [sum(row.values()) for row in clipped]

    # 4.8 ranks and incentive
    ranks = [0] * n
    for i, row in enumerate(clipped):
        for j, v in row.items():
            ranks[j] += q_mul(active_stake[i], v)
    incentive = _normalize(ranks)

    # 4.9 weights for bonds
    beta = ratio_u16(p.bonds_penalty)
    if beta == 0:
        bond_weights = weights
    elif beta == ONE:
        bond_weights = clipped
    else:
        bond_weights = []
        for w_row, c_row in zip(weights, clipped, strict=True):
            out = {}
            for j in sorted(set(w_row) | set(c_row)):
                w = w_row.get(j, 0)
                value = w + q_mul(beta, c_row.get(j, 0) - w)
                if value > 0:
                    out[j] = value
            bond_weights.append(out)

    # 4.10 bonds masking
    last_tempo = (
        p.last_mechanism_step_block + 1 if p.last_mechanism_step_block else max(0, block - p.tempo)
    )
    yuma3 = inp.variant == "yuma3"
    bonds: list[Row] = []
    for i in range(n):
        row = {}
        for j, v in inp.bonds[i]:
            if j >= n or last_tempo <= reg[j]:
                continue
            row[j] = ratio_u16(v) if yuma3 else from_int(v)
        bonds.append(row)

    alpha_fixed = ONE - ((p.bonds_moving_average << 32) // 1_000_000)

    def ema_fixed(new_rows: list[Row], old_rows: list[Row]) -> list[Row]:
        result = []
        for new, old in zip(new_rows, old_rows, strict=True):
            acc: dict[int, int] = {}
            for j, v in new.items():
                acc[j] = acc.get(j, 0) + q_mul(alpha_fixed, v)
            for j, v in old.items():
                acc[j] = acc.get(j, 0) + q_mul(ONE - alpha_fixed, v)
            result.append({j: v for j, v in acc.items() if v > 0})
        return result

    # 4.11 bonds and dividends
    if not yuma3:
        old = _col_normalize(bonds, n)
        delta = _col_normalize(
            [
                {j: q_mul(v, active_stake[i]) for j, v in row.items()}
                for i, row in enumerate(bond_weights)
            ],
            n,
        )
        new_bonds = _col_normalize(ema_fixed(delta, old), n)
        dividends = [sum(q_mul(incentive[j], v) for j, v in row.items()) for row in new_bonds]
        dividends = _normalize(dividends)
        col_max = [0] * n
        for row in new_bonds:
            for j, v in row.items():
                col_max[j] = max(col_max[j], v)
        stored = [
            {j: to_u16(q_div(v, col_max[j]) if col_max[j] else v) for j, v in row.items()}
            for row in new_bonds
        ]
    else:
        if p.liquid_alpha and any(c != 0 for c in consensus):
            lo, hi = ratio_u16(p.alpha_low), ratio_u16(p.alpha_high)
            new_bonds = []
            for w_row, b_row in zip(bond_weights, bonds, strict=True):
                out = {}
                for j, w in w_row.items():
                    b = b_row.get(j, 0)
                    alpha = _alpha_sigmoid(w, b, consensus[j], lo, hi, p.alpha_sigmoid_steepness)
                    value = min(ONE, q_mul(ONE - alpha, b) + max(0, q_mul(alpha, w)))
                    if value > 0:
                        out[j] = value
                new_bonds.append(out)
        else:
            new_bonds = ema_fixed(bond_weights, bonds)
        normalized = _col_normalize(new_bonds, n)
        row_sums = [sum(q_mul(v, incentive[j]) for j, v in row.items()) for row in normalized]
        dividends = _normalize([q_mul(t, a) for t, a in zip(row_sums, active_stake, strict=True)])
        stored = [{j: to_u16(v) for j, v in row.items()} for row in new_bonds]

    # 4.12 emission shares and fallback
    total = sum(incentive) + sum(dividends)
    if total == 0:
        base = active_stake if any(active_stake) else stake
        server_share, validator_share, combined = [0] * n, list(base), list(base)
    else:
        server_share = [q_div(x, total) for x in incentive]
        validator_share = [q_div(x, total) for x in dividends]
        combined = _normalize([a + b for a, b in zip(incentive, dividends, strict=True)])
    emission_rao = p.rao_emission

    def rao(shares: list[int]) -> list[int]:
        return [(s * emission_rao) >> 32 for s in shares]

    # 4.13 outputs
    return EpochOutput(
        active=active,
        validator_permit=new_permit,
        consensus=[to_u16(c) for c in consensus],
        incentive=[to_u16(x) for x in incentive],
        dividends=[to_u16(x) for x in dividends],
        validator_trust=[to_u16(x) for x in validator_trust],
        bonds=[sorted(stored[i].items()) if new_permit[i] else [] for i in range(n)],
        emission=rao(combined),
        server_emission=rao(server_share),
        validator_emission=rao(validator_share),
        stake_weight=[to_u16(s) for s in stake],
    )
