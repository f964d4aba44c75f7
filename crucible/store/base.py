"""The ``ModelStore`` protocol: where published models live (local folder, Hugging Face Hub).

Every store refuses pickle-like files (safetensors only) and symlinks, and materialises a model
atomically: a failed or corrupt ``get`` leaves no directory behind. ``get`` takes the caller's
cap (``max_bytes``, and optionally the file names a model may hold) and refuses an object over it
*before* copying or downloading it, and again while the bytes arrive (a store that sends more
than it declared is cut off).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from crucible.protocol.errors import StoreError
from crucible.store.hashing import model_files

__all__ = [
    "DEFAULT_MAX_BYTES",
    "PICKLE_SUFFIXES",
    "ModelStore",
    "StoredModel",
    "check_file_name",
    "check_model_dir",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
# Formats that can run code on load (pickle) or wrap it (numpy with allow_pickle).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")


@dataclass(frozen=True)
class StoredModel:
    ref: str  # "local" or a Hub repo id
    revision: str  # immutable: the content hash locally, a commit sha on the Hub
    content_hash: str
    size_bytes: int


@runtime_checkable
class ModelStore(Protocol):
    def put(self, model_dir: Path) -> StoredModel:
        """Store the files of ``model_dir``; idempotent for the same content."""
        ...

    def get(
        self,
        ref: str,
        revision: str,
        dest_dir: Path,
        *,
        max_bytes: int,
        allowed_files: Collection[str] | None = None,
    ) -> Path:
        """Materialise the model as ``dest_dir/<revision>`` and return that directory.

        Refuses, before copying or downloading anything, an object of more than ``max_bytes``
        (``code="too_large"``) or holding a file whose relative path is not in ``allowed_files``
        (``code="unexpected_file"``; ``None`` allows any non-pickle file). Stores whose revision
        is the content hash verify it (``StoreError(code="hash_mismatch")``); the caller always
        recomputes ``content_hash`` and checks it against the commitment. No partial directory
        is left behind on failure.
        """
        ...

    def exists(self, ref: str, revision: str) -> bool: ...


def check_model_dir(model_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Refuse pickle-like files, symlinks and special files, and models over ``max_bytes``.

    Returns the total size in bytes of the model's files.
    """
    total = 0
    for path in model_files(model_dir):
        if path.name.lower().endswith(PICKLE_SUFFIXES):
            raise StoreError(
                f"{path.name}: pickle-like files can run code when loaded; safetensors only",
                code="pickle_refused",
                fix="save the weights with safetensors (model.save_pretrained(safe_serialization=True))",
            )
        total += path.stat().st_size
    if total > max_bytes:
        raise StoreError(f"model is {total} bytes; at most {max_bytes} allowed", code="too_large")
    return total


def check_file_name(name: str, allowed_files: Collection[str] | None) -> None:
    """Refuse a relative file path that escapes the model, is pickle-like or is not allowed."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or len(name) > 255
        or name.startswith("/")
        or any(c in name for c in "\\\n\r\0")
        or any(part in (".", "..") for part in parts)
        or "/".join(parts) != name
    ):
        raise StoreError(f"{name[:80]!r} is not a plain relative file name", code="bad_file")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise StoreError(
            f"{name}: pickle-like files can run code when loaded; safetensors only",
            code="pickle_refused",
        )
    if allowed_files is not None and name not in allowed_files:
        raise StoreError(
            f"{name} is not part of a model (allowed: {sorted(allowed_files)})",
            code="unexpected_file",
        )
