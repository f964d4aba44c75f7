"""Who may call a route: the access rule and limits of one route, and the pure check of a caller."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from crucible.chain.interface import Neuron
from crucible.protocol.errors import AuthError, ConfigError

__all__ = ["Access", "RoutePolicy", "TierLimits", "check_access"]


class Access(enum.Enum):
    SIGNED = "signed"  # any caller with a valid btauth/1 signature (public routes, tight limits)
    REGISTERED = "registered"  # any neuron registered on the netuid
    VALIDATOR = "validator"  # a registered neuron holding a validator permit
    MIN_STAKE = "min_stake"  # a registered neuron with stake ≥ RoutePolicy.min_stake_rao


@dataclass(frozen=True)
class TierLimits:
    """Per-hotkey limits for callers holding a validator permit on a route.

    A permit is what the protocol sells allowances for: it is bought with stake, and the chain,
    not the server, decides who holds one. So a validator's traffic (its probes, the OpenAI
    gateway it runs) gets its own, higher allowance instead of the one meant for strangers."""

    rate_per_s: float = 50.0
    burst: int = 100
    max_concurrent: int = 32

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.max_concurrent < 1:
            raise ConfigError("tier limits must be positive (rate_per_s, burst, max_concurrent)")


@dataclass(frozen=True)
class RoutePolicy:
    """Access rule and limits of one route. Rate and concurrency limits are per caller hotkey;
    ``validator`` (when set) replaces them for callers holding a validator permit."""

    access: Access = Access.REGISTERED
    min_stake_rao: int = 0
    rate_per_s: float = 20.0
    burst: int = 40
    max_concurrent: int = 8
    timeout_s: float = 30.0
    max_body_bytes: int = 256 * 1024
    validator: TierLimits | None = None

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.max_concurrent < 1:
            raise ConfigError("route limits must be positive (rate_per_s, burst, max_concurrent)")
        if self.timeout_s <= 0 or self.max_body_bytes < 0 or self.min_stake_rao < 0:
            raise ConfigError("timeout_s must be > 0; max_body_bytes and min_stake_rao ≥ 0")


def check_access(
    neuron: Neuron | None, policy: RoutePolicy, *, hotkey: str, netuid: int
) -> Neuron | None:
    """Return the caller's neuron (None for an unregistered caller of a ``SIGNED`` route) if
    ``policy`` admits it, else raise ``AuthError`` (→ 403)."""
    if policy.access is Access.SIGNED:
        return neuron
    if neuron is None:
        raise AuthError(
            f"hotkey {hotkey} is not registered on netuid {netuid}",
            code="not_registered",
            fix="register the hotkey on this subnet first (burned registration)",
        )
    if policy.access is Access.VALIDATOR and not neuron.validator_permit:
        raise AuthError(
            f"hotkey {hotkey} (uid {neuron.uid}) has no validator permit on netuid {netuid}",
            code="no_validator_permit",
            fix="this route is for validators; stake enough to hold a validator permit",
        )
    if policy.access is Access.MIN_STAKE and neuron.stake_rao < policy.min_stake_rao:
        raise AuthError(
            f"hotkey {hotkey} (uid {neuron.uid}) has {neuron.stake_rao} rao staked; "
            f"this route needs {policy.min_stake_rao}",
            code="insufficient_stake",
            fix="add stake to the hotkey",
        )
    return neuron
