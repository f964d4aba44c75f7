"""Where an auditor gets a validator's bundle: its served endpoint, or a store it can read.

Either way the bytes are untrusted: ``validator.audit`` checks the signature, the id against the
on-chain anchor and everything inside. Reads are bounded in size and time; a source that fails
answers None (the audit says "no bundle"), never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from crucible.chain.interface import Neuron
from crucible.protocol.errors import StoreError
from crucible.store.documents import MAX_DOCUMENT_BYTES, DocumentStore
from crucible.store.peer import BUNDLES_PATH, PeerLimits, http_get
from crucible.validator.bundle_server import KIND

__all__ = ["first_of", "http_source", "store_source"]

Source = Callable[[Neuron, str], bytes | None]


def http_source(timeout_s: float = 10.0) -> Source:
    def fetch(neuron: Neuron, ref: str) -> bytes | None:
        if neuron.endpoint is None:
            return None
        url = f"{neuron.endpoint.url}{BUNDLES_PATH}/{ref}"
        try:
            return http_get(url, MAX_DOCUMENT_BYTES, PeerLimits(timeout_s=timeout_s))
        except StoreError:
            return None

    return fetch


def store_source(store: DocumentStore, scan: int = 200) -> Source:
    """By id; for "latest", the newest of the ``scan`` newest bundles signed by that validator
    (a shared store holds every validator's)."""

    def fetch(neuron: Neuron, ref: str) -> bytes | None:
        digests = store.newest(KIND, scan) if ref == "latest" else [ref]
        for digest in digests:
            try:
                raw = store.get(KIND, digest)
            except StoreError:
                continue
            if ref != "latest" or _signed_by(raw, neuron.hotkey):
                return raw
        return None

    return fetch


def _signed_by(raw: bytes, hotkey: str) -> bool:
    try:
        return json.loads(raw).get("validator_hotkey") == hotkey
    except (ValueError, AttributeError):
        return False


def first_of(*sources: Source) -> Source:
    def fetch(neuron: Neuron, ref: str) -> bytes | None:
        for source in sources:
            raw = source(neuron, ref)
            if raw is not None:
                return raw
        return None

    return fetch
