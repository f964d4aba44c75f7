"""The ``ModelStore`` protocol: where published models live (local folder, Hugging Face Hub).

Every store refuses pickle-like files (safetensors only) and symlinks, and materialises a model
atomically: a failed or corrupt ``get`` leaves no directory behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from crucible.protocol.errors import StoreError
from crucible.store.hashing import model_files

__all__ = ["DEFAULT_MAX_BYTES", "PICKLE_SUFFIXES", "ModelStore", "StoredModel", "check_model_dir"]

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

    def get(self, ref: str, revision: str, dest_dir: Path) -> Path:
        """Materialise the model as ``dest_dir/<revision>`` and return that directory.

        Stores whose revision is the content hash verify it (``StoreError(code="hash_mismatch")``);
        the caller always recomputes ``content_hash`` and checks it against the commitment. No
        partial directory is left behind on failure.
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
        raise StoreError(
            f"model is {total} bytes; this store takes at most {max_bytes}", code="too_large"
        )
    return total
