"""What a collab neuron copies from others' endpoints when they share no disk.

Before a miner picks its checkpoint, and before a validator scores a round, each copies into its
own stores what the others published: every aggregator's newest signed pointer and the bundle it
anchored on chain (``pull_published``), the checkpoint a round starts from (``pull_checkpoint``),
and, for a validator, every committed payload from the endpoint of the hotkey that committed it
(``pull_payloads``). Nothing copied is believed on arrival: objects must hash to their id
(``crucible.store.peer.pull_object``), a pointer's signature must be its aggregator's, a bundle
must hash to the id anchored on chain and be signed by the hotkey that anchored it; the readers
that use them (``checkpoint.latest_pointer``, ``round_checkpoint``, ``LocalStore.get``) check
again. With one shared store (the demo, a cluster with one disk) everything is already there
and nothing is fetched.

Whose fault a failure is decides what it costs: a payload a miner does not serve is that
miner's rejection (``pull_payloads`` returns the reason; the round goes on without it); an
aggregator nobody can reach is nobody's fault, so a checkpoint that cannot be fetched is
``ModelUnavailable`` (transient: the round waits and retries).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from crucible.chain.interface import Metagraph, Neuron
from crucible.collab.checkpoint import (
    CHECKPOINT_FILE,
    POINTER_KIND,
    CheckpointPointer,
    aggregator_hotkeys,
    max_checkpoint_bytes,
    publish_pointer,
    signed_bundle,
)
from crucible.collab.payload_store import PAYLOAD_FILE
from crucible.protocol.anchor import parse_anchor
from crucible.protocol.collab import CollabSpec
from crucible.protocol.errors import AuthError, ModelUnavailable, StoreError
from crucible.store.documents import BUNDLES, MAX_DOCUMENT_BYTES, DocumentStore
from crucible.store.local import LocalStore
from crucible.store.peer import BUNDLES_PATH, POINTERS_PATH, PeerLimits, http_get, pull_object

__all__ = [
    "PayloadPull",
    "aggregator_endpoints",
    "payload_limits",
    "pull_checkpoint",
    "pull_from_any",
    "pull_payloads",
    "pull_published",
]

log = logging.getLogger(__name__)
MAX_POINTER_BYTES = 64 * 1024
PULL_WORKERS = 16  # payloads fetched side by side: one slow miner holds one worker, not the round
MIN_PEER_BYTES_PER_S = 1_000_000  # a payload's deadline: 5 s plus its cap at this rate


def _aggregators(spec: CollabSpec, mg: Metagraph, skip: str | None) -> list[Neuron]:
    """The spec's aggregators that serve an endpoint, by uid (not ``skip``: the caller itself)."""
    hotkeys = aggregator_hotkeys(spec, mg.owner_hotkey) - {skip}
    return [n for n in mg.neurons if n.hotkey in hotkeys and n.endpoint is not None]


def aggregator_endpoints(spec: CollabSpec, mg: Metagraph, skip: str | None = None) -> list[str]:
    return [n.endpoint.url for n in _aggregators(spec, mg, skip)]


def pull_published(
    spec: CollabSpec,
    mg: Metagraph,
    documents: DocumentStore,
    limits: PeerLimits = PeerLimits(),
    *,
    skip: str | None = None,
) -> list[str]:
    """Copy each serving aggregator's newest pointer and anchored bundle into ``documents``;
    why any could not be copied (one line each: the caller logs them, nothing is raised)."""
    notes: list[str] = []
    for neuron in _aggregators(spec, mg, skip):
        url = neuron.endpoint.url
        try:
            pointer = CheckpointPointer.parse(
                http_get(f"{url}{POINTERS_PATH}/{spec.key}", MAX_POINTER_BYTES, limits)
            )
            if pointer.aggregator != neuron.hotkey or pointer.competition != spec.key:
                raise AuthError("a pointer signed by another hotkey or for another competition")
            if not documents.has(POINTER_KIND, pointer.pointer_id):
                publish_pointer(documents, pointer)
        except (StoreError, AuthError) as exc:
            notes.append(f"uid {neuron.uid} pointer: {exc.code}: {exc.message}"[:300])
        notes += _pull_anchored_bundle(neuron, documents, limits)
    return notes


def _pull_anchored_bundle(
    neuron: Neuron, documents: DocumentStore, limits: PeerLimits
) -> list[str]:
    bundle_id = parse_anchor(neuron.commitment.data if neuron.commitment else None)
    if bundle_id is None or documents.has(BUNDLES, bundle_id):
        return []
    url = f"{neuron.endpoint.url}{BUNDLES_PATH}/{bundle_id}"
    try:
        raw = http_get(url, MAX_DOCUMENT_BYTES, limits)
    except StoreError as exc:
        return [f"uid {neuron.uid} bundle: {exc.code}: {exc.message}"[:300]]
    if signed_bundle(raw, bundle_id, neuron.hotkey) is None:
        return [f"uid {neuron.uid} bundle: not the anchored bundle signed by its hotkey"]
    documents.put(BUNDLES, bundle_id, raw)
    return []


def pull_from_any(
    store: LocalStore,
    endpoint_urls: list[str],
    digest: str,
    file_name: str,
    max_bytes: int,
    limits: PeerLimits = PeerLimits(),
) -> list[str]:
    """Copy object ``digest`` into ``store`` from the first endpoint that serves it; [] when it
    is held (already, or now), else why each endpoint failed."""
    if store.exists(store.ref, digest):
        return []
    tried: list[str] = []
    for url in endpoint_urls:
        try:
            pull_object(url, digest, file_name, store, max_bytes=max_bytes, limits=limits)
            return []
        except StoreError as exc:
            tried.append(f"{url}: {exc.code}: {exc.message}"[:200])
    return tried


def pull_checkpoint(
    spec: CollabSpec,
    mg: Metagraph,
    store: LocalStore,
    checkpoint: str,
    shapes: dict[str, tuple[int, ...]],
    limits: PeerLimits = PeerLimits(),
    *,
    skip: str | None = None,
) -> None:
    """Make sure ``store`` holds checkpoint ``checkpoint``: from the first serving aggregator
    that has it. Nothing to do when it is there or no aggregator serves an endpoint (the store
    is shared, or there is nobody to ask); ``ModelUnavailable`` when every one failed."""
    urls = aggregator_endpoints(spec, mg, skip)
    tried = pull_from_any(
        store, urls, checkpoint, CHECKPOINT_FILE, max_checkpoint_bytes(shapes), limits
    )
    if tried:
        raise ModelUnavailable(
            f"checkpoint {checkpoint[:16]}… is on none of the aggregators' endpoints: "
            + "; ".join(tried)
        )


def payload_limits(max_bytes: int) -> PeerLimits:
    """How long a miner may take to serve a payload of at most ``max_bytes``: an honest one
    answers a 32 KB payload in milliseconds; a silent or trickling one holds a worker ≈ 10 s."""
    return PeerLimits(timeout_s=5.0, deadline_s=5.0 + max_bytes / MIN_PEER_BYTES_PER_S)


@dataclass(frozen=True)
class PayloadPull:
    uid: int
    endpoint_url: str | None  # the committing neuron's, from the chain
    content_hash: str


def pull_payloads(
    store: LocalStore,
    pulls: list[PayloadPull],
    max_bytes: int,
    limits: PeerLimits = PeerLimits(),
    fallback_urls: list[str] | None = None,
) -> dict[int, str]:
    """Copy each committed payload ``store`` lacks from its miner's endpoint, side by side, or
    failing that from one of ``fallback_urls`` (the aggregators', which serve what they copied);
    uid → why its payload could not be had (the miner's doing: a missing endpoint, an error, a
    wrong hash, too many bytes, too slow)."""

    def one(pull: PayloadPull) -> tuple[int, str | None]:
        if store.exists(store.ref, pull.content_hash):
            return pull.uid, None
        if pull.endpoint_url is None:
            return pull.uid, "not_found: not in this validator's store, and no endpoint on chain"
        try:
            pull_object(pull.endpoint_url, pull.content_hash, PAYLOAD_FILE, store,
                        max_bytes=max_bytes, limits=limits)  # fmt: skip
        except StoreError as exc:
            return pull.uid, f"{exc.code}: from its endpoint: {exc.message}"[:200]
        except Exception as exc:  # noqa: BLE001 — one miner's answer never stops the round
            log.exception("uid %d: unexpected error copying its payload", pull.uid)
            return pull.uid, f"validator_error: copying it: {type(exc).__name__}"
        return pull.uid, None

    def with_fallback(pull: PayloadPull) -> tuple[int, str | None]:
        uid, why = one(pull)
        if why is not None and fallback_urls:
            if not pull_from_any(
                store, fallback_urls, pull.content_hash, PAYLOAD_FILE, max_bytes, limits
            ):
                return uid, None
        return uid, why

    if not pulls:
        return {}
    with ThreadPoolExecutor(max_workers=min(PULL_WORKERS, len(pulls))) as pool:
        results = list(pool.map(with_fallback, pulls))
    return {uid: why for uid, why in results if why is not None}
