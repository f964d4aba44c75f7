"""The one narrow protocol every chain backend implements, written from the caller's side.

Two implementations: the embedded local chain (``chain.local``) and the real Bittensor network
(``chain.bittensor``). Everything above ``chain/`` talks to a ``Chain`` and sees plain frozen
dataclasses with units in their names; chain vocabulary (u16 weights, rao) is translated here.

Writes are data: ``BurnedRegister``, ``ServeEndpoint``, ``SetWeights``, ``SetCommitment`` … are
frozen dataclasses, signed by the key that owns the action (``signer_role``) and sent through one
``Chain.submit(call, keypair)`` that returns an ``ExtrinsicResult`` (expected failures are results,
not exceptions; ``raise_for_failure`` turns one into ``ExtrinsicRejected``).

The interface is synchronous: the validator loop, the miner CLI and tests are synchronous, and the
async servers call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from crucible.protocol.errors import ExtrinsicRejected

__all__ = [
    "U16_MAX",
    "AddStake",
    "BurnedRegister",
    "Call",
    "Chain",
    "Commitment",
    "CommitWeights",
    "DevFaucet",
    "Endpoint",
    "ExtrinsicResult",
    "Hyperparameters",
    "Metagraph",
    "Neuron",
    "RemoveStake",
    "RevealWeights",
    "ServeEndpoint",
    "SetCommitment",
    "SetHyperparameter",
    "SetWeights",
    "Signer",
    "Transfer",
]

U16_MAX = 65535
RAO_PER_TAO = 1_000_000_000


class Signer(Protocol):
    """What signs: a ``bittensor_core.Keypair`` (hotkey or coldkey) satisfies it."""

    @property
    def ss58_address(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Hyperparameters:
    """A subnet's hyperparameters; defaults are what the real chain gives a new subnet (spec §7)."""

    tempo: int = 360
    kappa: int = 32767
    immunity_period: int = 5000
    max_allowed_uids: int = 256
    max_allowed_validators: int = 64
    min_allowed_weights: int = 1
    weights_rate_limit: int = 100
    weights_version: int = 0
    commit_reveal_enabled: bool = True
    commit_reveal_period: int = 1
    yuma3_enabled: bool = True
    liquid_alpha_enabled: bool = False
    alpha_low: int = 45875
    alpha_high: int = 58982
    alpha_sigmoid_steepness: int = 1000
    bonds_moving_average: int = 900_000
    bonds_penalty: int = 65535
    activity_cutoff_factor_milli: int = 13_889
    serving_rate_limit: int = 50
    commitment_rate_limit: int = 100
    min_burn_rao: int = 500_000
    max_burn_rao: int = 100 * RAO_PER_TAO
    burn_half_life: int = 360
    burn_increase_mult_milli: int = 1260
    owner_cut: int = 11796
    stake_threshold_rao: int = 0
    registration_allowed: bool = True

    @property
    def activity_cutoff(self) -> int:
        return max(1, self.activity_cutoff_factor_milli * self.tempo // 1000)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    protocol: int = 4

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Commitment:
    """Raw commitment bytes as text (≤ 128 bytes) and the block it was set in."""

    data: str
    block: int


@dataclass(frozen=True)
class Neuron:
    uid: int
    hotkey: str
    coldkey: str
    stake_rao: int
    active: bool
    validator_permit: bool
    last_update: int
    block_at_registration: int
    consensus: float
    incentive: float
    dividends: float
    validator_trust: float
    emission_rao: int
    endpoint: Endpoint | None = None
    commitment: Commitment | None = None


@dataclass(frozen=True)
class Metagraph:
    """One subnet's state pinned to one block."""

    netuid: int
    block: int
    block_hash: str
    owner_hotkey: str | None
    hyperparameters: Hyperparameters
    neurons: tuple[Neuron, ...]
    weights: Mapping[int, Mapping[int, int]] = field(default_factory=dict)  # u16, as stored
    bonds: Mapping[int, Mapping[int, int]] = field(default_factory=dict)  # u16, as stored

    @property
    def n(self) -> int:
        return len(self.neurons)

    @property
    def hotkeys(self) -> list[str]:
        return [nrn.hotkey for nrn in self.neurons]

    def uid_of(self, hotkey: str) -> int | None:
        for nrn in self.neurons:
            if nrn.hotkey == hotkey:
                return nrn.uid
        return None

    def by_hotkey(self, hotkey: str) -> Neuron | None:
        uid = self.uid_of(hotkey)
        return None if uid is None else self.neurons[uid]


# ---------------------------------------------------------------------------------------------
# Writes (extrinsics) as data


@dataclass(frozen=True)
class Call:
    signer_role: ClassVar[str] = "hotkey"
    name: ClassVar[str] = "call"

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class BurnedRegister(Call):
    """Register ``hotkey`` on ``netuid`` paying the current burn from the signing coldkey."""

    signer_role: ClassVar[str] = "coldkey"
    name: ClassVar[str] = "burned_register"
    netuid: int
    hotkey: str
    max_burn_rao: int | None = None


@dataclass(frozen=True)
class ServeEndpoint(Call):
    name: ClassVar[str] = "serve_axon"
    netuid: int
    ip: str
    port: int
    protocol: int = 4


@dataclass(frozen=True)
class SetWeights(Call):
    """Weights as u16 values (the chain max-upscales them); see ``chain.weights`` for floats."""

    name: ClassVar[str] = "set_weights"
    netuid: int
    uids: tuple[int, ...]
    values: tuple[int, ...]
    version_key: int = 0


@dataclass(frozen=True)
class CommitWeights(Call):
    name: ClassVar[str] = "commit_weights"
    netuid: int
    commit_hash: str  # hex


@dataclass(frozen=True)
class RevealWeights(Call):
    name: ClassVar[str] = "reveal_weights"
    netuid: int
    uids: tuple[int, ...]
    values: tuple[int, ...]
    salt: tuple[int, ...]
    version_key: int = 0


@dataclass(frozen=True)
class SetCommitment(Call):
    name: ClassVar[str] = "set_commitment"
    netuid: int
    data: str


@dataclass(frozen=True)
class AddStake(Call):
    signer_role: ClassVar[str] = "coldkey"
    name: ClassVar[str] = "add_stake"
    netuid: int
    hotkey: str
    amount_rao: int


@dataclass(frozen=True)
class RemoveStake(Call):
    signer_role: ClassVar[str] = "coldkey"
    name: ClassVar[str] = "remove_stake"
    netuid: int
    hotkey: str
    amount_rao: int


@dataclass(frozen=True)
class Transfer(Call):
    signer_role: ClassVar[str] = "coldkey"
    name: ClassVar[str] = "transfer"
    dest: str
    amount_rao: int


@dataclass(frozen=True)
class SetHyperparameter(Call):
    """Owner-only; ``name`` is a ``Hyperparameters`` field."""

    signer_role: ClassVar[str] = "coldkey"
    name: ClassVar[str] = "set_hyperparameter"
    netuid: int
    param: str
    value: int | bool


@dataclass(frozen=True)
class DevFaucet(Call):
    """Local development chains only: mint ``amount_rao`` to the signing coldkey."""

    signer_role: ClassVar[str] = "coldkey"
    name: ClassVar[str] = "faucet"
    amount_rao: int


@dataclass(frozen=True)
class ExtrinsicResult:
    """What the chain did with one signed call. ``duplicate`` is true when the very same signed
    extrinsic (same ``digest``) had already been applied and this is its recorded result: the
    answer to a re-send after a lost reply, not a second execution."""

    ok: bool
    call: str
    block: int | None = None
    code: str = "ok"
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    digest: str | None = None
    duplicate: bool = False

    def raise_for_failure(self) -> ExtrinsicResult:
        if not self.ok:
            raise ExtrinsicRejected(f"{self.call} refused: {self.message}", code=self.code)
        return self


@runtime_checkable
class Chain(Protocol):
    """What a neuron needs from a chain. Implementations: local node, bittensor 11."""

    def block(self) -> int:
        """Current (best) block number."""
        ...

    def block_hash(self, block: int) -> str:
        """0x-prefixed hex hash of ``block``; raises ``ChainError`` if it does not exist yet."""
        ...

    def wait_for_block(self, block: int, timeout_s: float) -> int:
        """Block until the chain reaches ``block``; returns the current block."""
        ...

    def hyperparameters(self, netuid: int) -> Hyperparameters: ...

    def metagraph(self, netuid: int, block: int | None = None) -> Metagraph: ...

    def commitments(self, netuid: int) -> dict[str, Commitment]:
        """Current commitment of every hotkey that has one on ``netuid``, keyed by hotkey."""
        ...

    def balance(self, coldkey: str) -> int:
        """Free balance in rao."""
        ...

    def submit(self, call: Call, signer: Signer) -> ExtrinsicResult:
        """Sign ``call`` with ``signer`` (its ``signer_role`` key) and submit it."""
        ...

    def close(self) -> None: ...
