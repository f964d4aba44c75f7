"""A Hugging Face Hub model store with the same interface, for real deployments.

``put`` uploads the folder and returns the commit sha as the revision; ``get`` downloads exactly
that revision and recomputes the content hash (the caller compares it with the commitment's secure
hash). Connection errors are retried with exponential backoff. This machine has no hub access,
so only construction and the fail-fast offline path are tested here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from protocol.errors import StoreError
from store.base import StoredModel
from store.hashing import content_hash

__all__ = ["HuggingFaceStore"]

T = TypeVar("T")


class HuggingFaceStore:
    def __init__(
        self, repo_id: str, *, token: str | None = None, retries: int = 3, backoff_s: float = 1.0
    ) -> None:
        if "/" not in repo_id:
            raise StoreError(
                f"a Hub repo id looks like owner/name, not {repo_id!r}", code="bad_ref"
            )
        self.repo_id, self.token, self.retries, self.backoff_s = repo_id, token, retries, backoff_s

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except OfflineModeIsEnabled as exc:
                raise StoreError(
                    f"{what}: the Hub is disabled on this machine (HF_HUB_OFFLINE)", code="offline"
                ) from exc
            except (OSError, HfHubHTTPError) as exc:
                if attempt == self.retries:
                    raise StoreError(
                        f"{what} failed after {attempt + 1} tries: {exc}", code="hub_error"
                    ) from exc
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def put(self, model_dir: Path) -> StoredModel:
        from huggingface_hub import HfApi

        api = HfApi(token=self.token)
        digest = content_hash(model_dir)
        self._retry("create repo", lambda: api.create_repo(self.repo_id, exist_ok=True))
        info = self._retry(
            "upload",
            lambda: api.upload_folder(
                repo_id=self.repo_id,
                folder_path=str(model_dir),
                commit_message=f"crucible {digest}",
            ),
        )
        size = sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file())
        return StoredModel(self.repo_id, info.oid, digest, size)

    def exists(self, ref: str, revision: str) -> bool:
        from huggingface_hub import HfApi

        try:
            HfApi(token=self.token).model_info(ref, revision=revision)
            return True
        except Exception:  # any Hub error means "not reachable as asked"
            return False

    def get(self, ref: str, revision: str, dest_dir: Path) -> Path:
        from huggingface_hub import snapshot_download

        target = Path(dest_dir) / revision
        path = self._retry(
            "download",
            lambda: snapshot_download(
                ref, revision=revision, local_dir=str(target), token=self.token
            ),
        )
        content_hash(Path(path))  # raises on symlinks / empty downloads
        return Path(path)
