"""Fetch a committed model from its store and verify it before anyone runs it.

Checks, in order: the commitment parses and names an active competition; the store returns the
revision, capped by the competition (``max_bytes`` and the model file names, refused before
anything is copied or downloaded; transient errors retried with backoff); the content hash of the
files is the one the revision promises (local store) and, with the hotkey, gives the commitment's
secure hash (so a copied commitment fails); the files pass the competition's constraints
(safetensors only, no remote code, architecture, config keys, parameters, bytes, vocabulary,
finite weights). The model cache is bounded: least recently used models are evicted first.

Whose fault a failure is decides what the validator does with it:

* ``ModelRejected`` (the miner's: the validator records it and does not fetch the same commitment
  again): a bad commitment or competition, a bad store reference, and the store codes in
  ``PERMANENT_STORE_ERRORS``: the revision is not in the store (``not_found``), the files hash to
  something else (``hash_mismatch``, ``secure_hash_mismatch``), too large (``too_large``),
  unexpected, pickle-like, symlinked or special files, an empty model, the Hub refusing access to
  the repo (``hub_refused``, e.g. 403 gated); and every ``ModelRejected`` of
  ``load_model_dir`` (bad config, corrupt, parameters, ...).
* ``ModelUnavailable`` (``StoreError``, code ``store_unavailable``, ``transient``: nobody's fault
  yet, never recorded as a rejection, retried next round): every other store failure once the
  retries are spent: network errors, timeouts, HTTP 429/5xx (``hub_error``), the Hub disabled on
  this machine (``offline``, ``hub_offline``), this machine's token refused (``hub_auth``), a
  server sending more than it declared (``size_mismatch``), a local disk error (``OSError``).
  Codes a retry within seconds cannot change (``SETTLED_STORE_ERRORS``) are not retried.
* ``ResourceExhausted`` (from ``load_model_dir``): this machine ran out of memory loading a model
  within its limits.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from crucible.models.io import ALLOWED_FILES, LoadedModel, load_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import (
    CommitmentError,
    ModelRejected,
    ModelUnavailable,
    StoreError,
)
from crucible.store.base import ModelStore
from crucible.store.hashing import content_hash
from crucible.store.resolve import StoreResolver

__all__ = ["PERMANENT_STORE_ERRORS", "FetchedModel", "evict_cache", "fetch_and_verify"]

# transient codes a retry within seconds cannot change (this machine's settings)
SETTLED_STORE_ERRORS = frozenset({"offline", "hub_offline", "hub_auth"})
# store codes that say something about the model (or its commitment); any other is transient
PERMANENT_STORE_ERRORS = frozenset(
    {
        "hash_mismatch",
        "not_found",
        "wrong_store",
        "bad_ref",
        "pickle_refused",
        "symlink_refused",
        "too_large",
        "unexpected_file",
        "bad_file",
        "empty_model",
        "hub_refused",
    }
)


@dataclass(frozen=True)
class FetchedModel:
    commitment: ModelCommitment
    path: Path
    content_hash: str
    loaded: LoadedModel


def _get_with_retries(
    store: ModelStore,
    c: ModelCommitment,
    dest: Path,
    max_bytes: int,
    retries: int,
    backoff_s: float,
) -> Path:
    where = f"{c.store_ref}@{c.revision[:12]}"
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return store.get(
                c.store_ref, c.revision, dest, max_bytes=max_bytes, allowed_files=ALLOWED_FILES
            )
        except StoreError as exc:
            if exc.code in PERMANENT_STORE_ERRORS:
                raise ModelRejected(exc.code, f"cannot fetch {where}: {exc}") from exc
            error: Exception = exc
            settled = exc.code in SETTLED_STORE_ERRORS
        except OSError as exc:  # this machine's disk, not the model
            error, settled = exc, False
        if attempt == retries or settled:
            raise ModelUnavailable(
                f"cannot fetch {where} after {attempt + 1} tries: {error}",
                fix="nothing is recorded against the miner; the next round tries again",
            ) from error
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
        if exc.code in PERMANENT_STORE_ERRORS:  # a store-ref no store accepts: a bad commitment
            raise ModelRejected(exc.code, str(exc)) from exc
        raise ModelUnavailable(  # e.g. the Hub switched off on this validator (hub_offline)
            f"cannot reach the store of {commitment.store_ref}: {exc.message} ({exc.code})",
            fix=exc.fix,
        ) from exc
    path = _get_with_retries(
        store, commitment, Path(cache_dir), spec.model.max_bytes, retries, backoff_s
    )
    try:
        digest = content_hash(path)
    except StoreError as exc:
        raise ModelRejected(exc.code, f"the fetched files cannot be hashed: {exc}") from exc
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
