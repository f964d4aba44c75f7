"""Publish a model: check it, store it, commit its hotkey-bound hash on chain, read it back.

Nothing is committed for a model that fails the competition's constraints or could not be
stored; a refused commitment (rate limit, too long, not registered) raises with the chain's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crucible.chain.interface import Chain, SetCommitment, Signer
from crucible.models.io import ModelReport, load_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import ChainError, ExtrinsicRejected
from crucible.store.base import ModelStore, StoredModel

__all__ = ["PublishResult", "publish"]


@dataclass(frozen=True)
class PublishResult:
    commitment: ModelCommitment
    stored: StoredModel
    block: int | None
    report: ModelReport


def publish(
    model_dir: Path,
    spec: CompetitionSpec,
    store: ModelStore,
    chain: Chain,
    netuid: int,
    hotkey: Signer,
) -> PublishResult:
    report = load_model_dir(model_dir, spec.model).report  # the validator's own checks, first
    stored = store.put(model_dir)
    commitment = ModelCommitment.for_model(
        spec.key, stored.ref, stored.revision, stored.content_hash, hotkey.ss58_address
    )
    result = chain.submit(SetCommitment(netuid=netuid, data=str(commitment)), hotkey)
    if not result.ok:
        raise ExtrinsicRejected(
            f"the model is stored ({stored.ref}@{stored.revision[:12]}) but the chain refused the commitment: {result.message}",
            code=result.code,
            fix="publish again once the commitment rate limit has passed"
            if result.code == "commitment_rate_limited"
            else None,
        )
    on_chain = chain.commitments(netuid).get(hotkey.ss58_address)
    if on_chain is None or on_chain.data != str(commitment):
        raise ChainError(
            "the commitment did not read back from the chain as written",
            code="commitment_not_confirmed",
        )
    return PublishResult(commitment, stored, on_chain.block, report)
