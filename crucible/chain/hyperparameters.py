"""Who may set each subnet hyperparameter, and to what: subtensor's admin rules as one table.

Pure data and checks, no chain, no disk. The local chain's ``set_hyperparameter`` call, the
operator's ``LocalNode.apply_hyperparameters`` and ``NodeConfig`` (the genesis values) all ask
``refusal()``; whatever it refuses never reaches the state, so no value can stop the block clock
or mint emission.

Each rule follows the subtensor extrinsic that sets the value (``pallets/admin-utils``,
``pallets/subtensor`` ``set_tempo`` / ``set_activity_cutoff_factor``): its wire type (u16, u32,
u64, i16, bool), its bounds, and its origin — ``owner`` (the subnet owner coldkey *or* root) or
``root`` (sudo only). Some bounds are tighter for the owner than for root: tempo (owner
360..50 400), bonds_moving_average (owner ≤ 975 000), alpha_sigmoid_steepness (owner ≥ 0),
max_allowed_uids (owner ≥ 64, the default ``MinAllowedUids``).

Checks run in the order subtensor meets them: a value its type cannot encode (kappa = 70 000 is
no u16) is refused for anyone, then the origin (``root_only``), then the bounds for that origin.

Local departures, each for a reason:

* u64 stops at 2^63 − 1: the local chain keeps integers in SQLite, which is signed 64-bit.
* root's bonds_moving_average stops at 1 000 000 (α = 0): above it the moving average has a
  negative weight; subtensor's fixed-point math saturates there, the local chain refuses.
* root's tempo starts at 1: tempo 0 would mean "never run an epoch" for good.
* ``commitment_rate_limit`` and ``burn_increase_mult_milli`` are our names for the commitments
  pallet's rate limit (a root-set runtime value) and ``BurnIncreaseMult`` (U64F64 in [1, 3]).

Relations between fields are checked as subtensor checks them: alpha_low ≤ alpha_high and
min_burn < max_burn whenever either side changes (and at genesis); max_allowed_validators ≤
max_allowed_uids and max_allowed_uids ≥ the current number of uids only when that field is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from crucible.chain.interface import RAO_PER_TAO, Hyperparameters

__all__ = [
    "RULES",
    "HyperparameterRule",
    "Origin",
    "Refusal",
    "genesis_refusal",
    "refusal",
]

Origin = Literal["owner", "root"]

U64_LOCAL_MAX = 2**63 - 1
_TYPE_RANGE = {
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, U64_LOCAL_MAX),
    "i16": (-(2**15), 2**15 - 1),
}


@dataclass(frozen=True)
class HyperparameterRule:
    """One field: wire type, who may set it, and the bounds for root and for the owner."""

    kind: Literal["u16", "u32", "u64", "i16", "bool"]
    setter: Origin  # "owner": the owner or root may set it; "root": root only
    extrinsic: str  # the subtensor call that sets it, named in messages
    root_min: int | None = None  # None: the type's own bound
    root_max: int | None = None
    owner_min: int | None = None  # None: the same as root's
    owner_max: int | None = None

    def bounds(self, origin: Origin) -> tuple[int, int]:
        lo, hi = _TYPE_RANGE[self.kind]
        lo = lo if self.root_min is None else self.root_min
        hi = hi if self.root_max is None else self.root_max
        if origin == "owner":
            lo = lo if self.owner_min is None else self.owner_min
            hi = hi if self.owner_max is None else self.owner_max
        return lo, hi


def _rule(kind: str, setter: Origin, extrinsic: str, **bounds: int) -> HyperparameterRule:
    return HyperparameterRule(kind, setter, extrinsic, **bounds)  # type: ignore[arg-type]


RULES: Mapping[str, HyperparameterRule] = {
    "tempo": _rule("u16", "owner", "set_tempo", root_min=1, owner_min=360, owner_max=50_400),
    "kappa": _rule("u16", "root", "sudo_set_kappa"),
    "immunity_period": _rule("u16", "owner", "sudo_set_immunity_period"),
    "max_allowed_uids": _rule(
        "u16", "owner", "sudo_set_max_allowed_uids", root_min=1, root_max=256, owner_min=64
    ),
    "max_allowed_validators": _rule("u16", "root", "sudo_set_max_allowed_validators"),
    "min_allowed_weights": _rule("u16", "owner", "sudo_set_min_allowed_weights"),
    "weights_rate_limit": _rule("u64", "root", "sudo_set_weights_set_rate_limit"),
    "weights_version": _rule("u64", "owner", "sudo_set_weights_version_key"),
    "commit_reveal_enabled": _rule("bool", "owner", "sudo_set_commit_reveal_weights_enabled"),
    "commit_reveal_period": _rule(
        "u64", "owner", "sudo_set_commit_reveal_weights_interval", root_min=1, root_max=100
    ),
    "yuma3_enabled": _rule("bool", "owner", "sudo_set_yuma3_enabled"),
    "liquid_alpha_enabled": _rule("bool", "owner", "sudo_set_liquid_alpha_enabled"),
    "alpha_low": _rule("u16", "owner", "sudo_set_alpha_values", root_min=1638),
    "alpha_high": _rule("u16", "owner", "sudo_set_alpha_values", root_min=1638),
    "alpha_sigmoid_steepness": _rule(
        "i16", "owner", "sudo_set_alpha_sigmoid_steepness", owner_min=0
    ),
    "bonds_moving_average": _rule(
        "u64", "owner", "sudo_set_bonds_moving_average", root_max=1_000_000, owner_max=975_000
    ),
    "bonds_penalty": _rule("u16", "owner", "sudo_set_bonds_penalty"),
    "activity_cutoff_factor_milli": _rule(
        "u32", "owner", "set_activity_cutoff_factor", root_min=1_000, root_max=50_000
    ),
    "serving_rate_limit": _rule("u64", "owner", "sudo_set_serving_rate_limit"),
    "commitment_rate_limit": _rule("u64", "root", "the commitments pallet's rate limit"),
    "min_burn_rao": _rule("u64", "owner", "sudo_set_min_burn", root_max=RAO_PER_TAO - 1),
    "max_burn_rao": _rule("u64", "owner", "sudo_set_max_burn", root_min=RAO_PER_TAO // 10 + 1),
    "burn_half_life": _rule("u16", "owner", "sudo_set_burn_half_life", root_min=1, root_max=36_100),
    "burn_increase_mult_milli": _rule(
        "u32", "owner", "sudo_set_burn_increase_mult", root_min=1_000, root_max=3_000
    ),
    "owner_cut": _rule("u16", "root", "sudo_set_subnet_owner_cut"),
    "stake_threshold_rao": _rule("u64", "root", "sudo_set_stake_threshold"),
    "registration_allowed": _rule("bool", "root", "sudo_set_network_registration_allowed"),
}


@dataclass(frozen=True)
class Refusal:
    """Why a change is refused: a stable ``code`` and a message naming the rule or bound."""

    code: str  # malformed | unknown_hyperparameter | root_only | hyperparameter_out_of_range
    message: str


def _type_refusal(name: str, rule: HyperparameterRule, value: object) -> Refusal | None:
    if rule.kind == "bool":
        if isinstance(value, bool):
            return None
        return Refusal("malformed", f"{name} is a bool (true/false); got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    lo, hi = _TYPE_RANGE[rule.kind]
    return Refusal("malformed", f"{name} is an integer ({rule.kind}, {lo}..{hi}); got {value!r}")


def _field_refusal(name: str, value: object, origin: Origin) -> Refusal | None:
    rule = RULES.get(name)
    if rule is None:
        return Refusal(
            "unknown_hyperparameter", f"{name!r} is not a hyperparameter; known: {sorted(RULES)}"
        )
    # What the call's type cannot even encode is refused first (for anyone), then the origin,
    # then the rule's own bounds for that origin.
    wrong_type = _type_refusal(name, rule, value)
    if wrong_type is not None:
        return wrong_type
    if rule.kind != "bool":
        tlo, thi = _TYPE_RANGE[rule.kind]
        if not tlo <= value <= thi:  # type: ignore[operator]
            return Refusal(
                "hyperparameter_out_of_range",
                f"{name}={value} is out of range: a {rule.kind} holds {tlo}..{thi}"
                + (" on the local chain (SQLite integers)" if rule.kind == "u64" else ""),
            )
    if rule.setter == "root" and origin != "root":
        return Refusal(
            "root_only",
            f"{name} is set by root only ({rule.extrinsic} needs the sudo key), "
            f"not by the subnet owner",
        )
    if rule.kind == "bool":
        return None
    lo, hi = rule.bounds(origin)
    if not lo <= value <= hi:  # type: ignore[operator]
        who = "the subnet owner" if origin == "owner" else "root"
        return Refusal(
            "hyperparameter_out_of_range",
            f"{name}={value} is out of range: {who} may set {lo}..{hi} ({rule.kind}, {rule.extrinsic})",
        )
    return None


def _relation_refusal(
    hp: Hyperparameters, changed: frozenset[str], n_uids: int | None
) -> Refusal | None:
    if changed & {"alpha_low", "alpha_high"} and hp.alpha_low > hp.alpha_high:
        return Refusal(
            "hyperparameter_out_of_range",
            f"alpha_low ({hp.alpha_low}) must not exceed alpha_high ({hp.alpha_high})",
        )
    if changed & {"min_burn_rao", "max_burn_rao"} and hp.min_burn_rao >= hp.max_burn_rao:
        return Refusal(
            "hyperparameter_out_of_range",
            f"min_burn_rao ({hp.min_burn_rao}) must be below max_burn_rao ({hp.max_burn_rao})",
        )
    if "max_allowed_validators" in changed and hp.max_allowed_validators > hp.max_allowed_uids:
        return Refusal(
            "hyperparameter_out_of_range",
            f"max_allowed_validators ({hp.max_allowed_validators}) must not exceed "
            f"max_allowed_uids ({hp.max_allowed_uids})",
        )
    if "max_allowed_uids" in changed and n_uids is not None and hp.max_allowed_uids < n_uids:
        return Refusal(
            "hyperparameter_out_of_range",
            f"max_allowed_uids ({hp.max_allowed_uids}) is below the {n_uids} uids already "
            f"registered",
        )
    return None


def refusal(
    current: Hyperparameters,
    changes: Mapping[str, object],
    *,
    origin: Origin,
    n_uids: int | None = None,
) -> Refusal | None:
    """Why ``origin`` may not apply ``changes`` to ``current``, or None when it may.

    ``n_uids`` is the number of uids registered (for the max_allowed_uids check), if known.
    """
    for name, value in changes.items():
        problem = _field_refusal(name, value, origin)
        if problem is not None:
            return problem
    updated = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    return _relation_refusal(updated, frozenset(changes), n_uids)


def genesis_refusal(hp: Hyperparameters) -> Refusal | None:
    """Why ``hp`` cannot be a new subnet's hyperparameters (every field as root), or None."""
    for field in dataclasses.fields(Hyperparameters):
        problem = _field_refusal(field.name, getattr(hp, field.name), "root")
        if problem is not None:
            return problem
    return _relation_refusal(hp, frozenset({"alpha_low", "min_burn_rao"}), None)
