"""Fetch a committed model from its store and verify it before anyone runs it.

Checks, in order: the commitment parses and names an active competition; the store returns the
revision (retried with backoff on transient errors); the content hash of the files is the one the
revision promises (local store) and, with the hotkey, gives the commitment's secure hash (so a
copied commitment fails); the files pass the competition's constraints (safetensors only, no
remote code, architecture, parameters, bytes, vocabulary, finite weights). The model cache is
bounded: least recently used models are evicted first.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from crucible.models.io import LoadedModel, load_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import CommitmentError, ModelRejected, StoreError
from crucible.store.base import ModelStore
from crucible.store.hashing import content_hash
from crucible.store.resolve import StoreResolver

__all__ = ["FetchedModel", "evict_cache", "fetch_and_verify"]

PERMANENT_STORE_ERRORS = frozenset(
    {"hash_mismatch", "not_found", "wrong_store", "bad_ref", "pickle_refused", "symlink_refused"}
)


@dataclass(frozen=True)
class FetchedModel:
    commitment: ModelCommitment
    path: Path
    content_hash: str
    loaded: LoadedModel


def _get_with_retries(
    store: ModelStore, c: ModelCommitment, dest: Path, retries: int, backoff_s: float
) -> Path:
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return store.get(c.store_ref, c.revision, dest)
        except StoreError as exc:
            if exc.code in PERMANENT_STORE_ERRORS or attempt == retries:
                raise ModelRejected(
                    "store", f"cannot fetch {c.store_ref}@{c.revision[:12]}: {exc}"
                ) from exc
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def fetch_and_verify(
    raw_commitment: str,
    hotkey: str,
    competitions: dict[str, CompetitionSpec],
    resolve_store: StoreResolver,
    cache_dir: Path,
    *,
    retries: int = 2,
    backoff_s: float = 0.5,
) -> FetchedModel:
    try:
        commitment = ModelCommitment.parse(raw_commitment)
    except CommitmentError as exc:
        raise ModelRejected("bad_commitment", str(exc)) from exc
    spec = next(
        (s for s in competitions.values() if s.key == commitment.competition and s.active), None
    )
    if spec is None:
        raise ModelRejected(
            "unknown_competition", f"{commitment.competition} is not an active competition"
        )
    try:
        store = resolve_store(commitment.store_ref)
    except StoreError as exc:
        raise ModelRejected("store", str(exc)) from exc
    path = _get_with_retries(store, commitment, Path(cache_dir), retries, backoff_s)
    digest = content_hash(path)
    if commitment.store_ref == "local" and digest != commitment.revision:
        raise ModelRejected(
            "hash_mismatch", f"files hash to {digest[:16]}…, not the committed revision"
        )
    if not commitment.matches(digest, hotkey):
        raise ModelRejected(
            "secure_hash_mismatch",
            f"the secure hash does not bind these files to hotkey {hotkey}: a copied commitment?",
        )
    loaded = load_model_dir(path, spec.model)
    path.touch()  # most recently used
    return FetchedModel(commitment, path, digest, loaded)


def evict_cache(cache_dir: Path, max_bytes: int, keep: set[Path]) -> list[Path]:
    """Delete least recently used model directories until the cache fits ``max_bytes``."""
    entries = (
        [p for p in Path(cache_dir).iterdir() if p.is_dir() and not p.name.startswith(".")]
        if Path(cache_dir).exists()
        else []
    )
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in entries}
    total = sum(sizes.values())
    removed = []
    for path in sorted(entries, key=lambda p: p.stat().st_mtime):
        if total <= max_bytes:
            break
        if path in keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= sizes[path]
        removed.append(path)
    return removed
