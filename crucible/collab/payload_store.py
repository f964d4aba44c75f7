"""Payloads in the model store: one ``payload.safetensors`` in a content-addressed folder.

The miner puts the encoded bytes; the validator gets them back by the content hash the
commitment names, capped by the size the checkpoint's shapes allow (``max_payload_bytes``)
before a byte is copied, and with no other file accepted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from crucible.store.base import ModelStore
from crucible.store.hashing import content_hash

__all__ = ["PAYLOAD_FILE", "fetch_payload", "payload_hash", "put_payload"]

PAYLOAD_FILE = "payload.safetensors"


def _folder(raw: bytes, root: Path) -> Path:
    folder = root / "payload"
    folder.mkdir()
    (folder / PAYLOAD_FILE).write_bytes(raw)
    return folder


def payload_hash(raw: bytes) -> str:
    """The content hash the store will give these bytes (what the miner commits)."""
    with tempfile.TemporaryDirectory(prefix="crucible-payload-") as tmp:
        return content_hash(_folder(raw, Path(tmp)))


def put_payload(store: ModelStore, raw: bytes) -> str:
    with tempfile.TemporaryDirectory(prefix="crucible-payload-") as tmp:
        return store.put(_folder(raw, Path(tmp))).content_hash


def fetch_payload(store: ModelStore, ref: str, digest: str, dest: Path, max_bytes: int) -> bytes:
    """The payload's bytes (``StoreError`` when missing, oversized, corrupt or holding more)."""
    folder = store.get(ref, digest, dest, max_bytes=max_bytes, allowed_files={PAYLOAD_FILE})
    return (folder / PAYLOAD_FILE).read_bytes()
