"""A Hugging Face Hub model store with the same interface, for real deployments.

* ``put`` checks the model like the local store (safetensors only, no symlinks, size limit),
  creates the repo if needed, uploads the folder and returns the commit sha as the revision and
  the repo id as the ref.
* ``get`` downloads exactly that revision into a temp dir inside ``dest_dir``, drops the Hub's own
  bookkeeping (``.cache/`` written by ``local_dir`` downloads, the ``.gitattributes`` every Hub
  repo is created with), recomputes the content hash of what is left and renames it to
  ``dest_dir/<revision>``. The revision is a commit sha, not a content hash, so the caller compares
  ``content_hash(path)`` (or :meth:`HuggingFaceStore.fetch`'s hash) with its commitment.
* Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried ``retries``
  times with exponential backoff (``backoff_s``, doubled each try); a missing repo or revision,
  a refused token and offline mode fail at once. Every failure is a ``StoreError``.

``endpoint`` points the store at a self-hosted Hub instead of huggingface.co.

This machine has no Hub access, so the tests exercise construction, the fail-fast path with
``HF_HUB_OFFLINE=1`` (checked before any network call, so it never hangs or retries) and the
retry/backoff/error policy against a scripted Hub-like HTTP server on 127.0.0.1. Uploading to and
downloading from a real Hub is untested here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from crucible.protocol.errors import StoreError
from crucible.store.base import DEFAULT_MAX_BYTES, StoredModel, check_model_dir
from crucible.store.hashing import content_hash

__all__ = ["HuggingFaceStore"]

T = TypeVar("T")

HUB_BOOKKEEPING = (".cache", ".gitattributes")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[0-9a-f]{7,64}$")


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if flag.strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except (ImportError, AttributeError):
        return False


def _check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id or ""):
        raise StoreError(f"a Hub repo id looks like owner/name, not {repo_id!r}", code="bad_ref")


class HuggingFaceStore:
    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_repo_id(repo_id)
        if retries < 0 or backoff_s < 0:
            raise StoreError("retries and backoff_s must be >= 0", code="bad_config")
        self.repo_id, self.token = repo_id, token
        self.endpoint = endpoint  # None: huggingface.co (or HF_ENDPOINT); else a self-hosted hub
        self.retries, self.backoff_s, self.max_bytes = retries, backoff_s, max_bytes
        self._sleep = sleep  # injectable so tests can observe the backoff without waiting

    def _fail_if_offline(self, what: str) -> None:
        if _offline():
            raise StoreError(
                f"{what}: the Hub is disabled on this machine (HF_HUB_OFFLINE)",
                code="offline",
                fix="unset HF_HUB_OFFLINE, or use a local store",
            )

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        from huggingface_hub import errors as hub

        try:
            from httpx2 import TransportError  # the transport huggingface_hub uses here
        except ImportError:  # pragma: no cover - other huggingface_hub builds use httpx
            try:
                from httpx import TransportError
            except ImportError:
                TransportError = OSError  # noqa: N806

        self._fail_if_offline(what)
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except hub.OfflineModeIsEnabled as exc:
                raise StoreError(
                    f"{what}: the Hub is disabled on this machine (HF_HUB_OFFLINE)", code="offline"
                ) from exc
            except (hub.RepositoryNotFoundError, hub.RevisionNotFoundError) as exc:
                raise StoreError(
                    f"{what}: not on the Hub (or private/gated for this token): {exc}",
                    code="not_found",
                ) from exc
            except hub.RemoteEntryNotFoundError as exc:
                raise StoreError(f"{what}: a file is missing: {exc}", code="not_found") from exc
            except hub.HfHubHTTPError as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status is not None and status < 500 and status != 429:
                    raise StoreError(
                        f"{what}: the Hub refused it (HTTP {status}): {exc}",
                        code="hub_refused",
                        fix="check the token's write access" if status in (401, 403) else None,
                    ) from exc
                error: Exception = exc
            except (OSError, TransportError) as exc:  # connection errors, timeouts, disk
                error = exc
            if attempt == self.retries:
                raise StoreError(
                    f"{what} failed after {attempt + 1} tries: {error}", code="hub_error"
                ) from error
            self._sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def put(self, model_dir: Path) -> StoredModel:
        from huggingface_hub import HfApi

        model_dir = Path(model_dir)
        size = check_model_dir(model_dir, self.max_bytes)
        for name in HUB_BOOKKEEPING:
            if (model_dir / name).exists():
                raise StoreError(
                    f"{model_dir / name}: the Hub keeps its own {name}; it cannot be model content",
                    code="bad_file",
                    fix=f"remove {name} from the model directory",
                )
        digest = content_hash(model_dir)
        api = HfApi(token=self.token, endpoint=self.endpoint)
        self._retry("create repo", lambda: api.create_repo(self.repo_id, exist_ok=True))
        info = self._retry(
            "upload",
            lambda: api.upload_folder(
                repo_id=self.repo_id,
                folder_path=str(model_dir),
                commit_message=f"crucible {digest}",
            ),
        )
        revision = getattr(info, "oid", None)
        if not revision:
            raise StoreError("the Hub returned no commit for the upload", code="hub_error")
        return StoredModel(self.repo_id, revision, digest, size)

    def exists(self, ref: str, revision: str) -> bool:
        """True if the revision is on the Hub; False if it is not; ``StoreError`` if unknowable."""
        from huggingface_hub import HfApi

        _check_repo_id(ref)
        try:
            self._retry(
                "look up",
                lambda: HfApi(token=self.token, endpoint=self.endpoint).model_info(
                    ref, revision=revision
                ),
            )
        except StoreError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    def fetch(self, ref: str, revision: str, dest_dir: Path) -> tuple[Path, str]:
        """``get`` plus the recomputed content hash of the downloaded files."""
        from huggingface_hub import snapshot_download

        _check_repo_id(ref)
        if not _REVISION.match(revision or ""):
            raise StoreError(f"{revision!r} is not a commit sha", code="bad_ref")
        self._fail_if_offline("download")
        dest_dir = Path(dest_dir)
        final = dest_dir / revision
        if final.is_dir():
            try:
                return final, content_hash(final)
            except StoreError:
                shutil.rmtree(final, ignore_errors=True)
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".hub-"))
        try:
            self._retry(
                "download",
                lambda: snapshot_download(
                    ref,
                    revision=revision,
                    local_dir=str(tmp),
                    token=self.token,
                    endpoint=self.endpoint,
                ),
            )
            for name in HUB_BOOKKEEPING:
                target = tmp / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
            check_model_dir(tmp, self.max_bytes)
            digest = content_hash(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, digest

    def get(self, ref: str, revision: str, dest_dir: Path) -> Path:
        return self.fetch(ref, revision, dest_dir)[0]
