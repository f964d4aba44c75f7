"""The on-chain model commitment: ``competition@version:store-ref:revision:secure-hash``.

* ``store-ref``: where the model lives — ``local`` for a content-addressed store the validator
  reaches by path or URL, or a Hugging Face repo id (``owner/name``);
* ``revision``: the store's immutable revision (the content hash in the local store, a commit sha
  on the Hub);
* ``secure-hash``: the first 32 hex digits (128 bits) of sha256(content_hash + hotkey). It binds
  the model's content to the committing hotkey, so copying someone's commitment earns nothing (the
  copier's hotkey gives a different hash), and 128 bits keep the whole string within the chain's
  128-byte limit while leaving second-preimage forgery infeasible.

Byte budget (the chain stores at most 128 bytes): ``tiny@1:local:<64-hex content hash>:<32 hex>`` is
110 bytes. With the Hub (a 40-hex commit sha) the fixed parts of ``tiny@1:<repo>:<sha>:<hash>`` take
81 bytes, leaving 47 for ``owner/name``; a longer repo id is refused with
``CommitmentError(code="commitment_too_long")`` before anything is committed.

Why 128 bits of secure hash are enough: a copier who wants credit for someone else's model must
find content whose hash, joined with *their* hotkey, gives the victim's prefix — a second preimage
of a 128-bit truncation of sha256, about 2**128 work. A birthday-style collision (2**64) does not
help: both sides of it would be the attacker's own models. The full content hash is still
recomputed by every validator from the downloaded files and compared via ``matches``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from crucible.protocol.errors import CommitmentError

__all__ = ["MAX_COMMITMENT_BYTES", "SECURE_HASH_HEX", "ModelCommitment", "secure_hash"]

MAX_COMMITMENT_BYTES = 128
SECURE_HASH_HEX = 32

_COMPETITION = re.compile(r"^[a-z][a-z0-9_]{0,15}@[1-9][0-9]{0,5}$")
_STORE_REF = re.compile(
    r"^(local|[A-Za-z0-9][A-Za-z0-9._-]{0,38}/[A-Za-z0-9][A-Za-z0-9._-]{0,63})$"
)
_REVISION = re.compile(r"^[0-9a-f]{7,64}$")
_SECURE = re.compile(rf"^[0-9a-f]{{{SECURE_HASH_HEX}}}$")


def secure_hash(content_hash: str, hotkey: str) -> str:
    return hashlib.sha256((content_hash + hotkey).encode()).hexdigest()[:SECURE_HASH_HEX]


@dataclass(frozen=True)
class ModelCommitment:
    competition: str  # "tiny@1"
    store_ref: str
    revision: str
    secure_hash: str

    def __post_init__(self) -> None:
        for value, pattern, what in (
            (self.competition, _COMPETITION, "competition (id@version)"),
            (self.store_ref, _STORE_REF, "store ref ('local' or owner/name)"),
            (self.revision, _REVISION, "revision (7-64 lowercase hex)"),
            (self.secure_hash, _SECURE, f"secure hash ({SECURE_HASH_HEX} lowercase hex)"),
        ):
            if not isinstance(value, str) or not pattern.match(value):
                raise CommitmentError(f"bad {what}: {value!r}")
        if len(self.encode()) > MAX_COMMITMENT_BYTES:
            raise CommitmentError(
                f"commitment is {len(self.encode())} bytes; the chain allows {MAX_COMMITMENT_BYTES}",
                code="commitment_too_long",
                fix="use a shorter repository name",
            )

    @classmethod
    def for_model(
        cls, competition: str, store_ref: str, revision: str, content_hash: str, hotkey: str
    ) -> ModelCommitment:
        return cls(competition, store_ref, revision, secure_hash(content_hash, hotkey))

    def encode(self) -> bytes:
        return f"{self.competition}:{self.store_ref}:{self.revision}:{self.secure_hash}".encode()

    def __str__(self) -> str:
        return self.encode().decode()

    @classmethod
    def parse(cls, raw: str | bytes) -> ModelCommitment:
        if isinstance(raw, bytes):
            if len(raw) > MAX_COMMITMENT_BYTES:
                raise CommitmentError(f"commitment longer than {MAX_COMMITMENT_BYTES} bytes")
            try:
                raw = raw.decode()
            except UnicodeDecodeError as exc:
                raise CommitmentError("commitment is not UTF-8") from exc
        if not isinstance(raw, str) or len(raw.encode()) > MAX_COMMITMENT_BYTES:
            raise CommitmentError(
                f"commitment must be text of at most {MAX_COMMITMENT_BYTES} bytes"
            )
        parts = raw.split(":")
        if len(parts) != 4:
            raise CommitmentError(
                f"a commitment has 4 ':'-separated parts, got {len(parts)}: {raw[:60]!r}"
            )
        return cls(*parts)

    def matches(self, content_hash: str, hotkey: str) -> bool:
        return self.secure_hash == secure_hash(content_hash, hotkey)
