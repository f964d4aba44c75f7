"""Which store a commitment's ``store-ref`` names: ``local`` or a Hugging Face repo id."""

from __future__ import annotations

from collections.abc import Callable

from crucible.store.base import ModelStore

__all__ = ["StoreResolver", "model_store_resolver"]

StoreResolver = Callable[[str], ModelStore]


def model_store_resolver(local_store: ModelStore, hf_token: str | None = None) -> StoreResolver:
    from crucible.store.hf import HuggingFaceStore

    def resolve(ref: str) -> ModelStore:
        return local_store if ref == "local" else HuggingFaceStore(ref, token=hf_token)

    return resolve
