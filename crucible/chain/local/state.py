"""SQLite storage of the local chain: schema, connection settings, small typed accessors.

WAL journal with ``synchronous=FULL``: a transaction that returned from COMMIT is on disk, so an
acknowledged extrinsic survives ``kill -9`` of the node.

Schema 2 adds each applied extrinsic's recorded ``result`` and an index on its ``digest`` (the
node answers a re-sent envelope from them); ``open_db`` upgrades a schema-1 file in place.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from crucible.chain.interface import Hyperparameters

__all__ = ["SCHEMA_VERSION", "open_db", "read_hyperparameters", "write_hyperparameters"]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY, hash TEXT NOT NULL, parent TEXT NOT NULL,
    extrinsics_root TEXT NOT NULL, randomness TEXT NOT NULL, timestamp REAL NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    ss58 TEXT PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0, nonce INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hotkey_owner (hotkey TEXT PRIMARY KEY, coldkey TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stake (
    hotkey TEXT NOT NULL, coldkey TEXT NOT NULL, netuid INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (hotkey, coldkey, netuid));
CREATE TABLE IF NOT EXISTS subnets (
    netuid INTEGER PRIMARY KEY, owner_coldkey TEXT NOT NULL, owner_hotkey TEXT,
    hyperparameters TEXT NOT NULL, burn INTEGER NOT NULL,
    pending_server INTEGER NOT NULL DEFAULT 0, pending_validator INTEGER NOT NULL DEFAULT 0,
    pending_owner INTEGER NOT NULL DEFAULT 0, last_step_block INTEGER NOT NULL DEFAULT 0,
    last_epoch_block INTEGER NOT NULL DEFAULT 0, epoch_index INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL, uid INTEGER NOT NULL, hotkey TEXT NOT NULL,
    block_at_registration INTEGER NOT NULL, last_update INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1, validator_permit INTEGER NOT NULL DEFAULT 0,
    consensus INTEGER NOT NULL DEFAULT 0, incentive INTEGER NOT NULL DEFAULT 0,
    dividends INTEGER NOT NULL DEFAULT 0, validator_trust INTEGER NOT NULL DEFAULT 0,
    emission INTEGER NOT NULL DEFAULT 0, ip TEXT, port INTEGER, protocol INTEGER,
    served_block INTEGER, weights TEXT NOT NULL DEFAULT '[]', bonds TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (netuid, uid), UNIQUE (netuid, hotkey));
CREATE TABLE IF NOT EXISTS commitments (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, data TEXT NOT NULL, block INTEGER NOT NULL,
    PRIMARY KEY (netuid, hotkey));
CREATE TABLE IF NOT EXISTS weight_commits (
    id INTEGER PRIMARY KEY AUTOINCREMENT, netuid INTEGER NOT NULL, hotkey TEXT NOT NULL,
    commit_hash TEXT NOT NULL, commit_block INTEGER NOT NULL, commit_epoch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS extrinsics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, block INTEGER NOT NULL, signer TEXT NOT NULL,
    call TEXT NOT NULL, body TEXT NOT NULL, digest TEXT NOT NULL, result TEXT);
CREATE INDEX IF NOT EXISTS extrinsics_by_block ON extrinsics (block);
"""
_INDEXES = "CREATE INDEX IF NOT EXISTS extrinsics_by_digest ON extrinsics (digest);"


def open_db(path: Path | str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(extrinsics)")}
    if "result" not in columns:  # a schema-1 file: its extrinsics have no recorded result
        db.execute("ALTER TABLE extrinsics ADD COLUMN result TEXT")
    db.executescript(_INDEXES)
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    return db


def read_hyperparameters(raw: str) -> Hyperparameters:
    stored: dict[str, Any] = json.loads(raw)
    known = {f.name for f in dataclasses.fields(Hyperparameters)}
    return Hyperparameters(**{k: v for k, v in stored.items() if k in known})


def write_hyperparameters(hp: Hyperparameters) -> str:
    return json.dumps(dataclasses.asdict(hp), sort_keys=True)
