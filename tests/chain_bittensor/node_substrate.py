"""An in-memory Substrate for the bittensor 11 SDK, backed by our local chain's state.

It answers the storage reads, runtime-API calls and extrinsic submissions that the SDK paths of
``BittensorChain`` use, in the chain's wire shapes (u16 vectors, ``{"ip", "port", "ip_type"}``
axons, ``CommitmentOf`` records with ``RawN`` fields, ``{name, value}`` hyperparameter entries,
``ExtrinsicResult`` with subtensor error names), so the real SDK code runs end to end: intents,
preflights, composition, submission and result classification. Submitted calls are applied to a
``LocalNode``, signed by the keypair the SDK hands over, so every chain rule is the local chain's.
Anything the SDK asks that this fake does not model raises ``NotImplementedError`` with its name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

from bittensor.balance import Balance
from bittensor.result import ChainError as SdkChainError
from bittensor.result import ExtrinsicResult as SdkResult

from crucible.chain.bittensor import SDK_ERROR_CODES
from crucible.chain.interface import BurnedRegister, ServeEndpoint, SetCommitment, SetWeights
from crucible.chain.local.node import LocalNode

# our local error code → a subtensor error name the SDK classifies the same way
ERROR_NAMES = {code: name for name, code in reversed(list(SDK_ERROR_CODES.items()))}


class NodeSubstrate:
    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.token_symbols: dict[int, str] = {}
        self.submitted: list[tuple[str, str, dict]] = []

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance.from_rao(int(rao), netuid)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # ---- blocks ----------------------------------------------------------------------------------
    async def block_number(self) -> int:
        return self.node.block()

    async def finalized_block_number(self) -> int:
        return self.node.block()

    async def block_hash(self, block: int | None = None) -> str | None:
        number = self.node.block() if block is None else block
        if number > self.node.block():
            return None
        return self.node.block_hash(number)

    async def block_time(self) -> float:
        return 0.01  # the node steps blocks on demand; SDK waits of "one block" stay short

    async def blocks(self, *, finalized: bool = False):
        """New heads as the node produces them (a subscription, here by polling the node)."""
        seen = self.node.block()
        yield {"header": {"number": seen, "parentHash": None}}
        while True:
            await asyncio.sleep(0.02)
            head = self.node.block()
            while seen < head:
                seen += 1
                yield {"header": {"number": seen, "parentHash": self.node.header(seen).parent}}

    async def spec_version(self) -> int:
        return 400

    async def get_block(
        self, block_number: int | None = None, block_hash: str | None = None
    ) -> dict | None:
        number = self.node.block() if block_number is None else block_number
        if number > self.node.block():
            return None
        return {
            "header": {"number": number, "hash": self.node.block_hash(number)},
            "extrinsics": [],
        }

    # ---- storage ---------------------------------------------------------------------------------
    def _metagraph(self, netuid: int):
        return self.node.metagraph(netuid)

    async def query(
        self, module: str, storage: str, params: list | None = None, block_hash: str | None = None
    ) -> Any:
        params = params or []
        if (module, storage) == ("Timestamp", "Now"):
            return int(time.time() * 1000)
        if (module, storage) == ("System", "Account"):
            return {
                "nonce": self.node.nonce(params[0]),
                "data": {
                    "free": self.node.balance(params[0]),
                    "reserved": 0,
                    "frozen": 0,
                    "flags": 0,
                },
            }
        if module == "SubtensorModule":
            netuid = params[0] if params else None
            hp = (
                self.node.hyperparameters(netuid)
                if netuid is not None and storage != "Uids"
                else None
            )
            mg = self._metagraph(netuid) if netuid is not None else None
            simple = {
                "CommitRevealWeightsEnabled": lambda: hp.commit_reveal_enabled,
                "WeightsSetRateLimit": lambda: hp.weights_rate_limit,
                "MinAllowedWeights": lambda: hp.min_allowed_weights,
                "MaxWeightsLimit": lambda: 65535,
                "WeightsVersionKey": lambda: hp.weights_version,
                "Tempo": lambda: hp.tempo,
                "SubnetEpochConsensus": lambda: "Yuma",
                "Burn": lambda: self.node.burn(netuid),
                "CollateralLockShare": lambda: 0,
                "LastUpdate": lambda: [n.last_update for n in mg.neurons],
                "SubnetworkN": lambda: mg.n,
                "NetworksAdded": lambda: True,
            }
            if storage == "Uids":
                return self._metagraph(netuid).uid_of(params[1])
            if storage in simple:
                return simple[storage]()
        raise NotImplementedError(f"query {module}.{storage}")

    async def query_map(
        self, module: str, storage: str, params: list | None = None, block_hash: str | None = None
    ) -> list:
        params = params or []
        if (module, storage) == ("SubtensorModule", "TokenSymbol"):
            return []
        netuid = params[0] if params else None
        if (module, storage) == ("Commitments", "CommitmentOf"):
            out = []
            for hotkey, c in self.node.commitments(netuid).items():
                raw = c.data.encode()
                out.append(
                    (
                        hotkey,
                        {
                            "block": c.block,
                            "deposit": 0,
                            "info": {"fields": [{f"Raw{len(raw)}": "0x" + raw.hex()}]},
                        },
                    )
                )
            return out
        if (module, storage) == ("Commitments", "RevealedCommitments"):
            return []
        if (module, storage) in (("SubtensorModule", "Weights"), ("SubtensorModule", "Bonds")):
            mg = self._metagraph(netuid)
            rows = mg.weights if storage == "Weights" else mg.bonds
            return [(uid, sorted(row.items())) for uid, row in rows.items()]
        if (module, storage) == ("SubtensorModule", "Uids"):
            return [(n.hotkey, n.uid) for n in self._metagraph(netuid).neurons]
        raise NotImplementedError(f"query_map {module}.{storage}")

    async def runtime_call(
        self, api: str, method: str, params: list, block_hash: str | None = None
    ) -> Any:
        if (api, method) == ("SubnetInfoRuntimeApi", "get_metagraph"):
            return self._graph(params[0])
        if (api, method) == ("SubnetInfoRuntimeApi", "get_subnet_hyperparams_v3"):
            hp = self.node.hyperparameters(params[0])
            values = {
                "tempo": hp.tempo, "kappa": hp.kappa, "immunity_period": hp.immunity_period,
                "max_allowed_uids": hp.max_allowed_uids, "max_validators": hp.max_allowed_validators,
                "min_allowed_weights": hp.min_allowed_weights, "weights_rate_limit": hp.weights_rate_limit,
                "weights_version": hp.weights_version, "commit_reveal_weights_enabled": hp.commit_reveal_enabled,
                "commit_reveal_period": hp.commit_reveal_period, "yuma_version": 3 if hp.yuma3_enabled else 2,
                "liquid_alpha_enabled": hp.liquid_alpha_enabled, "alpha_low": hp.alpha_low, "alpha_high": hp.alpha_high,
                "bonds_moving_avg": hp.bonds_moving_average, "bonds_penalty": hp.bonds_penalty,
                "serving_rate_limit": hp.serving_rate_limit, "min_burn": hp.min_burn_rao, "max_burn": hp.max_burn_rao,
                "registration_allowed": hp.registration_allowed,
            }  # fmt: skip
            entries = [
                {"name": k, "value": {"bool" if isinstance(v, bool) else "u64": v}}
                for k, v in values.items()
            ]
            entries.append(
                {
                    "name": "alpha_sigmoid_steepness",
                    "value": {"I32F32": {"bits": hp.alpha_sigmoid_steepness << 32}},
                }
            )
            return entries
        raise NotImplementedError(f"runtime_call {api}.{method}")

    def _graph(self, netuid: int) -> dict:
        mg = self._metagraph(netuid)
        u16 = lambda x: round(x * 65535)  # noqa: E731

        def axon(n):
            if n.endpoint is None:
                return {"ip": 0, "port": 0, "ip_type": 4, "protocol": 4}
            return {
                "ip": int(ipaddress.ip_address(n.endpoint.ip)),
                "port": n.endpoint.port,
                "ip_type": 4,
                "protocol": n.endpoint.protocol,
            }

        neurons = mg.neurons
        return {
            "netuid": netuid, "name": [], "symbol": [], "block": mg.block, "tempo": mg.hyperparameters.tempo,
            "last_step": 0, "blocks_since_last_step": 0, "owner_hotkey": mg.owner_hotkey or "",
            "owner_coldkey": "", "network_registered_at": 0, "num_uids": mg.n,
            "max_uids": mg.hyperparameters.max_allowed_uids, "hotkeys": [n.hotkey for n in neurons],
            "coldkeys": [n.coldkey for n in neurons], "axons": [axon(n) for n in neurons],
            "active": [n.active for n in neurons], "validator_permit": [n.validator_permit for n in neurons],
            "last_update": [n.last_update for n in neurons], "block_at_registration": [n.block_at_registration for n in neurons],
            "consensus": [u16(n.consensus) for n in neurons], "incentives": [u16(n.incentive) for n in neurons],
            "dividends": [u16(n.dividends) for n in neurons], "emission": [n.emission_rao for n in neurons],
            "alpha_stake": [n.stake_rao for n in neurons], "tao_stake": [0 for _ in neurons],
            "total_stake": [n.stake_rao for n in neurons], "rank": [], "trust": [], "pruning_score": [],
        }  # fmt: skip

    # ---- calls ----------------------------------------------------------------------------------
    async def compose(self, call: Any) -> Any:
        return call

    async def estimate_fee(self, call: Any, keypair: Any) -> Balance:
        return Balance.from_rao(0)

    async def account_next_index(self, address: str) -> int:
        return self.node.nonce(address)

    async def mev_next_key(self) -> None:
        return None

    def _ours(self, call: Any):
        module, function, p = call.module, call.function, dict(call.params)
        if function == "burned_register":
            return BurnedRegister(netuid=p["netuid"], hotkey=p["hotkey"])
        if function == "serve_axon":
            return ServeEndpoint(
                netuid=p["netuid"],
                ip=str(ipaddress.IPv4Address(p["ip"])),
                port=p["port"],
                protocol=p["protocol"],
            )
        if function in ("set_weights", "set_mechanism_weights"):
            return SetWeights(
                netuid=p["netuid"],
                uids=tuple(p["dests"]),
                values=tuple(p["weights"]),
                version_key=p["version_key"],
            )
        if (module, function) == ("Commitments", "set_commitment"):
            raw = b"".join(
                bytes.fromhex(v.removeprefix("0x"))
                for f in p["info"]["fields"]
                for k, v in f.items()
                if k.startswith("Raw")
            )
            return SetCommitment(netuid=p["netuid"], data=raw.decode())
        raise NotImplementedError(f"submit {module}.{function}")

    async def submit(self, call: Any, keypair: Any, **_: Any) -> SdkResult:
        ours = self._ours(call)
        self.submitted.append((call.module, call.function, dict(call.params)))
        result = self.node.submit(ours, keypair)
        if result.ok:
            return SdkResult(
                success=True, message="included", block_hash=self.node.block_hash(self.node.block())
            )
        name = ERROR_NAMES.get(result.code, result.code)
        return SdkResult(
            success=False, message=result.message, error=SdkChainError(result.message, name=name)
        )

    def __getattr__(self, name: str):
        raise NotImplementedError(f"the node-backed substrate does not model {name}")
