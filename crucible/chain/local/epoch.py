"""Per-block step of the local chain: burn decay, emission accrual, and the epoch each tempo.

The epoch feeds the stored state to ``chain.yuma.run_epoch`` (the exact Yuma) and applies its
outputs, then pays out as the real chain's coinbase does (spec §6), simplified for a chain with
one token and no root network, child keys or delegate take: stake is the hotkey's stake in rao,
miners' server emission and validators' dividends are staked to their hotkeys (owned by their
coldkeys), the owner cut is staked to the owner hotkey (or paid to the owner coldkey when it has
none), and miner emission of hotkeys owned by the subnet owner is burned.
"""

from __future__ import annotations

import json

from crucible.chain.interface import Hyperparameters
from crucible.chain.local.runtime import Runtime
from crucible.chain.local.state import read_hyperparameters
from crucible.chain.yuma import EpochInput, EpochOutput, EpochParams, run_epoch

__all__ = ["block_step", "build_epoch_input"]

HALF_LIFE_FACTOR_SCALE = 10**12


def _decay_burn(burn: int, hp: Hyperparameters) -> int:
    """burn · f with f^H = ½ (the chain finds f by bisection in Q32; 1e-12 precision here)."""
    factor = round(0.5 ** (1.0 / max(1, hp.burn_half_life)) * HALF_LIFE_FACTOR_SCALE)
    return max(hp.min_burn_rao, min(hp.max_burn_rao, burn * factor // HALF_LIFE_FACTOR_SCALE))


def build_epoch_input(rt: Runtime, netuid: int) -> EpochInput:
    sub = rt.subnet(netuid)
    hp = read_hyperparameters(sub["hyperparameters"])
    neurons = rt.db.execute(
        "SELECT uid, hotkey, block_at_registration, last_update, validator_permit, weights, bonds "
        "FROM neurons WHERE netuid=? ORDER BY uid",
        (netuid,),
    ).fetchall()
    owner_uid = next((uid for uid, hk, *_ in neurons if hk == sub["owner_hotkey"]), None)
    commit_block = None
    if hp.commit_reveal_enabled:
        earliest = dict(
            rt.db.execute(
                "SELECT hotkey, MIN(commit_block) FROM weight_commits WHERE netuid=? GROUP BY hotkey",
                (netuid,),
            ).fetchall()
        )
        commit_block = [earliest.get(hk) for _, hk, *_ in neurons]
    return EpochInput(
        variant="yuma3" if hp.yuma3_enabled else "classic",
        block=rt.block,
        params=EpochParams(
            kappa=hp.kappa,
            bonds_penalty=hp.bonds_penalty,
            bonds_moving_average=hp.bonds_moving_average,
            liquid_alpha=hp.liquid_alpha_enabled,
            alpha_low=hp.alpha_low,
            alpha_high=hp.alpha_high,
            alpha_sigmoid_steepness=hp.alpha_sigmoid_steepness,
            activity_cutoff_blocks=hp.activity_cutoff,
            max_allowed_validators=hp.max_allowed_validators,
            stake_threshold=hp.stake_threshold_rao,
            owner_uid=owner_uid,
            tempo=hp.tempo,
            last_mechanism_step_block=sub["last_step_block"],
            rao_emission=sub["pending_server"] + sub["pending_validator"],
        ),
        stake=[rt.hotkey_stake(hk, netuid) for _, hk, *_ in neurons],
        last_update=[row[3] for row in neurons],
        block_at_registration=[row[2] for row in neurons],
        validator_permit=[bool(row[4]) for row in neurons],
        weights=[[tuple(e) for e in json.loads(row[5])] for row in neurons],
        bonds=[[tuple(e) for e in json.loads(row[6])] for row in neurons],
        commit_block=commit_block,
    )


def _pay(rt: Runtime, netuid: int, hotkey: str, amount: int) -> None:
    if amount <= 0:
        return
    owner = rt.owner_of(hotkey)
    if owner is not None:
        rt.add_stake(hotkey, owner, netuid, amount)


def _distribute(rt: Runtime, netuid: int, inp: EpochInput, out: EpochOutput) -> None:
    sub = rt.subnet(netuid)
    hotkeys = [
        row[0]
        for row in rt.db.execute(
            "SELECT hotkey FROM neurons WHERE netuid=? ORDER BY uid", (netuid,)
        ).fetchall()
    ]
    owner_coldkey = sub["owner_coldkey"]
    for hotkey, amount in zip(hotkeys, out.server_emission, strict=True):
        if rt.owner_of(hotkey) != owner_coldkey and hotkey != sub["owner_hotkey"]:
            _pay(rt, netuid, hotkey, amount)  # the owner's own miners' incentive is burned
    # The epoch's validator amounts are weights for the pending validator alpha (spec §6); with
    # no miner emission at all, validators also take the pending server alpha.
    pool = sub["pending_validator"] + (
        sub["pending_server"] if sum(out.server_emission) == 0 else 0
    )
    total = sum(out.validator_emission)
    if total > 0:
        for hotkey, amount in zip(hotkeys, out.validator_emission, strict=True):
            _pay(rt, netuid, hotkey, amount * pool // total)
    owner_cut = sub["pending_owner"]
    if sub["owner_hotkey"] and rt.owner_of(sub["owner_hotkey"]) == owner_coldkey:
        rt.add_stake(sub["owner_hotkey"], owner_coldkey, netuid, owner_cut)
    else:
        rt.add_balance(owner_coldkey, owner_cut)


def _apply_outputs(rt: Runtime, netuid: int, out: EpochOutput) -> None:
    for uid in range(len(out.active)):
        rt.db.execute(
            "UPDATE neurons SET active=?, validator_permit=?, consensus=?, incentive=?, dividends=?, "
            "validator_trust=?, emission=?, bonds=? WHERE netuid=? AND uid=?",
            (
                int(out.active[uid]),
                int(out.validator_permit[uid]),
                out.consensus[uid],
                out.incentive[uid],
                out.dividends[uid],
                out.validator_trust[uid],
                out.emission[uid],
                json.dumps([list(e) for e in out.bonds[uid]]),
                netuid,
                uid,
            ),
        )


def run_subnet_epoch(rt: Runtime, netuid: int) -> EpochOutput:
    inp = build_epoch_input(rt, netuid)
    out = run_epoch(inp)
    _apply_outputs(rt, netuid, out)
    _distribute(rt, netuid, inp, out)
    rt.db.execute(
        "UPDATE subnets SET pending_server=0, pending_validator=0, pending_owner=0, last_step_block=?, "
        "last_epoch_block=?, epoch_index=epoch_index+1 WHERE netuid=?",
        (rt.block, rt.block, netuid),
    )
    hp = read_hyperparameters(rt.subnet(netuid)["hyperparameters"])
    rt._expire_commits(netuid, hp, rt.subnet(netuid)["epoch_index"])
    return out


def block_step(rt: Runtime, netuid: int, emission_per_block_rao: int) -> EpochOutput | None:
    """What the chain does for ``netuid`` at the start of block ``rt.block``."""
    sub = rt.subnet(netuid)
    hp = read_hyperparameters(sub["hyperparameters"])
    owner_cut = emission_per_block_rao * hp.owner_cut // 65535
    rest = emission_per_block_rao - owner_cut
    rt.db.execute(
        "UPDATE subnets SET burn=?, pending_owner=pending_owner+?, pending_server=pending_server+?, "
        "pending_validator=pending_validator+? WHERE netuid=?",
        (_decay_burn(sub["burn"], hp), owner_cut, rest // 2, rest - rest // 2, netuid),
    )
    if rt.epoch_due(netuid):
        return run_subnet_epoch(rt, netuid)
    return None
