"""``LocalNode``: the embedded chain engine, in-process; it implements ``chain.interface.Chain``.

Tests use it directly (manual blocks with ``step()``); ``crucible localnet`` wraps it in an HTTP
server with a block clock. Extrinsics are verified (sr25519, genesis, nonce, signer role) and then
applied in one SQLite transaction; they are executed in, and recorded for, the block being built
(head + 1) and become visible at once. Producing a block seals those extrinsics under a hash chained
from the parent with fresh randomness drawn by the node, then runs the per-block step (burn decay,
emission, the epoch each tempo).

History: headers of every block are kept; the metagraph is served for the current head only.

Hostile input costs only its sender:

* Hyperparameters follow subtensor's types, bounds and origins (``chain.hyperparameters``): the
  owner coldkey sets owner parameters, the root (sudo) key ``NodeConfig.root_coldkey`` (default
  the dev key ``//Alice``) sets all; ``NodeConfig`` refuses out-of-bounds genesis values and
  ``apply_hyperparameters`` lets the operator change them at start-up, as root.
* A block whose step raises is rolled back whole (the chain keeps its last good state), logged,
  counted in ``health()`` and raised as ``ChainError(code="block_failed")``; the next attempt
  starts from the same good state.
* Every applied extrinsic is recorded with its digest and result: re-sending the same signed
  envelope (after a lost reply) answers the recorded result with ``duplicate=True`` instead of
  executing again or failing on the spent nonce.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from crucible.chain.hyperparameters import genesis_refusal
from crucible.chain.interface import (
    Call,
    Commitment,
    Endpoint,
    ExtrinsicResult,
    Hyperparameters,
    Metagraph,
    Neuron,
    Signer,
)
from crucible.chain.local.epoch import block_step
from crucible.chain.local.extrinsic import MAX_INT, SignedExtrinsic, canonical_bytes, sign_call
from crucible.chain.local.runtime import Runtime
from crucible.chain.local.state import open_db, read_hyperparameters, write_hyperparameters
from crucible.chain.yuma.types import EpochOutput
from crucible.observe.logs import log_event
from crucible.observe.metrics import NodeMetrics
from crucible.protocol.errors import ChainError, ChainUnavailable, ConfigError, ExtrinsicRejected

__all__ = ["BlockHeader", "LocalNode", "NodeConfig", "NodeHealth", "dev_root_coldkey"]

log = logging.getLogger(__name__)

DEV_ROOT_URI = "//Alice"

COLDKEY_CALLS = frozenset(
    {"burned_register", "add_stake", "remove_stake", "transfer", "set_hyperparameter", "faucet"}
)
HOTKEY_CALLS = frozenset(
    {"serve_axon", "set_commitment", "set_weights", "commit_weights", "reveal_weights"}
)


@functools.cache
def dev_root_coldkey() -> str:
    """ss58 of the dev key ``//Alice``: the root (sudo) key of a local chain by default."""
    from bittensor_core import Keypair

    return Keypair.create_from_uri(DEV_ROOT_URI).ss58_address


@dataclass(frozen=True)
class NodeConfig:
    """How a node is started; the subnet is created from it on first start only.

    Refused at creation (``ConfigError``) when a hyperparameter is outside what root may set
    (``chain.hyperparameters``) or an amount is outside what the chain can store.
    """

    netuid: int = 1
    owner_coldkey: str = ""
    owner_hotkey: str | None = None
    hyperparameters: Hyperparameters = dataclasses.field(default_factory=Hyperparameters)
    emission_per_block_rao: int = 1_000_000_000
    initial_burn_rao: int = 1_000_000_000
    faucet: bool = True
    min_non_immune_uids: int = 10
    root_coldkey: str = dataclasses.field(default_factory=dev_root_coldkey)

    def __post_init__(self) -> None:
        limits = {
            "netuid": (self.netuid, 65535),
            "emission_per_block_rao": (self.emission_per_block_rao, MAX_INT),
            "initial_burn_rao": (self.initial_burn_rao, MAX_INT),
            "min_non_immune_uids": (self.min_non_immune_uids, 65535),
        }
        for name, (value, hi) in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise ConfigError(
                    f"node setting {name}={value!r} must be an integer in 0..{hi}",
                    code="bad_node_config",
                )
        problem = genesis_refusal(self.hyperparameters)
        if problem is not None:
            raise ConfigError(
                f"the subnet cannot start with these hyperparameters: {problem.message}",
                code=problem.code,
                fix="pass values inside the bounds named above (subtensor's admin rules)",
            )


@dataclass(frozen=True)
class NodeHealth:
    """Whether the block clock is producing blocks; served as ``GET /health``."""

    ok: bool  # the last attempt to produce a block succeeded (or none failed yet)
    block: int  # the head: the last good block
    failed_blocks: int  # consecutive failed attempts since the last good block
    total_failed_blocks: int
    last_error: str | None  # the most recent failure, kept after recovery for the record

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BlockHeader:
    number: int
    hash: str
    parent: str
    extrinsics_root: str
    randomness: str
    timestamp: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _digest(*parts: str) -> str:
    return "0x" + hashlib.blake2b("|".join(parts).encode(), digest_size=32).hexdigest()


class LocalNode:
    """The local chain, in-process. Thread-safe: one lock serialises every state access."""

    def __init__(self, data_dir: Path | str, config: NodeConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = open_db(self.data_dir / "chain.sqlite")
        self._lock = threading.RLock()
        self.config = config or NodeConfig()
        self._genesis = self._init_genesis()
        self._state_version = 0
        self._failed_blocks = self._total_failed_blocks = 0
        self._last_error: str | None = None
        self.metrics = NodeMetrics(CollectorRegistry())  # this node's own: see observe.metrics
        self.metrics.track_height(self.block)
        self._warn_if_stored_hyperparameters_are_out_of_bounds()

    # ---- lifecycle ------------------------------------------------------------------------------
    def _init_genesis(self) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()
            if row is not None:
                stored = json.loads(
                    self._db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0]
                )
                self.config = dataclasses.replace(
                    self.config,
                    netuid=stored["netuid"],
                    emission_per_block_rao=stored["emission_per_block_rao"],
                    faucet=stored["faucet"],
                    min_non_immune_uids=stored["min_non_immune_uids"],
                    # a chain created before root existed keeps the configured one
                    root_coldkey=stored.get("root_coldkey", self.config.root_coldkey),
                )
                return row[0]
            cfg = self.config
            genesis = _digest("crucible-localnet", secrets.token_hex(32))
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO blocks VALUES (0, ?, ?, ?, ?, ?)",
                (genesis, "0x" + "00" * 32, _digest(), secrets.token_hex(32), time.time()),
            )
            self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (genesis,))
            self._db.execute(
                "INSERT INTO meta VALUES ('config', ?)",
                (
                    json.dumps(
                        {
                            "netuid": cfg.netuid,
                            "emission_per_block_rao": cfg.emission_per_block_rao,
                            "faucet": cfg.faucet,
                            "min_non_immune_uids": cfg.min_non_immune_uids,
                            "root_coldkey": cfg.root_coldkey,
                        }
                    ),
                ),
            )
            self._db.execute(
                "INSERT INTO subnets (netuid, owner_coldkey, owner_hotkey, hyperparameters, burn) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    cfg.netuid,
                    cfg.owner_coldkey,
                    cfg.owner_hotkey,
                    write_hyperparameters(cfg.hyperparameters),
                    cfg.initial_burn_rao,
                ),
            )
            if cfg.owner_hotkey:
                self._db.execute(
                    "INSERT OR IGNORE INTO hotkey_owner VALUES (?, ?)",
                    (cfg.owner_hotkey, cfg.owner_coldkey),
                )
                # as subtensor's register_network: the owner's hotkey is the subnet's first neuron
                self._db.execute(
                    "INSERT INTO neurons (netuid, uid, hotkey, block_at_registration, last_update) "
                    "VALUES (?, 0, ?, 0, 0)",
                    (cfg.netuid, cfg.owner_hotkey),
                )
            self._db.execute("COMMIT")
            return genesis

    @property
    def genesis(self) -> str:
        return self._genesis

    @property
    def state_version(self) -> int:
        """Increases with every committed change (block or extrinsic): a cache key for reads."""
        return self._state_version

    @property
    def netuid(self) -> int:
        return self.config.netuid

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _runtime(self, block: int) -> Runtime:
        return Runtime(
            self._db,
            block,
            faucet_enabled=self.config.faucet,
            min_non_immune_uids=self.config.min_non_immune_uids,
            root_coldkey=self.config.root_coldkey,
        )

    def _warn_if_stored_hyperparameters_are_out_of_bounds(self) -> None:
        # A chain written by an older node may hold values the rules now refuse; say so at once.
        with self._lock:
            rows = self._db.execute("SELECT netuid, hyperparameters FROM subnets").fetchall()
        for netuid, raw in rows:
            problem = genesis_refusal(read_hyperparameters(raw))
            if problem is not None:
                log.warning(
                    "netuid %s holds a hyperparameter outside the rules: %s (change it with "
                    "apply_hyperparameters / crucible localnet flags)",
                    netuid,
                    problem.message,
                )

    # ---- operator ---------------------------------------------------------------------------
    def apply_hyperparameters(
        self, netuid: int, overrides: dict[str, int | bool]
    ) -> dict[str, tuple[Any, Any]]:
        """Set ``overrides`` as root, in one transaction; returns ``{name: (old, new)}`` for the
        values that changed (none: nothing written). Raises ``ConfigError`` (code of the rule:
        ``hyperparameter_out_of_range``, ``unknown_hyperparameter``, ``malformed``…) and changes
        nothing when any value is refused."""
        with self._lock:
            rt = self._runtime(self.block() + 1)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = rt.set_hyperparameters(netuid, dict(overrides), "root")
                self._db.execute("COMMIT")
            except ExtrinsicRejected as exc:
                self._db.execute("ROLLBACK")
                raise ConfigError(
                    f"hyperparameters for netuid {netuid} refused: {exc.message}",
                    code=exc.code,
                    fix="pass values inside the bounds named above (subtensor's admin rules)",
                ) from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if changed:
                self._state_version += 1
                log.info("netuid %s hyperparameters changed by the operator: %s", netuid, changed)
            return changed

    # ---- blocks -----------------------------------------------------------------------------------
    def block(self) -> int:
        with self._lock:
            return self._db.execute("SELECT MAX(number) FROM blocks").fetchone()[0]

    def header(self, number: int) -> BlockHeader:
        with self._lock:
            row = self._db.execute("SELECT * FROM blocks WHERE number=?", (number,)).fetchone()
        if row is None:
            raise ChainError(
                f"block {number} does not exist yet (head is {self.block()})", code="no_such_block"
            )
        return BlockHeader(*row)

    def block_hash(self, block: int) -> str:
        return self.header(block).hash

    def produce_block(self) -> BlockHeader:
        """Seal the next block and run its step, all or nothing.

        A step that raises leaves the chain at its last good block: the failure is logged,
        counted in ``health()`` and raised as ``ChainError(code="block_failed")``.
        """
        with self._lock:
            try:
                header = self._seal_next_block()
            except Exception as exc:
                self._failed_blocks += 1
                self._total_failed_blocks += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.blocks_failed.inc()
                log.error(
                    "block production failed (%d in a row); the chain stays at its last good "
                    "block: %s",
                    self._failed_blocks,
                    self._last_error,
                    exc_info=exc,
                )
                raise ChainError(
                    f"the next block could not be produced ({self._last_error}); the chain "
                    f"keeps its last good state",
                    code="block_failed",
                    fix="see the node's log and GET /health",
                ) from exc
            self._failed_blocks = 0
            self.metrics.blocks.inc()
            return header

    def _seal_next_block(self) -> BlockHeader:
        head = self.header(self.block())
        number = head.number + 1
        digests = [
            d
            for (d,) in self._db.execute(
                "SELECT digest FROM extrinsics WHERE block=? ORDER BY id", (number,)
            )
        ]
        root = _digest(*digests)
        randomness = secrets.token_hex(32)
        header = BlockHeader(
            number=number,
            hash=_digest(head.hash, str(number), root, randomness),
            parent=head.hash,
            extrinsics_root=root,
            randomness=randomness,
            timestamp=time.time(),
        )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    header.number,
                    header.hash,
                    header.parent,
                    header.extrinsics_root,
                    header.randomness,
                    header.timestamp,
                ),
            )
            epoch = block_step(
                self._runtime(number), self.netuid, self.config.emission_per_block_rao
            )
            self._db.execute("COMMIT")
            self._state_version += 1
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        log_event(log, "block", block=number, hash=header.hash, extrinsics=len(digests))
        if epoch is not None:
            self._record_epoch(number, epoch)
        return header

    def _record_epoch(self, block: int, out: EpochOutput) -> None:
        total = sum(out.emission)
        top = max(range(len(out.incentive)), key=lambda u: out.incentive[u], default=None)
        if top is not None and out.incentive[top] == 0:
            top = None  # nobody earned incentive: no top uid to name
        self.metrics.epochs.inc()
        self.metrics.epoch_emission.set(total)
        log_event(
            log, "epoch", netuid=self.netuid, block=block, neurons=len(out.emission),
            total_emission_rao=total, top_incentive_uid=top,
        )  # fmt: skip

    def health(self) -> NodeHealth:
        with self._lock:
            return NodeHealth(
                ok=self._failed_blocks == 0,
                block=self.block(),
                failed_blocks=self._failed_blocks,
                total_failed_blocks=self._total_failed_blocks,
                last_error=self._last_error,
            )

    def step(self, blocks: int = 1) -> int:
        for _ in range(blocks):
            self.produce_block()
        return self.block()

    def wait_for_block(self, block: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while (current := self.block()) < block:
            if time.monotonic() >= deadline:
                raise ChainUnavailable(
                    f"block {block} not reached within {timeout_s:.1f} s (head is {current})",
                    code="timeout",
                    fix="is the node producing blocks? (manual-block nodes need step())",
                )
            time.sleep(0.02)
        return current

    # ---- extrinsics --------------------------------------------------------------------------
    def nonce(self, ss58: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT nonce FROM accounts WHERE ss58=?", (ss58,)).fetchone()
        return row[0] if row else 0

    def submit(self, call: Call, signer: Signer) -> ExtrinsicResult:
        with self._lock:
            extrinsic = sign_call(
                call, signer, nonce=self.nonce(signer.ss58_address), genesis=self._genesis
            )
            return self.submit_extrinsic(extrinsic)

    def submit_extrinsic(self, ext: SignedExtrinsic) -> ExtrinsicResult:
        result = self._submit_extrinsic(ext)
        self._record_extrinsic(result)
        return result

    def _record_extrinsic(self, result: ExtrinsicResult) -> None:
        # a label only from our own vocabulary: a made-up call name must not mint a series
        call = result.call if hasattr(Runtime, f"_call_{result.call}") else "unknown"
        if result.ok:
            outcome = "duplicate" if result.duplicate else "accepted"
            self.metrics.extrinsics.labels(call, outcome, "").inc()
            log_event(log, f"extrinsic_{outcome}", call=call, block=result.block,
                      digest=result.digest)  # fmt: skip
        else:
            code = result.code or "refused"
            self.metrics.extrinsics.labels(call, "refused", code).inc()
            log_event(log, "extrinsic_refused", call=call, code=code, block=result.block,
                      message=result.message)  # fmt: skip

    def _submit_extrinsic(self, ext: SignedExtrinsic) -> ExtrinsicResult:
        try:
            if ext.genesis != self._genesis:
                raise ExtrinsicRejected(
                    "the extrinsic was signed for another chain (genesis differs)",
                    code="wrong_chain",
                )
            ext.verify()
        except ExtrinsicRejected as exc:
            return ExtrinsicResult(ok=False, call=ext.call, code=exc.code, message=exc.message)
        digest = ext.digest()
        with self._lock:
            recorded = self.extrinsic(digest)
            if recorded is not None:  # the same signed bytes again: a re-send, not a new call
                return dataclasses.replace(
                    recorded,
                    duplicate=True,
                    message=f"already applied in block {recorded.block}; this is its result",
                )
            block = self.block() + 1
            try:
                data = self._apply(ext, digest, block)
            except ExtrinsicRejected as exc:
                return ExtrinsicResult(
                    ok=False,
                    call=ext.call,
                    block=block,
                    code=exc.code,
                    message=exc.message,
                    digest=digest,
                )
            return ExtrinsicResult(ok=True, call=ext.call, block=block, data=data, digest=digest)

    def _apply(self, ext: SignedExtrinsic, digest: str, block: int) -> dict[str, Any]:
        """Check the nonce and signer role, run the call and record it, in one transaction."""
        rt = self._runtime(block)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            expected = rt.db.execute(
                "SELECT nonce FROM accounts WHERE ss58=?", (ext.signer,)
            ).fetchone()
            expected_nonce = expected[0] if expected else 0
            if ext.nonce != expected_nonce:
                kind = (
                    "was already used (a replay?)"
                    if ext.nonce < expected_nonce
                    else "is in the future"
                )
                raise ExtrinsicRejected(
                    f"nonce {ext.nonce} {kind}; the next nonce of {ext.signer} is {expected_nonce}",
                    code="bad_nonce",
                )
            self._check_signer_role(rt, ext)
            data = rt.apply(ext.call, ext.params, ext.signer)
            rt.db.execute(
                "INSERT INTO accounts (ss58, nonce) VALUES (?, 1) "
                "ON CONFLICT(ss58) DO UPDATE SET nonce = nonce + 1",
                (ext.signer,),
            )
            rt.db.execute(
                "INSERT INTO extrinsics (block, signer, call, body, digest, result) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    block,
                    ext.signer,
                    ext.call,
                    canonical_bytes(ext.to_json()).decode(),
                    digest,
                    json.dumps(data, sort_keys=True),
                ),
            )
            self._db.execute("COMMIT")
            self._state_version += 1
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return data

    def extrinsic(self, digest: str) -> ExtrinsicResult | None:
        """The recorded result of the applied extrinsic with ``digest``, or None if none was.

        Only applied extrinsics are recorded: a refused one changed nothing and may be sent
        again."""
        with self._lock:
            row = self._db.execute(
                "SELECT block, call, result FROM extrinsics WHERE digest=? ORDER BY id LIMIT 1",
                (digest,),
            ).fetchone()
        if row is None:
            return None
        block, call, result = row
        return ExtrinsicResult(
            ok=True, call=call, block=block, data=json.loads(result or "{}"), digest=digest
        )

    @staticmethod
    def _check_signer_role(rt: Runtime, ext: SignedExtrinsic) -> None:
        is_hotkey = rt.owner_of(ext.signer) is not None
        owns_hotkeys = (
            rt.db.execute(
                "SELECT 1 FROM hotkey_owner WHERE coldkey=? LIMIT 1", (ext.signer,)
            ).fetchone()
            is not None
        )
        if ext.call in HOTKEY_CALLS and not is_hotkey and owns_hotkeys:
            raise ExtrinsicRejected(
                f"{ext.call} must be signed by the neuron's hotkey, not coldkey {ext.signer}",
                code="wrong_signer",
            )
        if ext.call in COLDKEY_CALLS and is_hotkey and not owns_hotkeys:
            raise ExtrinsicRejected(
                f"{ext.call} must be signed by a coldkey; {ext.signer} is a hotkey",
                code="wrong_signer",
            )

    # ---- reads ---------------------------------------------------------------------------------------
    def balance(self, coldkey: str) -> int:
        with self._lock:
            return self._runtime(self.block()).balance(coldkey)

    def hyperparameters(self, netuid: int) -> Hyperparameters:
        with self._lock:
            try:
                return self._runtime(self.block()).hyperparameters(netuid)
            except ExtrinsicRejected as exc:
                raise ChainError(exc.message, code=exc.code) from exc

    def commitments(self, netuid: int) -> dict[str, Commitment]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.hotkey, c.data, c.block FROM commitments c JOIN neurons n "
                "ON n.netuid = c.netuid AND n.hotkey = c.hotkey WHERE c.netuid=?",
                (netuid,),
            ).fetchall()
        return {hk: Commitment(data=data, block=block) for hk, data, block in rows}

    def metagraph(self, netuid: int, block: int | None = None) -> Metagraph:
        with self._lock:
            head = self.block()
            if block is not None and block != head:
                raise ChainError(
                    f"the local node serves the metagraph at its head ({head}) only, not block {block}",
                    code="history_unavailable",
                )
            self._db.row_factory = sqlite3.Row
            try:
                sub = self._db.execute("SELECT * FROM subnets WHERE netuid=?", (netuid,)).fetchone()
                if sub is None:
                    raise ChainError(
                        f"netuid {netuid} does not exist on this chain", code="subnet_not_found"
                    )
                rows = self._db.execute(
                    "SELECT n.*, o.coldkey FROM neurons n LEFT JOIN hotkey_owner o ON o.hotkey = n.hotkey "
                    "WHERE n.netuid=? ORDER BY n.uid",
                    (netuid,),
                ).fetchall()
            finally:
                self._db.row_factory = None
            stake = dict(
                self._db.execute(
                    "SELECT hotkey, SUM(amount) FROM stake WHERE netuid=? GROUP BY hotkey",
                    (netuid,),
                ).fetchall()
            )
            commitments = {
                hk: Commitment(data, blk)
                for hk, data, blk in self._db.execute(
                    "SELECT hotkey, data, block FROM commitments WHERE netuid=?", (netuid,)
                ).fetchall()
            }
            block_hash = self.block_hash(head)
        hp = read_hyperparameters(sub["hyperparameters"])
        neurons = tuple(
            Neuron(
                uid=r["uid"],
                hotkey=r["hotkey"],
                coldkey=r["coldkey"] or "",
                stake_rao=stake.get(r["hotkey"], 0),
                active=bool(r["active"]),
                validator_permit=bool(r["validator_permit"]),
                last_update=r["last_update"],
                block_at_registration=r["block_at_registration"],
                consensus=r["consensus"] / 65535,
                incentive=r["incentive"] / 65535,
                dividends=r["dividends"] / 65535,
                validator_trust=r["validator_trust"] / 65535,
                emission_rao=r["emission"],
                endpoint=Endpoint(r["ip"], r["port"], r["protocol"]) if r["ip"] else None,
                commitment=commitments.get(r["hotkey"]),
            )
            for r in rows
        )
        return Metagraph(
            netuid=netuid,
            block=head,
            block_hash=block_hash,
            owner_hotkey=sub["owner_hotkey"],
            hyperparameters=hp,
            neurons=neurons,
            weights={
                r["uid"]: dict(map(tuple, json.loads(r["weights"])))
                for r in rows
                if r["weights"] != "[]"
            },
            bonds={
                r["uid"]: dict(map(tuple, json.loads(r["bonds"])))
                for r in rows
                if r["bonds"] != "[]"
            },
        )

    def subnet_owner(self, netuid: int) -> str:
        """The owner coldkey of ``netuid`` as stored on the chain."""
        with self._lock:
            try:
                return self._runtime(self.block()).subnet(netuid)["owner_coldkey"]
            except ExtrinsicRejected as exc:
                raise ChainError(exc.message, code=exc.code) from exc

    def burn(self, netuid: int) -> int:
        """The current registration burn in rao."""
        with self._lock:
            return self._runtime(self.block()).subnet(netuid)["burn"]

    def stake_of(self, hotkey: str, netuid: int) -> int:
        with self._lock:
            return self._runtime(self.block()).hotkey_stake(hotkey, netuid)
