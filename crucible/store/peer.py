"""Content-addressed objects and signed documents fetched from another neuron's endpoint.

Neurons on different machines share no disk: a collab miner serves the payloads it committed,
a validator serves the checkpoints it aggregated, its signed pointers and bundles, all over
plain HTTP from the endpoint it put on chain (``crucible.server.objects``,
``validator.bundle_server``). What arrives is untrusted whoever sent it: an object is accepted
only when the bytes hash to the id it was asked for (then it is put in the reader's own
``LocalStore``, where every later read re-checks it), a document only after its reader checks
the signature.

Every GET is bounded three ways before anything is kept: a declared or actual body over
``max_bytes`` is cut off (``too_large``); every socket read has ``timeout_s``; the whole transfer
has ``deadline_s``, so a peer trickling a byte at a time cannot hold the reader for longer than
that (``peer_slow``). Errors are ``StoreError`` with codes a caller can record:
``peer_unreachable``, ``not_found``, ``peer_refused`` (any other HTTP status), ``bad_answer``
(not HTTP, or cut short), ``too_large``,
``peer_slow``, ``hash_mismatch``; which of them are the sender's fault is the caller's call (a
miner's own endpoint: always; an aggregator's: ``ModelUnavailable``, retried later).
"""

from __future__ import annotations

import http.client
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from crucible.protocol.digits import ascii_decimal
from crucible.protocol.errors import StoreError
from crucible.store.base import check_file_name
from crucible.store.hashing import content_hash
from crucible.store.local import LocalStore

__all__ = [
    "BUNDLES_PATH",
    "OBJECTS_PATH",
    "POINTERS_PATH",
    "PeerLimits",
    "http_get",
    "object_url",
    "pull_object",
]

OBJECTS_PATH = "/v1/objects"  # GET <endpoint>/v1/objects/<content hash>/<file name>
BUNDLES_PATH = "/v1/bundles"  # GET <endpoint>/v1/bundles/<bundle id> (validators)
POINTERS_PATH = "/v1/collab/pointers"  # GET <endpoint>/v1/collab/pointers/<competition>
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class PeerLimits:
    timeout_s: float = 10.0  # each connect and each read
    deadline_s: float = 30.0  # the whole transfer


def http_get(url: str, max_bytes: int, limits: PeerLimits = PeerLimits()) -> bytes:
    """The body of ``GET url``: at most ``max_bytes``, within ``limits`` (``StoreError``)."""
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    try:
        with urllib.request.urlopen(request, timeout=limits.timeout_s) as response:  # noqa: S310
            declared = ascii_decimal(response.headers.get("Content-Length"))
            if declared is not None and declared > max_bytes:
                raise _too_large(url, max_bytes, f"declares {declared}")
            return _read_bounded(response, url, max_bytes, started + limits.deadline_s)
    except urllib.error.HTTPError as exc:
        code = "not_found" if exc.code == 404 else "peer_refused"
        raise StoreError(f"{_where(url)} answered HTTP {exc.code}", code=code) from None
    except http.client.HTTPException as exc:  # not HTTP at all, or cut short
        raise StoreError(
            f"{_where(url)} sent a malformed answer: {type(exc).__name__}", code="bad_answer"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(
            f"{_where(url)} is unreachable: {reason}", code="peer_unreachable"
        ) from None


def _read_bounded(response, url: str, max_bytes: int, deadline: float) -> bytes:
    """``read1`` returns what one receive brought, so the deadline is checked between them."""
    body = bytearray()
    while chunk := response.read1(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(url, max_bytes, f"sent at least {len(body)}")
        if time.monotonic() > deadline:
            raise StoreError(
                f"{_where(url)} sent {len(body)} bytes and was still sending at the deadline",
                code="peer_slow",
            )
    return bytes(body)


def _too_large(url: str, max_bytes: int, what: str) -> StoreError:
    return StoreError(
        f"{_where(url)} {what} bytes; at most {max_bytes} allowed (cut off)", code="too_large"
    )


def _where(url: str) -> str:
    return url[:160]


def object_url(endpoint_url: str, digest: str, file_name: str) -> str:
    return f"{endpoint_url.rstrip('/')}{OBJECTS_PATH}/{digest}/{file_name}"


def pull_object(
    endpoint_url: str,
    digest: str,
    file_name: str,
    store: LocalStore,
    *,
    max_bytes: int,
    limits: PeerLimits = PeerLimits(),
) -> bool:
    """Copy the one-file object ``digest`` from a peer into ``store`` unless it is there already.

    True when it was fetched. The bytes are kept only if the folder they make hashes to
    ``digest`` (``hash_mismatch`` otherwise, nothing stored)."""
    if not _DIGEST.match(digest or ""):
        raise StoreError(f"{str(digest)[:70]!r} is not a content hash", code="bad_ref")
    check_file_name(file_name, None)
    if store.exists(store.ref, digest):
        return False
    raw = http_get(object_url(endpoint_url, digest, file_name), max_bytes, limits)
    with tempfile.TemporaryDirectory(prefix="crucible-peer-") as tmp:
        folder = Path(tmp) / "object"
        folder.mkdir()
        (folder / file_name).write_bytes(raw)
        got = content_hash(folder)
        if got != digest:
            raise StoreError(
                f"{_where(endpoint_url)} sent content {got[:16]}… for object {digest[:16]}…",
                code="hash_mismatch",
            )
        store.put(folder)
    return True
