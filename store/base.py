"""The ``ModelStore`` protocol: where published models live (local folder, Hugging Face Hub)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["ModelStore", "StoredModel"]


@dataclass(frozen=True)
class StoredModel:
    ref: str  # "local" or a Hub repo id
    revision: str  # immutable: the content hash locally, a commit sha on the Hub
    content_hash: str
    size_bytes: int


class ModelStore(Protocol):
    def put(self, model_dir: Path) -> StoredModel: ...

    def get(self, ref: str, revision: str, dest_dir: Path) -> Path:
        """Materialise the model under ``dest_dir`` and return its directory (verified)."""
        ...

    def exists(self, ref: str, revision: str) -> bool: ...
