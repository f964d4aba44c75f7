"""A data release committed on chain: ``crucible-data@1:<store-ref>:<release-id>``.

Committed by a data-publisher hotkey the competition spec names; ``store-ref`` says where the
bytes are (``local``: a store the validators share, as on a local chain) and ``release-id`` is
the sha256 of the release's bytes (``crucible.corpus.releases``), so the bytes can come from
anywhere and still be checked. 84 bytes with ``local``; the chain allows 128.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crucible.protocol.errors import CommitmentError

__all__ = ["RELEASE_PREFIX", "ReleaseCommitment"]

RELEASE_PREFIX = "crucible-data@1:"
_REF = re.compile(r"^(local|[A-Za-z0-9][A-Za-z0-9_.-]{0,38}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})$")
_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ReleaseCommitment:
    store_ref: str
    release_id: str

    def __post_init__(self) -> None:
        if not _REF.match(self.store_ref) or not _ID.match(self.release_id):
            raise CommitmentError(
                f"not a release commitment: {self.store_ref!r}:{self.release_id!r}"
            )

    def __str__(self) -> str:
        return f"{RELEASE_PREFIX}{self.store_ref}:{self.release_id}"

    @classmethod
    def parse(cls, raw: str) -> ReleaseCommitment:
        if not raw.startswith(RELEASE_PREFIX):
            raise CommitmentError("a release commitment starts with " + RELEASE_PREFIX)
        store_ref, sep, release_id = raw[len(RELEASE_PREFIX) :].rpartition(":")
        if not sep:
            raise CommitmentError(
                "a release commitment is crucible-data@1:<store-ref>:<release-id>"
            )
        return cls(store_ref, release_id)

    @staticmethod
    def looks_like(raw: str | None) -> bool:
        return raw is not None and raw.startswith(RELEASE_PREFIX)
