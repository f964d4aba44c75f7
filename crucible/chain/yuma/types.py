"""One epoch's inputs and outputs, with their JSON form (``python -m chain.yuma``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from crucible.protocol.errors import RequestError

__all__ = ["EpochInput", "EpochInputError", "EpochOutput", "EpochParams", "SparseRow"]

SparseRow = Sequence[tuple[int, int]]
U16_MAX = 65535
U64_MAX = (1 << 64) - 1


class EpochInputError(RequestError, ValueError):
    """An epoch input that does not have the documented shape; the message names the field.

    Part of the project's error tree (a ``RequestError``: the caller sent malformed input) and
    still a ``ValueError`` for callers that validate generically.
    """

    code = "bad_epoch_input"


def _int(obj: Any, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise EpochInputError(f"{name} must be an integer, got {type(obj).__name__}")
    if (lo is not None and obj < lo) or (hi is not None and obj > hi):
        raise EpochInputError(f"{name}={obj} is outside [{lo}, {hi}]")
    return obj


def _bool(obj: Any, name: str) -> bool:
    if not isinstance(obj, bool):
        raise EpochInputError(f"{name} must be true or false, got {type(obj).__name__}")
    return obj


def _list(obj: Any, name: str) -> list[Any]:
    if not isinstance(obj, list):
        raise EpochInputError(f"{name} must be a list, got {type(obj).__name__}")
    return obj


def _rows(obj: Any, name: str, n: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    rows = _list(obj, name)
    if len(rows) != n:
        raise EpochInputError(f"{name} has {len(rows)} rows, expected one per uid ({n})")
    out = []
    for i, row in enumerate(_list(r, f"{name}[{i}]") for i, r in enumerate(rows)):
        entries = []
        for k, pair in enumerate(row):
            where = f"{name}[{i}][{k}]"
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise EpochInputError(f"{where} must be a [dest_uid, u16] pair")
            entries.append((_int(pair[0], where, lo=0), _int(pair[1], where, lo=0, hi=U16_MAX)))
        if len({dest for dest, _ in entries}) != len(entries):
            raise EpochInputError(f"{name}[{i}] names a destination uid twice")
        out.append(tuple(entries))
    return tuple(out)


@dataclass(frozen=True)
class EpochParams:
    kappa: int = 32767
    bonds_penalty: int = 65535
    bonds_moving_average: int = 900_000
    liquid_alpha: bool = False
    alpha_low: int = 45875
    alpha_high: int = 58982
    alpha_sigmoid_steepness: int = 1000
    activity_cutoff_blocks: int = 5000
    max_allowed_validators: int = 64
    stake_threshold: int = 0
    owner_uid: int | None = None
    tempo: int = 360
    last_mechanism_step_block: int = 0
    rao_emission: int = 0

    @classmethod
    def from_json(cls, obj: Any) -> EpochParams:
        if not isinstance(obj, dict):
            raise EpochInputError("params must be an object")
        unknown = set(obj) - {f.name for f in fields(cls)}
        if unknown:
            raise EpochInputError(f"params has unknown keys: {sorted(unknown)}")
        u16 = {"kappa", "bonds_penalty", "alpha_low", "alpha_high"}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                raise EpochInputError(f"params.{f.name} is missing")
            value = obj[f.name]
            name = f"params.{f.name}"
            if f.name == "liquid_alpha":
                values[f.name] = _bool(value, name)
            elif f.name == "owner_uid":
                values[f.name] = None if value is None else _int(value, name, lo=0)
            elif f.name == "alpha_sigmoid_steepness":
                values[f.name] = _int(value, name, lo=-32768, hi=32767)
            elif f.name in u16:
                values[f.name] = _int(value, name, lo=0, hi=U16_MAX)
            else:
                values[f.name] = _int(value, name, lo=0)
        return cls(**values)


@dataclass(frozen=True)
class EpochInput:
    """One epoch of one subnet.

    ``stake`` is each uid's raw stake weight in rao (the Q64 value s_i of spec §4.2). The local
    chain has no root network or child keys, so it passes the hotkey's alpha stake unchanged.
    ``weights``/``bonds`` are the stored sparse rows (u16, weights max-upscaled); explicit zero
    entries are kept. ``commit_block`` (optional, commit-reveal only) is each uid's earliest
    pending commit block, for the epoch mask of spec §4.5 step 5.
    """

    variant: str
    block: int
    params: EpochParams
    stake: Sequence[int]
    last_update: Sequence[int]
    block_at_registration: Sequence[int]
    validator_permit: Sequence[bool]
    weights: Sequence[SparseRow]
    bonds: Sequence[SparseRow]
    commit_block: Sequence[int | None] | None = None

    @property
    def n(self) -> int:
        return len(self.stake)

    @classmethod
    def from_json(cls, obj: Any) -> EpochInput:
        if not isinstance(obj, dict):
            raise EpochInputError("the epoch input must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise EpochInputError(f"unknown keys: {sorted(unknown)}")
        for name in (f.name for f in fields(cls) if f.name != "commit_block"):
            if name not in obj:
                raise EpochInputError(f"{name} is missing")
        variant = obj["variant"]
        if variant not in ("yuma3", "classic"):
            raise EpochInputError(f"variant must be 'yuma3' or 'classic', got {variant!r}")
        # Stake is a u64 of rao on the chain; beyond that the chain's Q64 arithmetic would
        # saturate, which this emulation does not model.
        stake = tuple(
            _int(s, f"stake[{i}]", lo=0, hi=U64_MAX)
            for i, s in enumerate(_list(obj["stake"], "stake"))
        )
        n = len(stake)

        def per_uid(name: str) -> list[Any]:
            values = _list(obj[name], name)
            if len(values) != n:
                raise EpochInputError(f"{name} has {len(values)} entries, expected {n}")
            return values

        permit = _list(obj["validator_permit"], "validator_permit")
        commit_block = obj.get("commit_block")
        return cls(
            variant=variant,
            block=_int(obj["block"], "block", lo=0),
            params=EpochParams.from_json(obj["params"]),
            stake=stake,
            last_update=tuple(_int(v, "last_update", lo=0) for v in per_uid("last_update")),
            block_at_registration=tuple(
                _int(v, "block_at_registration", lo=0) for v in per_uid("block_at_registration")
            ),
            # A permit vector shorter than n treats missing entries as forbidden (spec §4.3).
            validator_permit=tuple(_bool(p, "validator_permit") for p in permit),
            weights=_rows(obj["weights"], "weights", n),
            bonds=_rows(obj["bonds"], "bonds", n),
            commit_block=None
            if commit_block is None
            else tuple(
                None if c is None else _int(c, "commit_block", lo=0)
                for c in per_uid("commit_block")
            ),
        )


@dataclass(frozen=True)
class EpochOutput:
    active: list[bool]
    validator_permit: list[bool]
    consensus: list[int]
    incentive: list[int]
    dividends: list[int]
    validator_trust: list[int]
    bonds: list[list[tuple[int, int]]]
    emission: list[int]
    server_emission: list[int]
    validator_emission: list[int]
    stake_weight: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "active": list(self.active),
            "validator_permit": list(self.validator_permit),
            "consensus": list(self.consensus),
            "incentive": list(self.incentive),
            "dividends": list(self.dividends),
            "validator_trust": list(self.validator_trust),
            "bonds": [[[j, v] for j, v in row] for row in self.bonds],
            "emission": list(self.emission),
            "server_emission": list(self.server_emission),
            "validator_emission": list(self.validator_emission),
        }
