"""State-transition rules of the local chain: one function per call, as the real chain does them.

Every handler runs inside the node's open transaction and raises ``ExtrinsicRejected`` with a
stable code before changing anything it should not; the node rolls the transaction back on any
rejection, so a refused extrinsic changes nothing (not even the nonce).
Rules follow ``specs/yuma.md`` §7–9 (registration, burn, pruning, weights, commit-reveal) and
subtensor where the spec is loose: a weights ``version_key`` passes when the subnet's key is 0 or
the key is at least the subnet's (``check_version_key``; a key 0 is no bypass). Hyperparameter
changes are checked against ``chain.hyperparameters`` (types, bounds, owner vs root), so no
value the owner can send stops an epoch or mints emission.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crucible.chain.hyperparameters import Origin, refusal
from crucible.chain.interface import Hyperparameters
from crucible.chain.local.state import read_hyperparameters, write_hyperparameters
from crucible.chain.weights import max_upscale_u16, weights_commit_hash
from crucible.protocol.errors import ExtrinsicRejected

__all__ = ["Runtime"]

MAX_COMMITMENT_BYTES = 128
MAX_PENDING_COMMITS = 10
MIN_NON_IMMUNE_UIDS = 10
IMMUNE_OWNER_UIDS_LIMIT = 1


def _reject(code: str, message: str) -> ExtrinsicRejected:
    return ExtrinsicRejected(message, code=code)


def _int_param(params: dict[str, Any], name: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _reject("malformed", f"parameter {name!r} must be an integer in [{lo}, {hi}]")
    return value


def _int_list(params: dict[str, Any], name: str, *, hi: int) -> list[int]:
    value = params.get(name)
    if not isinstance(value, list) or len(value) > 65536:
        raise _reject("malformed", f"parameter {name!r} must be a list of at most 65536 integers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise _reject("malformed", f"every entry of {name!r} must be an integer in [0, {hi}]")
    return value


def _str_param(params: dict[str, Any], name: str, *, max_len: int = 256) -> str:
    value = params.get(name)
    if not isinstance(value, str) or len(value) > max_len:
        raise _reject(
            "malformed", f"parameter {name!r} must be a string of at most {max_len} chars"
        )
    return value


@dataclass
class Runtime:
    """Applies calls at ``block`` (the block being built) on an open transaction of ``db``."""

    db: sqlite3.Connection
    block: int
    faucet_enabled: bool = True
    min_non_immune_uids: int = MIN_NON_IMMUNE_UIDS
    root_coldkey: str = ""  # the sudo key; "" = no root on this chain

    # ---- reads used by the rules --------------------------------------------------------
    def balance(self, ss58: str) -> int:
        row = self.db.execute("SELECT balance FROM accounts WHERE ss58=?", (ss58,)).fetchone()
        return row[0] if row else 0

    def add_balance(self, ss58: str, amount: int) -> None:
        self.db.execute(
            "INSERT INTO accounts (ss58, balance) VALUES (?, ?) "
            "ON CONFLICT(ss58) DO UPDATE SET balance = balance + excluded.balance",
            (ss58, amount),
        )

    def subnet(self, netuid: int) -> sqlite3.Row:
        self.db.row_factory = sqlite3.Row
        row = self.db.execute("SELECT * FROM subnets WHERE netuid=?", (netuid,)).fetchone()
        self.db.row_factory = None
        if row is None:
            raise _reject("subnet_not_found", f"netuid {netuid} does not exist on this chain")
        return row

    def hyperparameters(self, netuid: int) -> Hyperparameters:
        return read_hyperparameters(self.subnet(netuid)["hyperparameters"])

    def uid_of(self, netuid: int, hotkey: str) -> int | None:
        row = self.db.execute(
            "SELECT uid FROM neurons WHERE netuid=? AND hotkey=?", (netuid, hotkey)
        ).fetchone()
        return row[0] if row else None

    def n(self, netuid: int) -> int:
        return self.db.execute("SELECT COUNT(*) FROM neurons WHERE netuid=?", (netuid,)).fetchone()[
            0
        ]

    def owner_of(self, hotkey: str) -> str | None:
        row = self.db.execute(
            "SELECT coldkey FROM hotkey_owner WHERE hotkey=?", (hotkey,)
        ).fetchone()
        return row[0] if row else None

    def hotkey_stake(self, hotkey: str, netuid: int) -> int:
        row = self.db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM stake WHERE hotkey=? AND netuid=?",
            (hotkey, netuid),
        ).fetchone()
        return row[0]

    def add_stake(self, hotkey: str, coldkey: str, netuid: int, amount: int) -> None:
        self.db.execute(
            "INSERT INTO stake (hotkey, coldkey, netuid, amount) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(hotkey, coldkey, netuid) DO UPDATE SET amount = amount + excluded.amount",
            (hotkey, coldkey, netuid, amount),
        )

    def _registered_uid(self, netuid: int, hotkey: str) -> int:
        self.subnet(netuid)
        uid = self.uid_of(netuid, hotkey)
        if uid is None:
            raise _reject(
                "not_registered",
                f"hotkey {hotkey} is not registered on netuid {netuid}: register it first "
                f"(`crucible-miner register` / BurnedRegister signed by its coldkey)",
            )
        return uid

    def epoch_due(self, netuid: int) -> bool:
        sub = self.subnet(netuid)
        tempo = self.hyperparameters(netuid).tempo
        return tempo > 0 and self.block - sub["last_epoch_block"] >= tempo

    # ---- dispatch -------------------------------------------------------------------------
    def apply(self, call: str, params: dict[str, Any], signer: str) -> dict[str, Any]:
        handler: Callable[[dict[str, Any], str], dict[str, Any]] | None = getattr(
            self, f"_call_{call}", None
        )
        if handler is None:
            raise _reject("unknown_call", f"unknown call {call!r}")
        return handler(params, signer)

    # ---- balances and stake -------------------------------------------------------------
    def _call_faucet(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        if not self.faucet_enabled:
            raise _reject("faucet_disabled", "this node was started without the dev faucet")
        amount = _int_param(params, "amount_rao", hi=10**6 * 10**9)
        self.add_balance(signer, amount)
        return {"balance_rao": self.balance(signer)}

    def _call_transfer(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        dest = _str_param(params, "dest", max_len=64)
        amount = _int_param(params, "amount_rao")
        if self.balance(signer) < amount:
            raise _reject(
                "insufficient_balance", f"{signer} holds {self.balance(signer)} rao, needs {amount}"
            )
        self.add_balance(signer, -amount)
        self.add_balance(dest, amount)
        return {}

    def _call_add_stake(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        hotkey = _str_param(params, "hotkey", max_len=64)
        amount = _int_param(params, "amount_rao", lo=1)
        self.subnet(netuid)
        if self.owner_of(hotkey) is None:
            raise _reject(
                "hotkey_unknown", f"hotkey {hotkey} has never been registered: nothing to stake to"
            )
        if self.balance(signer) < amount:
            raise _reject(
                "insufficient_balance",
                f"coldkey {signer} holds {self.balance(signer)} rao; staking {amount} needs more",
            )
        self.add_balance(signer, -amount)
        self.add_stake(hotkey, signer, netuid, amount)
        return {"stake_rao": self.hotkey_stake(hotkey, netuid)}

    def _call_remove_stake(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        hotkey = _str_param(params, "hotkey", max_len=64)
        amount = _int_param(params, "amount_rao", lo=1)
        row = self.db.execute(
            "SELECT amount FROM stake WHERE hotkey=? AND coldkey=? AND netuid=?",
            (hotkey, signer, netuid),
        ).fetchone()
        held = row[0] if row else 0
        if held < amount:
            raise _reject(
                "insufficient_stake", f"coldkey {signer} has {held} rao staked on {hotkey}"
            )
        self.add_stake(hotkey, signer, netuid, -amount)
        self.add_balance(signer, amount)
        return {"stake_rao": self.hotkey_stake(hotkey, netuid)}

    # ---- registration ----------------------------------------------------------------------
    def _call_burned_register(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        hotkey = _str_param(params, "hotkey", max_len=64)
        limit = params.get("max_burn_rao")
        sub = self.subnet(netuid)
        hp = read_hyperparameters(sub["hyperparameters"])
        if not hp.registration_allowed:
            raise _reject("registration_disabled", f"registration is closed on netuid {netuid}")
        if self.uid_of(netuid, hotkey) is not None:
            raise _reject(
                "already_registered", f"hotkey {hotkey} is already registered on netuid {netuid}"
            )
        owner = self.owner_of(hotkey)
        if owner is not None and owner != signer:
            raise _reject(
                "wrong_signer", f"hotkey {hotkey} belongs to coldkey {owner}, not {signer}"
            )
        burn = sub["burn"]
        if limit is not None and (not isinstance(limit, int) or burn > limit):
            raise _reject("burn_above_limit", f"the burn is {burn} rao, above your limit {limit}")
        if self.balance(signer) < burn:
            raise _reject(
                "insufficient_balance",
                f"registration burns {burn} rao; coldkey {signer} holds {self.balance(signer)}",
            )
        if hp.max_allowed_uids == 0:
            raise _reject("subnet_full", "this subnet allows no uids")
        n = self.n(netuid)
        if n < hp.max_allowed_uids:
            uid = n
            self.db.execute(
                "INSERT INTO neurons (netuid, uid, hotkey, block_at_registration, last_update) "
                "VALUES (?, ?, ?, ?, ?)",
                (netuid, uid, hotkey, self.block, self.block),
            )
        else:
            uid = self._uid_to_prune(netuid, sub, hp)
            self._replace_neuron(netuid, uid, hotkey)
        self.add_balance(signer, -burn)
        self.db.execute(
            "INSERT OR IGNORE INTO hotkey_owner (hotkey, coldkey) VALUES (?, ?)", (hotkey, signer)
        )
        new_burn = burn * hp.burn_increase_mult_milli // 1000
        self.db.execute(
            "UPDATE subnets SET burn=? WHERE netuid=?",
            (max(hp.min_burn_rao, min(hp.max_burn_rao, new_burn)), netuid),
        )
        return {"uid": uid, "burn_rao": burn}

    def _uid_to_prune(self, netuid: int, sub: sqlite3.Row, hp: Hyperparameters) -> int:
        rows = self.db.execute(
            "SELECT n.uid, n.hotkey, n.emission, n.block_at_registration, o.coldkey FROM neurons n "
            "LEFT JOIN hotkey_owner o ON o.hotkey = n.hotkey WHERE n.netuid=?",
            (netuid,),
        ).fetchall()
        owner_coldkey, owner_hotkey = sub["owner_coldkey"], sub["owner_hotkey"]
        owned = sorted(
            (reg, uid) for uid, hk, _, reg, ck in rows if ck == owner_coldkey or hk == owner_hotkey
        )
        immortal = {uid for uid, hk, *_ in rows if hk == owner_hotkey}
        immortal |= {uid for _, uid in owned[:IMMUNE_OWNER_UIDS_LIMIT]}
        candidates = [(em, reg, uid) for uid, _, em, reg, _ in rows if uid not in immortal]
        immune = [c for c in candidates if self.block - c[1] < hp.immunity_period]
        non_immune = [c for c in candidates if self.block - c[1] >= hp.immunity_period]
        if len(non_immune) > self.min_non_immune_uids:
            return min(non_immune)[2]
        if immune:
            return min(immune)[2]
        if non_immune:
            return min(non_immune)[2]
        raise _reject("subnet_full", f"netuid {netuid} is full and no uid can be pruned")

    def _replace_neuron(self, netuid: int, uid: int, hotkey: str) -> None:
        old = self.db.execute(
            "SELECT hotkey FROM neurons WHERE netuid=? AND uid=?", (netuid, uid)
        ).fetchone()[0]
        self.db.execute("DELETE FROM commitments WHERE netuid=? AND hotkey=?", (netuid, old))
        self.db.execute("DELETE FROM weight_commits WHERE netuid=? AND hotkey=?", (netuid, old))
        self.db.execute(
            "UPDATE neurons SET hotkey=?, block_at_registration=?, last_update=?, active=1, "
            "validator_permit=0, consensus=0, incentive=0, dividends=0, validator_trust=0, "
            "emission=0, ip=NULL, port=NULL, protocol=NULL, served_block=NULL, weights='[]', bonds='[]' "
            "WHERE netuid=? AND uid=?",
            (hotkey, self.block, self.block, netuid, uid),
        )
        # every other row's weight on the replaced uid becomes an explicit zero (spec §8)
        for other, raw in self.db.execute(
            "SELECT uid, weights FROM neurons WHERE netuid=? AND uid<>?", (netuid, uid)
        ).fetchall():
            row = json.loads(raw)
            if any(j == uid for j, _ in row):
                row = [[j, 0 if j == uid else v] for j, v in row]
                self.db.execute(
                    "UPDATE neurons SET weights=? WHERE netuid=? AND uid=?",
                    (json.dumps(row), netuid, other),
                )

    # ---- serving and commitments ----------------------------------------------------------
    def _call_serve_axon(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        ip = _str_param(params, "ip", max_len=64)
        port = _int_param(params, "port", lo=1, hi=65535)
        protocol = _int_param(params, "protocol", hi=255)
        try:
            ipaddress.ip_address(ip)
        except ValueError as exc:
            raise _reject("invalid_ip", f"{ip!r} is not an IPv4/IPv6 address") from exc
        uid = self._registered_uid(netuid, signer)
        hp = self.hyperparameters(netuid)
        last = self.db.execute(
            "SELECT served_block FROM neurons WHERE netuid=? AND uid=?", (netuid, uid)
        ).fetchone()[0]
        if last is not None and self.block - last < hp.serving_rate_limit:
            raise _reject(
                "rate_limited",
                f"endpoint changed at block {last}; wait {hp.serving_rate_limit} blocks between changes",
            )
        self.db.execute(
            "UPDATE neurons SET ip=?, port=?, protocol=?, served_block=? WHERE netuid=? AND uid=?",
            (ip, port, protocol, self.block, netuid, uid),
        )
        return {"uid": uid}

    def _call_set_commitment(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        data = _str_param(params, "data", max_len=4096)
        size = len(data.encode())
        if size > MAX_COMMITMENT_BYTES:
            raise _reject(
                "commitment_too_long",
                f"a commitment holds at most {MAX_COMMITMENT_BYTES} bytes; this one has {size}",
            )
        self._registered_uid(netuid, signer)
        hp = self.hyperparameters(netuid)
        last = self.db.execute(
            "SELECT block FROM commitments WHERE netuid=? AND hotkey=?", (netuid, signer)
        ).fetchone()
        if last is not None and self.block - last[0] < hp.commitment_rate_limit:
            raise _reject(
                "commitment_rate_limited",
                f"last commitment at block {last[0]}; the next is allowed at block "
                f"{last[0] + hp.commitment_rate_limit}",
            )
        self.db.execute(
            "INSERT OR REPLACE INTO commitments (netuid, hotkey, data, block) VALUES (?, ?, ?, ?)",
            (netuid, signer, data, self.block),
        )
        return {"block": self.block}

    # ---- weights ------------------------------------------------------------------------------
    def _check_rate_limit(self, netuid: int, uid: int, hp: Hyperparameters) -> None:
        last = self.db.execute(
            "SELECT last_update FROM neurons WHERE netuid=? AND uid=?", (netuid, uid)
        ).fetchone()[0]
        if last != 0 and self.block - last < hp.weights_rate_limit:
            raise _reject(
                "rate_limited",
                f"weights last set at block {last}; wait until block {last + hp.weights_rate_limit}",
            )

    def _set_weights(
        self,
        netuid: int,
        uid: int,
        uids: list[int],
        values: list[int],
        version_key: int,
        *,
        check_rate: bool,
        touch_last_update: bool,
    ) -> dict[str, Any]:
        hp = self.hyperparameters(netuid)
        n = self.n(netuid)
        sub = self.subnet(netuid)
        hotkey = self.db.execute(
            "SELECT hotkey FROM neurons WHERE netuid=? AND uid=?", (netuid, uid)
        ).fetchone()[0]
        if len(uids) != len(values):
            raise _reject("length_mismatch", f"{len(uids)} uids but {len(values)} values")
        if len(uids) > n:
            raise _reject("too_many_weights", f"{len(uids)} weights for a subnet of {n} uids")
        is_owner = hotkey == sub["owner_hotkey"]
        if not is_owner and self.hotkey_stake(hotkey, netuid) < hp.stake_threshold_rao:
            raise _reject(
                "not_enough_stake", f"setting weights needs {hp.stake_threshold_rao} rao of stake"
            )
        # subtensor's check_version_key: network key 0 accepts any key, else key >= network key
        if hp.weights_version != 0 and version_key < hp.weights_version:
            raise _reject(
                "version_key_too_low",
                f"version_key {version_key} is below the subnet's {hp.weights_version}: upgrade",
            )
        if check_rate:
            self._check_rate_limit(netuid, uid, hp)
        self_only = len(uids) == 1 and uids[0] == uid
        permit = self.db.execute(
            "SELECT validator_permit FROM neurons WHERE netuid=? AND uid=?", (netuid, uid)
        ).fetchone()[0]
        if not (self_only or is_owner or permit):
            raise _reject(
                "no_validator_permit",
                f"uid {uid} has no validator permit (top {hp.max_allowed_validators} by stake after an "
                f"epoch); only a self-weight is allowed",
            )
        if len(set(uids)) != len(uids):
            raise _reject("duplicate_uids", "a uid appears twice in the weights")
        missing = [u for u in uids if u >= n]
        if missing:
            raise _reject("uid_not_found", f"uids {missing[:5]} do not exist on netuid {netuid}")
        if not self_only and len(uids) < min(hp.min_allowed_weights, n):
            raise _reject(
                "below_min_weights",
                f"at least {min(hp.min_allowed_weights, n)} weights are required",
            )
        stored = [[u, v] for u, v in zip(uids, max_upscale_u16(values), strict=True)]
        self.db.execute(
            "UPDATE neurons SET weights=? WHERE netuid=? AND uid=?",
            (json.dumps(stored), netuid, uid),
        )
        if touch_last_update:
            self.db.execute(
                "UPDATE neurons SET last_update=? WHERE netuid=? AND uid=?",
                (self.block, netuid, uid),
            )
        return {"uid": uid, "stored": len(stored)}

    def _call_set_weights(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        uids = _int_list(params, "uids", hi=65535)
        values = _int_list(params, "values", hi=65535)
        version_key = _int_param(params, "version_key")
        uid = self._registered_uid(netuid, signer)
        if self.hyperparameters(netuid).commit_reveal_enabled:
            raise _reject(
                "commit_reveal_enabled",
                f"netuid {netuid} has commit-reveal on: commit a hash, then reveal in the window",
            )
        return self._set_weights(
            netuid, uid, uids, values, version_key, check_rate=True, touch_last_update=True
        )

    def _expire_commits(self, netuid: int, hp: Hyperparameters, epoch_index: int) -> None:
        self.db.execute(
            "DELETE FROM weight_commits WHERE netuid=? AND ? > commit_epoch + ?",
            (netuid, epoch_index, hp.commit_reveal_period),
        )

    def _call_commit_weights(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        commit_hash = _str_param(params, "commit_hash", max_len=66)
        uid = self._registered_uid(netuid, signer)
        hp = self.hyperparameters(netuid)
        if not hp.commit_reveal_enabled:
            raise _reject(
                "commit_reveal_disabled",
                f"netuid {netuid} has commit-reveal off: set weights directly",
            )
        self._check_rate_limit(netuid, uid, hp)
        epoch_index = self.subnet(netuid)["epoch_index"]
        self._expire_commits(netuid, hp, epoch_index)
        pending = self.db.execute(
            "SELECT COUNT(*) FROM weight_commits WHERE netuid=? AND hotkey=?", (netuid, signer)
        ).fetchone()[0]
        if pending >= MAX_PENDING_COMMITS:
            raise _reject(
                "too_many_commits", f"{pending} unrevealed commits; reveal before committing more"
            )
        commit_epoch = epoch_index + (1 if self.epoch_due(netuid) else 0)
        self.db.execute(
            "INSERT INTO weight_commits (netuid, hotkey, commit_hash, commit_block, commit_epoch) "
            "VALUES (?, ?, ?, ?, ?)",
            (netuid, signer, commit_hash.lower(), self.block, commit_epoch),
        )
        self.db.execute(
            "UPDATE neurons SET last_update=? WHERE netuid=? AND uid=?", (self.block, netuid, uid)
        )
        return {
            "commit_epoch": commit_epoch,
            "reveal_epoch": commit_epoch + hp.commit_reveal_period,
        }

    def _call_reveal_weights(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        uids = _int_list(params, "uids", hi=65535)
        values = _int_list(params, "values", hi=65535)
        salt = _int_list(params, "salt", hi=65535)
        version_key = _int_param(params, "version_key")
        uid = self._registered_uid(netuid, signer)
        hp = self.hyperparameters(netuid)
        epoch_index = self.subnet(netuid)["epoch_index"]
        expected = weights_commit_hash(signer, netuid, uids, values, salt, version_key)
        commits = self.db.execute(
            "SELECT id, commit_hash, commit_epoch FROM weight_commits WHERE netuid=? AND hotkey=? ORDER BY id",
            (netuid, signer),
        ).fetchall()
        match = next((c for c in commits if c[1] == expected), None)
        if match is None:
            raise _reject(
                "no_matching_commit", "no pending commit matches these weights, salt and version"
            )
        reveal_epoch = match[2] + hp.commit_reveal_period
        if epoch_index < reveal_epoch:
            raise _reject(
                "reveal_too_early", f"reveal in epoch {reveal_epoch}; this is epoch {epoch_index}"
            )
        if epoch_index > reveal_epoch:
            raise _reject(
                "reveal_expired", f"the reveal window was epoch {reveal_epoch}; commit again"
            )
        self.db.execute(
            "DELETE FROM weight_commits WHERE netuid=? AND hotkey=? AND id<=?",
            (netuid, signer, match[0]),
        )
        return self._set_weights(
            netuid, uid, uids, values, version_key, check_rate=False, touch_last_update=False
        )

    # ---- owner and root ---------------------------------------------------------------------
    def origin_of(self, netuid: int, signer: str) -> Origin:
        """``root`` for the sudo key, ``owner`` for the subnet owner coldkey; others are refused."""
        sub = self.subnet(netuid)
        if self.root_coldkey and signer == self.root_coldkey:
            return "root"
        if signer == sub["owner_coldkey"]:
            return "owner"
        raise _reject(
            "not_subnet_owner",
            f"only the owner coldkey {sub['owner_coldkey']} (or the root key) may do this",
        )

    def set_hyperparameters(
        self, netuid: int, changes: dict[str, Any], origin: Origin
    ) -> dict[str, tuple[Any, Any]]:
        """Validate ``changes`` with ``chain.hyperparameters`` as ``origin`` and store the ones
        that differ; returns ``{name: (old, new)}`` of what changed."""
        hp = self.hyperparameters(netuid)
        problem = refusal(hp, changes, origin=origin, n_uids=self.n(netuid))
        if problem is not None:
            raise _reject(problem.code, problem.message)
        changed = {k: (getattr(hp, k), v) for k, v in changes.items() if getattr(hp, k) != v}
        if not changed:
            return {}
        updated = dataclasses.replace(hp, **{k: new for k, (_, new) in changed.items()})
        self.db.execute(
            "UPDATE subnets SET hyperparameters=? WHERE netuid=?",
            (write_hyperparameters(updated), netuid),
        )
        if "tempo" in changed:  # resets the cycle, as set_tempo does
            self.db.execute(
                "UPDATE subnets SET last_epoch_block=? WHERE netuid=?", (self.block, netuid)
            )
        return changed

    def _call_set_hyperparameter(self, params: dict[str, Any], signer: str) -> dict[str, Any]:
        netuid = _int_param(params, "netuid", hi=65535)
        name = _str_param(params, "param", max_len=64)
        origin = self.origin_of(netuid, signer)
        value = params.get("value")
        self.set_hyperparameters(netuid, {name: value}, origin)
        return {name: value}
