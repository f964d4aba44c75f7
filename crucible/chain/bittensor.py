"""``BittensorChain``: the ``Chain`` interface on the real network through the bittensor 11 SDK.

The only module that imports the SDK's chain client (lazily, so importing ``chain`` stays cheap).
It runs the SDK's blocking facade (``bittensor.SyncClient``) and translates at this one edge:
SDK metagraph neurons → ``Neuron`` (u16 fractions → floats, Balances → rao, ``ip:port`` →
``Endpoint``), our write dataclasses → SDK intents (``BurnedRegister``, ``ServeAxon``,
``SetWeights`` with the version key and the SDK's timelocked commit-reveal when the subnet has it on,
``AddStake``/``RemoveStake``/``Transfer``) or the raw ``Commitments.set_commitment`` call, and SDK
errors → our stable codes. Reads retry with bounded backoff on connection loss; every call has a
timeout.

Each SDK call runs on its own daemon thread (``_BoundedCalls``) and the caller waits at most its
timeout: a call that hangs past it is abandoned (it keeps its thread until the SDK returns) and
later calls run at once on fresh threads. At most ``max_hung_calls`` may be outstanding; beyond
that calls fail fast with ``ChainUnavailable`` rather than pile up threads.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from crucible.chain.interface import (
    RAO_PER_TAO,
    AddStake,
    BurnedRegister,
    Call,
    Commitment,
    Endpoint,
    ExtrinsicResult,
    Hyperparameters,
    Metagraph,
    Neuron,
    RemoveStake,
    ServeEndpoint,
    SetCommitment,
    SetWeights,
    Signer,
    Transfer,
)
from crucible.protocol.errors import ChainError, ChainUnavailable

__all__ = ["SDK_ERROR_CODES", "BittensorChain", "hyperparameters_from_sdk"]

T = TypeVar("T")

# Chain error names (subtensor pallet errors) → our stable codes, where they mean the same thing.
SDK_ERROR_CODES = {
    "HotKeyNotRegisteredInSubNet": "not_registered",
    "HotKeyNotRegisteredInNetwork": "not_registered",
    "NotRegistered": "not_registered",
    "SettingWeightsTooFast": "rate_limited",
    "CommittingWeightsTooFast": "rate_limited",
    "ServingRateLimitExceeded": "rate_limited",
    "CommitmentSetRateLimitExceeded": "commitment_rate_limited",
    "NeuronNoValidatorPermit": "no_validator_permit",
    "NotEnoughBalanceToStake": "insufficient_balance",
    "NotEnoughBalanceToPayRegistration": "insufficient_balance",
    "InsufficientBalance": "insufficient_balance",
    "IncorrectCommitRevealVersion": "version_key_too_low",
    "IncorrectWeightVersionKey": "version_key_too_low",
    "DuplicateUids": "duplicate_uids",
    "UidVecContainInvalidOne": "uid_not_found",
    "WeightVecLengthIsLow": "below_min_weights",
    "HotKeyAlreadyRegisteredInSubNet": "already_registered",
    "CommitRevealEnabled": "commit_reveal_enabled",
    "SpaceLimitExceeded": "commitment_too_long",
}
# Hyperparameter names of ``get_subnet_hyperparams_v3`` → ``Hyperparameters`` fields.
_HYPERPARAMETER_NAMES = {
    "tempo": "tempo",
    "kappa": "kappa",
    "immunity_period": "immunity_period",
    "max_allowed_uids": "max_allowed_uids",
    "max_validators": "max_allowed_validators",
    "max_allowed_validators": "max_allowed_validators",
    "min_allowed_weights": "min_allowed_weights",
    "weights_rate_limit": "weights_rate_limit",
    "weights_version": "weights_version",
    "commit_reveal_weights_enabled": "commit_reveal_enabled",
    "commit_reveal_period": "commit_reveal_period",
    "yuma_version": "yuma3_enabled",
    "yuma3_enabled": "yuma3_enabled",
    "liquid_alpha_enabled": "liquid_alpha_enabled",
    "alpha_low": "alpha_low",
    "alpha_high": "alpha_high",
    "alpha_sigmoid_steepness": "alpha_sigmoid_steepness",
    "bonds_moving_avg": "bonds_moving_average",
    "bonds_penalty": "bonds_penalty",
    "serving_rate_limit": "serving_rate_limit",
    "min_burn": "min_burn_rao",
    "max_burn": "max_burn_rao",
    "registration_allowed": "registration_allowed",
}


def _rao(value: Any) -> int:
    rao = getattr(value, "rao", value)
    return int(rao or 0)


def hyperparameters_from_sdk(raw: dict[str, Any]) -> Hyperparameters:
    values: dict[str, Any] = {}
    defaults = Hyperparameters()
    for sdk_name, ours in _HYPERPARAMETER_NAMES.items():
        if sdk_name not in raw or raw[sdk_name] is None:
            continue
        value = raw[sdk_name]
        if ours == "yuma3_enabled" and sdk_name == "yuma_version":
            value = int(value) >= 3
        kind = type(getattr(defaults, ours))
        values[ours] = bool(value) if kind is bool else _rao(value)
    return Hyperparameters(**values)


def _endpoint(axon: str | None) -> Endpoint | None:
    if not axon:
        return None
    host, _, port = axon.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        return Endpoint(host, int(port))
    except ValueError:
        return None


def _commitment_info(data: str) -> dict[str, Any]:
    # The pallet's CommitmentInfo: a list of Data fields; ``RawN`` carries N bytes (N ≤ 128).
    raw = data.encode()
    return {"fields": [{f"Raw{len(raw)}": "0x" + raw.hex()}]}


class _BoundedCalls:
    """Runs each blocking call on a fresh daemon thread and waits at most its timeout.

    A shared single worker would let one hung call block every later one; here a hung call only
    holds its own thread (daemon, so it never blocks interpreter exit) and one of ``limit`` slots.
    """

    def __init__(self, limit: int, name: str) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._limit, self._name = limit, name
        self._ids = itertools.count()

    def run(self, fn: Callable[[], T], timeout_s: float) -> T:
        if not self._slots.acquire(blocking=False):
            raise ChainUnavailable(
                f"{self._name}: {self._limit} earlier calls are still hung; not starting another",
                code="timeout",
                fix="check the endpoint; the stuck calls are abandoned, not retried",
            )
        future: Future[T] = Future()

        def work() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    future.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller, raised there
                future.set_exception(exc)
            finally:
                self._slots.release()

        threading.Thread(target=work, name=f"{self._name}-{next(self._ids)}", daemon=True).start()
        return future.result(timeout=timeout_s)


class BittensorChain:
    """``network`` is ``finney``, ``test``, ``local``, ``archive`` or a ``ws://``/``wss://`` URL;
    ``substrate`` injects an implementation of the SDK's ``Substrate`` protocol (tests)."""

    def __init__(
        self,
        network: str = "finney",
        *,
        timeout_s: float = 30.0,
        substrate: Any = None,
        retries: int = 2,
        backoff_s: float = 1.0,
        max_hung_calls: int = 8,
    ) -> None:
        import bittensor as bt

        self._bt = bt
        self.network = network
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._client = bt.SyncClient(network, substrate=substrate)
        self._calls = _BoundedCalls(max_hung_calls, "bittensor-chain")

    # ---- the one place SDK failures become ours ----------------------------------------------
    def _with_timeout(self, fn: Callable[[], T], timeout_s: float) -> T:
        try:
            return self._calls.run(fn, timeout_s)
        except FutureTimeout as exc:
            raise ChainUnavailable(
                f"{self.network}: no answer within {timeout_s:.0f} s",
                code="timeout",
                fix="check the endpoint",
            ) from exc

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        from bittensor.result import ChainError as SdkChainError
        from bittensor.result import RpcConnectionError

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return self._with_timeout(fn, self.timeout_s)
            except RpcConnectionError as exc:
                if attempt == self.retries:
                    raise ChainUnavailable(
                        f"{what}: cannot reach {self.network}: {exc}",
                        fix="check --network / --chain-endpoint and your connection",
                    ) from exc
                time.sleep(delay)
                delay *= 2
            except SdkChainError as exc:
                raise ChainError(f"{what}: {exc.message}", code=self._code(exc)) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _code(error: Any) -> str:
        name = getattr(error, "name", None)
        if name in SDK_ERROR_CODES:
            return SDK_ERROR_CODES[name]
        code = getattr(error, "code", None)
        return str(getattr(code, "value", code) or "chain_error")

    # ---- reads ---------------------------------------------------------------------------------
    def block(self) -> int:
        return int(self._read("block", lambda: self._client.block))

    def block_hash(self, block: int) -> str:
        info = self._read("block hash", lambda: self._client.block_info(block))
        if info is None or not info.hash:
            raise ChainError(f"block {block} does not exist yet", code="no_such_block")
        return str(info.hash)

    def wait_for_block(self, block: int, timeout_s: float) -> int:
        try:
            self._with_timeout(
                lambda: self._client.wait_for_block(block, timeout=timeout_s), timeout_s + 5
            )
        except TimeoutError as exc:
            raise ChainUnavailable(
                f"block {block} not reached within {timeout_s:.1f} s", code="timeout"
            ) from exc
        except ChainUnavailable as exc:
            raise ChainUnavailable(
                f"block {block} not reached within {timeout_s:.1f} s", code="timeout"
            ) from exc
        return self.block()

    def hyperparameters(self, netuid: int) -> Hyperparameters:
        raw = self._read(
            "hyperparameters", lambda: self._client.subnets.subnet_hyperparameters(netuid)
        )
        if raw is None:
            raise ChainError(
                f"netuid {netuid} does not exist on {self.network}", code="subnet_not_found"
            )
        return hyperparameters_from_sdk(raw)

    def commitments(self, netuid: int) -> dict[str, Commitment]:
        raw = self._read("commitments", lambda: self._client.subnets.commitments(netuid))
        out = {}
        for hotkey, c in dict(raw).items():
            data = getattr(c, "data", None) or getattr(c, "value", None)
            if data and not getattr(c, "encrypted", False):
                out[str(hotkey)] = Commitment(str(data), int(getattr(c, "block", 0)))
        return out

    def metagraph(self, netuid: int, block: int | None = None) -> Metagraph:
        mg = self._read("metagraph", lambda: self._client.subnets.metagraph(netuid, block=block))
        if mg is None:
            raise ChainError(
                f"netuid {netuid} does not exist on {self.network}", code="subnet_not_found"
            )
        at = int(mg.block)
        weights = self._read("weights", lambda: self._client.weights.weights(netuid, block=at))
        bonds = self._read("bonds", lambda: self._client.weights.bonds(netuid, block=at))
        neurons = []
        for n in mg.neurons:
            c = n.commitment
            data = getattr(c, "data", None) if c is not None else None
            neurons.append(
                Neuron(
                    uid=int(n.uid), hotkey=str(n.hotkey), coldkey=str(n.coldkey), stake_rao=_rao(n.total_stake),
                    active=bool(n.active), validator_permit=bool(n.validator_permit), last_update=int(n.last_update),
                    block_at_registration=int(n.block_at_registration), consensus=float(n.consensus),
                    incentive=float(n.incentive), dividends=float(n.dividends),
                    validator_trust=float(getattr(n, "validator_trust", 0.0) or 0.0), emission_rao=_rao(n.emission),
                    endpoint=_endpoint(n.axon),
                    commitment=Commitment(str(data), int(c.block)) if data and not c.encrypted else None,
                )
            )  # fmt: skip

        def u16_rows(
            rows: dict[int, dict[int, float]], *, max_upscale: bool
        ) -> dict[int, dict[int, int]]:
            out = {}
            for uid, row in rows.items():
                top = max(row.values(), default=0.0) if max_upscale else 1.0
                out[int(uid)] = {
                    int(j): round(v / top * 65535) if top else 0 for j, v in row.items()
                }
            return out

        return Metagraph(
            netuid=netuid,
            block=at,
            block_hash=self.block_hash(at),
            owner_hotkey=str(mg.owner_hotkey) if mg.owner_hotkey else None,
            hyperparameters=self.hyperparameters(netuid),
            neurons=tuple(neurons),
            weights=u16_rows(weights, max_upscale=True),
            bonds=u16_rows(bonds, max_upscale=False),
        )

    def balance(self, coldkey: str) -> int:
        return _rao(self._read("balance", lambda: self._client.balances.get(coldkey)))

    # ---- writes ---------------------------------------------------------------------------------
    def _intent(self, call: Call) -> tuple[str, Any]:
        bt = self._bt
        if isinstance(call, BurnedRegister):
            return "execute", bt.BurnedRegister(netuid=call.netuid, hotkey_ss58=call.hotkey)
        if isinstance(call, ServeEndpoint):
            return "execute", bt.ServeAxon(
                netuid=call.netuid, ip=call.ip, port=call.port, protocol=call.protocol
            )
        if isinstance(call, SetWeights):
            # ``raw_u16`` is only for subnets with the Null consensus; the SDK max-upscales the
            # relative values exactly as the chain stores them.
            return "execute", bt.SetWeights(
                netuid=call.netuid,
                uids=list(call.uids),
                weights=[float(v) for v in call.values],
                version_key=call.version_key,
            )
        if isinstance(call, SetCommitment):
            return "submit_call", bt.calls.Commitments.set_commitment(
                netuid=call.netuid, info=_commitment_info(call.data)
            )
        if isinstance(call, AddStake):
            return "execute", bt.AddStake(
                hotkey_ss58=call.hotkey,
                netuid=call.netuid,
                amount_tao=call.amount_rao / RAO_PER_TAO,
            )
        if isinstance(call, RemoveStake):
            return "execute", bt.RemoveStake(
                hotkey_ss58=call.hotkey,
                netuid=call.netuid,
                amount_tao=call.amount_rao / RAO_PER_TAO,
            )
        if isinstance(call, Transfer):
            return "execute", bt.Transfer(dest=call.dest, amount_tao=call.amount_rao / RAO_PER_TAO)
        raise ChainError(
            f"{call.name} is not available on the real network through this backend",
            code="unsupported_call",
            fix="commit-reveal is handled by SetWeights (timelocked); the faucet exists on localnet only",
        )

    def submit(self, call: Call, signer: Signer) -> ExtrinsicResult:
        from bittensor.result import ChainError as SdkChainError
        from bittensor.result import RpcConnectionError

        try:
            how, intent = self._intent(call)
        except ChainError as exc:
            return ExtrinsicResult(ok=False, call=call.name, code=exc.code, message=str(exc))
        try:
            if how == "execute":
                result = self._with_timeout(
                    lambda: self._client.execute(intent, signer), self.timeout_s * 4
                )
            else:
                result = self._with_timeout(
                    lambda: self._client.submit_call(intent, signer, signer="hotkey"),
                    self.timeout_s * 4,
                )
        except SdkChainError as exc:  # preflight refusals (not registered, rate limit, …)
            return ExtrinsicResult(
                ok=False, call=call.name, code=self._code(exc), message=exc.message
            )
        except RpcConnectionError as exc:
            return ExtrinsicResult(
                ok=False, call=call.name, code="chain_unavailable", message=str(exc)
            )
        if not result.success:
            code = self._code(result.error) if result.error is not None else "extrinsic_failed"
            return ExtrinsicResult(ok=False, call=call.name, code=code, message=result.message)
        return ExtrinsicResult(
            ok=True, call=call.name, message=result.message, data=dict(result.data or {})
        )

    def close(self) -> None:
        self._client.close()
