"""A Hugging Face Hub model store with the same interface, for real deployments.

* ``put`` checks the model like the local store (safetensors only, no symlinks, size limit),
  creates the repo if needed, uploads the folder and returns the commit sha as the revision and
  the repo id as the ref.
* ``get`` caps the download before and while it happens. Before: it lists the repo's files with
  their sizes at the pinned revision (``model_info(files_metadata=True)``) and refuses, without
  downloading a byte, a file name that is pickle-like, escapes the folder or is not in the
  caller's ``allowed_files`` (``pickle_refused`` / ``bad_file`` / ``unexpected_file``), and a
  total over the caller's ``max_bytes`` (``too_large``). While: it streams each file from that
  exact commit with a byte counter and cuts the connection as soon as a file exceeds its declared
  size (``size_mismatch``: a lying server or a man in the middle; transient, since the miner
  cannot make the Hub lie). The Hub's own bookkeeping (``.gitattributes``, ``.cache/``) is not
  downloaded. What arrived is checked again (``check_model_dir``), hashed and renamed to
  ``dest_dir/<revision>``; a failure leaves nothing behind. The revision is a commit sha, not a
  content hash, so the caller compares ``content_hash(path)`` (or :meth:`HuggingFaceStore.fetch`'s
  hash) with its commitment.
* Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried ``retries``
  times with exponential backoff (``backoff_s``, doubled each try); a missing repo or revision,
  a refused token and offline mode fail at once. Every failure is a ``StoreError``; codes
  ``hub_error``, ``offline``, ``hub_auth`` (401: this machine's token) and ``size_mismatch`` say
  nothing about the model.

``endpoint`` points the store at a self-hosted Hub instead of huggingface.co.

This machine has no Hub access, so the tests exercise construction, the fail-fast path with
``HF_HUB_OFFLINE=1`` (checked before any network call, so it never hangs or retries), the
retry/backoff/error policy and ``get`` (listing, caps, streaming, a server that lies about sizes)
against a Hub-like HTTP server on 127.0.0.1. Uploading to a real Hub is untested here.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from crucible.protocol.digits import ascii_decimal
from crucible.protocol.errors import StoreError
from crucible.store.base import DEFAULT_MAX_BYTES, StoredModel, check_file_name, check_model_dir
from crucible.store.hashing import content_hash

__all__ = ["HuggingFaceStore"]

T = TypeVar("T")

HUB_BOOKKEEPING = (".cache", ".gitattributes")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[0-9a-f]{7,64}$")
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}")
MAX_FILES = 256  # a model repo holds a handful; a listing this long is refused unread
_CHUNK = 1 << 20


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
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_repo_id(repo_id)
        if retries < 0 or backoff_s < 0:
            raise StoreError("retries and backoff_s must be >= 0", code="bad_config")
        self.repo_id, self.token = repo_id, token
        self.endpoint = endpoint  # None: huggingface.co (or HF_ENDPOINT); else a self-hosted hub
        self.retries, self.backoff_s, self.max_bytes = retries, backoff_s, max_bytes
        self.timeout_s = timeout_s  # per HTTP request (connect, and each read of a download)
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
                if status == 401:  # this machine's token is wrong: nothing to do with the model
                    raise StoreError(
                        f"{what}: the Hub refused this machine's token (HTTP 401): {exc}",
                        code="hub_auth",
                        fix="check HF_TOKEN (or log in again with `hf auth login`)",
                    ) from exc
                if status is not None and status < 500 and status != 429:
                    raise StoreError(
                        f"{what}: the Hub refused it (HTTP {status}): {exc}",
                        code="hub_refused",
                        fix="check the token's write access" if status == 403 else None,
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

    def fetch(
        self,
        ref: str,
        revision: str,
        dest_dir: Path,
        *,
        max_bytes: int,
        allowed_files: Collection[str] | None = None,
    ) -> tuple[Path, str]:
        """``get`` plus the recomputed content hash of the downloaded files."""
        from huggingface_hub import HfApi

        _check_repo_id(ref)
        if not _REVISION.match(revision or ""):
            raise StoreError(f"{revision!r} is not a commit sha", code="bad_ref")
        self._fail_if_offline("download")
        dest_dir = Path(dest_dir)
        final = dest_dir / revision
        if final.is_dir():
            try:
                for path in final.rglob("*"):
                    if path.is_file():
                        check_file_name(path.relative_to(final).as_posix(), allowed_files)
                check_model_dir(final, max_bytes)
                return final, content_hash(final)
            except StoreError:
                shutil.rmtree(final, ignore_errors=True)
        api = HfApi(token=self.token, endpoint=self.endpoint)
        info = self._retry(
            "list files",
            lambda: api.model_info(
                ref, revision=revision, files_metadata=True, timeout=self.timeout_s
            ),
        )
        commit, files = plan_download(info, revision, max_bytes, allowed_files)
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".hub-"))
        try:
            for name, size in files:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                download = functools.partial(self._download, ref, commit, name, size, target)
                self._retry(f"download {name}", download)
            check_model_dir(tmp, max_bytes)
            digest = content_hash(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, digest

    def _download(self, ref: str, commit: str, name: str, size: int, target: Path) -> None:
        """Stream one file into ``target``; cut off past its declared ``size``."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(ref, name, revision=commit, endpoint=self.endpoint)
        # identity: the declared size is the file's; a body encoded anyway is counted as it
        # inflates (the client inflates in bounded pieces), so a gzip bomb is cut off too
        headers = build_hf_headers(token=self.token) | {"Accept-Encoding": "identity"}
        received = 0
        with (
            get_session().stream(
                "GET", url, headers=headers, timeout=self.timeout_s, follow_redirects=True
            ) as response,
            target.open("wb") as out,
        ):
            hf_raise_for_status(response)
            length = ascii_decimal(response.headers.get("Content-Length"))
            if length is not None and length > size and "Content-Encoding" not in response.headers:
                raise _oversized(name, size, f"announces {length}")
            for chunk in response.iter_bytes(chunk_size=_CHUNK):
                received += len(chunk)
                if received > size:  # stop reading: the rest is never downloaded
                    raise _oversized(name, size, f"sent at least {received}")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if received != size:
            raise StoreError(
                f"{name}: the Hub sent {received} of the {size} bytes it declared",
                code="hub_error",
            )

    def get(
        self,
        ref: str,
        revision: str,
        dest_dir: Path,
        *,
        max_bytes: int,
        allowed_files: Collection[str] | None = None,
    ) -> Path:
        return self.fetch(
            ref, revision, dest_dir, max_bytes=max_bytes, allowed_files=allowed_files
        )[0]


def _oversized(name: str, size: int, what: str) -> StoreError:
    return StoreError(
        f"{name}: the Hub declared {size} bytes but {what}; download cut off",
        code="size_mismatch",
    )


def plan_download(
    info: Any, revision: str, max_bytes: int, allowed_files: Collection[str] | None
) -> tuple[str, list[tuple[str, int]]]:
    """The commit to download from and the (name, declared size) of each file to fetch.

    Refuses, before anything is downloaded, a listing for another commit, too many files, a bad,
    pickle-like or unexpected file name, a file without a declared size, and a declared total
    over ``max_bytes``.
    """
    commit = getattr(info, "sha", None)
    if (
        not isinstance(commit, str)
        or not _FULL_COMMIT.fullmatch(
            commit
        )  # the Hub names a commit in full; anything else is not a pin
        or not commit.startswith(revision)
    ):
        raise StoreError(
            f"the Hub listed commit {str(commit)[:40]!r} for revision {revision}", code="hub_error"
        )
    siblings = list(getattr(info, "siblings", None) or [])
    if len(siblings) > MAX_FILES:
        raise StoreError(
            f"the repo holds {len(siblings)} files; a model has at most {MAX_FILES}",
            code="unexpected_file",
        )
    files: list[tuple[str, int]] = []
    for sibling in siblings:
        name, size = getattr(sibling, "rfilename", None), getattr(sibling, "size", None)
        if not isinstance(name, str):
            raise StoreError(f"the Hub listed a file named {name!r}", code="hub_error")
        if name in HUB_BOOKKEEPING or name.startswith(".cache/"):
            continue
        check_file_name(name, allowed_files)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise StoreError(f"the Hub did not declare the size of {name}", code="hub_error")
        files.append((name, size))
    if not files:
        raise StoreError(f"revision {revision} holds no model files", code="empty_model")
    total = sum(size for _, size in files)
    if total > max_bytes:
        raise StoreError(
            f"the model's files declare {total} bytes; at most {max_bytes} allowed "
            "(nothing was downloaded)",
            code="too_large",
        )
    return commit, files
