"""Fetching, checking and caching the fresh releases a round may use — the same for a validator,
a miner's self-evaluation and an auditor.

A release's bytes come from the document store its commitment names (``local``: the store the
subnet's neurons share) and are checked by ``corpus.releases.parse_release`` (size, hash, format)
before they are tokenized into an ``EvalPool``; a checked release is kept by id. ``choose``
walks the publishers' releases newest first and takes the first one that checks out; every one
it passes over is named with its reason. A release that fails to fetch *now* (the store down) is
passed over the same way but stays eligible for the next round.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from crucible.corpus.releases import parse_release
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import CrucibleError, DataError
from crucible.scoring.pools import pool_from_documents
from crucible.scoring.round_data import ReleaseRef
from crucible.scoring.sampling import EvalPool
from crucible.store.documents import DocumentStore

__all__ = ["RELEASES_KIND", "ReleaseLoader"]

RELEASES_KIND = "releases"


class ReleaseLoader:
    def __init__(
        self, store: DocumentStore | None, tokenizer: PreTrainedTokenizerBase, spec: CompetitionSpec
    ) -> None:
        self.store, self.tokenizer, self.spec = store, tokenizer, spec
        self._pools: dict[str, EvalPool] = {}

    def pool(self, ref: ReleaseRef) -> EvalPool:
        if ref.release_id in self._pools:
            return self._pools[ref.release_id]
        if ref.store_ref != "local" or self.store is None:
            raise DataError(
                f"release store {ref.store_ref!r} is not reachable from here",
                code="release_unavailable",
            )
        raw = self.store.get(RELEASES_KIND, ref.release_id)
        documents = parse_release(
            raw, ref.release_id,
            max_bytes=self.spec.data.max_release_bytes, max_documents=self.spec.data.max_release_documents,
        )  # fmt: skip
        pool = pool_from_documents(documents, self.tokenizer)
        if not any(len(t) >= self.spec.model.sequence_length for t in pool.tokens):
            raise DataError(
                f"no document of the release has {self.spec.model.sequence_length} tokens",
                code="release_too_short",
            )
        self._pools[ref.release_id] = pool
        return pool

    def choose(
        self, candidates: list[ReleaseRef]
    ) -> tuple[ReleaseRef | None, EvalPool | None, dict[str, str]]:
        """The newest candidate that checks out, its pool, and why each newer one was passed over."""
        passed: dict[str, str] = {}
        for ref in candidates:
            try:
                return ref, self.pool(ref), passed
            except CrucibleError as exc:
                passed[ref.publisher] = (
                    f"release {ref.release_id[:12]}… at block {ref.commit_block}: {exc.code}: {exc.message}"
                )
        return None, None, passed
