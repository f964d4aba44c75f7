"""Which store a commitment's ``store-ref`` names: ``local`` or a Hugging Face repo id."""

from __future__ import annotations

from collections.abc import Callable

from crucible.protocol.errors import StoreError
from crucible.store.base import ModelStore

__all__ = ["StoreResolver", "model_store_resolver"]

StoreResolver = Callable[[str], ModelStore]


def model_store_resolver(
    local_store: ModelStore, hf_token: str | None = None, *, offline: bool = False
) -> StoreResolver:
    """``offline`` (the neurons' setting, on by default for localnet) refuses every Hub ref with
    a ``hub_offline`` error: the validator's choice, not the miner's fault."""

    def resolve(ref: str) -> ModelStore:
        if ref == "local":
            return local_store
        if offline:
            raise StoreError(
                f"{ref} is on the Hugging Face Hub and offline mode is on",
                code="hub_offline",
                fix="pass --no-offline (or CRUCIBLE_OFFLINE=0) to reach the Hub",
            )
        from crucible.store.hf import HuggingFaceStore

        return HuggingFaceStore(ref, token=hf_token)

    return resolve
