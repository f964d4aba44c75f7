"""The shared model's checkpoints: a content-addressed folder in the model store, and the signed
pointer document that says which checkpoint a round starts from.

A checkpoint folder holds one ``checkpoint.safetensors``: the parameters by name, and the outer
optimizer's momentum under ``outer_momentum.<name>`` when it has one; its store content hash is
the checkpoint's id. Bytes are deterministic (one metadata key: safetensors writes a metadata
*map* in hash order), so two validators that aggregate the same payloads store the same id.

The pointer (``CheckpointPointer``, document kind ``collab-checkpoint``) is signed by the
aggregating validator: competition, the round it opens, the checkpoint id, the previous one and
the bundle that scored the round; named by the sha256 of its unsigned canonical JSON. The bundle
that validator anchors on chain names the same checkpoint id, so a miner that follows the
pointer follows the chain. Loading checks every name and shape against the spec's model before a
tensor is read: nothing is allocated from what a file claims.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from crucible.chain.interface import Metagraph
from crucible.protocol.anchor import parse_anchor
from crucible.protocol.auth import Signer, sign_document, verify_document
from crucible.protocol.collab import CollabSpec
from crucible.protocol.errors import AuthError, PayloadRejected, StoreError
from crucible.store.base import ModelStore
from crucible.store.documents import BUNDLES, DocumentStore
from crucible.store.hashing import content_hash

__all__ = [
    "CHECKPOINT_FILE",
    "aggregator_hotkeys",
    "anchored_checkpoint",
    "checkpoint_id",
    "POINTER_KIND",
    "Checkpoint",
    "CheckpointPointer",
    "latest_pointer",
    "load_checkpoint_dir",
    "publish_pointer",
    "max_checkpoint_bytes",
    "round_checkpoint",
    "signed_bundle",
    "store_checkpoint",
    "write_checkpoint_dir",
]

CHECKPOINT_FILE = "checkpoint.safetensors"
MOMENTUM_PREFIX = "outer_momentum."
POINTER_KIND = "collab-checkpoint"
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    params: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor] | None


def write_checkpoint_dir(
    params: Mapping[str, torch.Tensor],
    momentum: Mapping[str, torch.Tensor] | None,
    directory: Path,
    *,
    competition: str,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: params[name].detach().to("cpu", torch.float32).contiguous() for name in sorted(params)
    }
    for name in sorted(momentum or {}):
        tensors[MOMENTUM_PREFIX + name] = (
            momentum[name].detach().to("cpu", torch.float32).contiguous()
        )
    # no round number inside: checkpoint 0 has one id whichever round a validator first saw
    meta = json.dumps({"competition": competition}, sort_keys=True)
    save_file(tensors, str(directory / CHECKPOINT_FILE), metadata={"crucible": meta})
    return directory


def _header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        declared = int.from_bytes(handle.read(8), "little")
    if declared > min(MAX_HEADER_BYTES, size - 8):
        raise PayloadRejected(f"checkpoint header of {declared} bytes", code="checkpoint_corrupt")
    with safe_open(str(path), framework="pt") as handle:
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
        meta = handle.metadata() or {}
    if dtypes - {"F32"}:
        raise PayloadRejected(
            f"checkpoint dtypes {sorted(dtypes)}; F32 only", code="checkpoint_corrupt"
        )
    info = json.loads(meta.get("crucible", "{}"))
    if not isinstance(info, dict):
        raise PayloadRejected("checkpoint metadata is not a JSON object", code="checkpoint_corrupt")
    return shapes, info


def load_checkpoint_dir(
    directory: Path, shapes: Mapping[str, tuple[int, ...]], *, competition: str
) -> Checkpoint:
    """The checkpoint in ``directory``, refused (``checkpoint_corrupt``) unless its tensors are
    exactly the model's (and optionally their momentum), finite, for ``competition``."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        found, meta = _header(path)
    except (OSError, SafetensorError, ValueError) as exc:
        raise PayloadRejected(f"checkpoint unreadable: {exc}", code="checkpoint_corrupt") from exc
    expected = dict(shapes)
    with_momentum = {**expected, **{MOMENTUM_PREFIX + k: v for k, v in expected.items()}}
    if found != expected and found != with_momentum:
        raise PayloadRejected(
            "checkpoint tensors differ from the spec's model", code="checkpoint_corrupt"
        )
    if meta.get("competition") != competition:
        raise PayloadRejected(f"checkpoint metadata {meta!r}", code="checkpoint_corrupt")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for name in sorted(found):
            tensors[name] = handle.get_tensor(name)
            if not torch.isfinite(tensors[name]).all():
                raise PayloadRejected(f"checkpoint {name} is not finite", code="checkpoint_corrupt")
    params = {k: tensors[k] for k in sorted(expected)}
    momentum = (
        {k: tensors[MOMENTUM_PREFIX + k] for k in sorted(expected)} if found != expected else None
    )
    return Checkpoint(params, momentum)


def max_checkpoint_bytes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The most a checkpoint of these shapes can take: fp32 parameters and momentum, plus the
    largest header a loader reads (what a fetch from anyone else is capped at)."""
    values = sum(math.prod(shape) for shape in shapes.values())
    return 2 * 4 * values + MAX_HEADER_BYTES + 8


def checkpoint_id(params, momentum, *, competition: str) -> str:
    """The id ``store_checkpoint`` would give these tensors, without storing them."""
    with tempfile.TemporaryDirectory(prefix="crucible-ckpt-") as tmp:
        folder = write_checkpoint_dir(params, momentum, Path(tmp) / "ckpt", competition=competition)
        return content_hash(folder)


def store_checkpoint(store: ModelStore, params, momentum, *, competition: str) -> str:
    """Write the checkpoint into ``store``; its id (the content hash)."""
    with tempfile.TemporaryDirectory(prefix="crucible-ckpt-") as tmp:
        folder = write_checkpoint_dir(params, momentum, Path(tmp) / "ckpt", competition=competition)
        return store.put(folder).content_hash


@dataclass(frozen=True)
class CheckpointPointer:
    competition: str
    round_index: int  # the round that starts from ``checkpoint``
    checkpoint: str
    previous: str | None
    aggregator: str  # the hotkey that signed it
    block: int
    signature: str = ""

    def canonical(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def pointer_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def signed(self, signer: Signer) -> CheckpointPointer:
        if signer.ss58_address != self.aggregator:
            raise AuthError("a pointer is signed by the aggregator it names", code="wrong_signer")
        signature = sign_document(signer, POINTER_KIND, self.pointer_id)
        return CheckpointPointer(**{**asdict(self), "signature": signature})

    @classmethod
    def parse(cls, raw: bytes) -> CheckpointPointer:
        """Untrusted bytes → a pointer whose signature verifies (``AuthError`` otherwise)."""
        try:
            data = json.loads(raw)
            pointer = cls(**data)
            ok = all(type(getattr(pointer, f)) is int for f in ("round_index", "block")) and all(
                isinstance(getattr(pointer, f), str)
                for f in ("competition", "checkpoint", "aggregator", "signature")
            )
            ok = ok and (pointer.previous is None or isinstance(pointer.previous, str))
        except (ValueError, TypeError, RecursionError) as exc:
            raise AuthError(f"not a checkpoint pointer: {exc}", code="bad_pointer") from exc
        if not ok:
            raise AuthError("not a checkpoint pointer", code="bad_pointer")
        verify_document(pointer.signature, POINTER_KIND, pointer.pointer_id, pointer.aggregator)
        return pointer

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def publish_pointer(documents: DocumentStore, pointer: CheckpointPointer) -> str:
    documents.put(POINTER_KIND, pointer.pointer_id, pointer.to_bytes())
    return pointer.pointer_id


def latest_pointer(
    documents: DocumentStore, competition: str, aggregators: set[str], scan: int = 64
) -> CheckpointPointer | None:
    """The newest-round pointer for ``competition`` signed by one of ``aggregators``; forged,
    unreadable or foreign documents are skipped."""
    best: CheckpointPointer | None = None
    for pointer in _aggregator_pointers(documents, competition, aggregators, scan):
        if best is None or pointer.round_index > best.round_index:
            best = pointer
    return best


def _aggregator_pointers(
    documents: DocumentStore, competition: str, aggregators: set[str], scan: int
) -> Iterator[CheckpointPointer]:
    """The genuine pointers for ``competition`` by one of ``aggregators`` among the newest
    ``scan`` documents (each stored under its own id, its signature verified)."""
    for digest in documents.newest(POINTER_KIND, scan):
        try:
            pointer = CheckpointPointer.parse(documents.get(POINTER_KIND, digest))
        except (AuthError, StoreError):
            continue
        if (
            pointer.pointer_id == digest
            and pointer.competition == competition
            and pointer.aggregator in aggregators
        ):
            yield pointer


def aggregator_hotkeys(spec: CollabSpec, owner_hotkey: str | None) -> set[str]:
    """The spec's aggregators as hotkeys ("owner": the subnet owner's)."""
    named = {owner_hotkey if a == "owner" else a for a in spec.scoring.aggregators}
    return {a for a in named if a}


def _signed_bundle(documents: DocumentStore, bundle_id: str, signer: str) -> dict | None:
    try:
        return signed_bundle(documents.get(BUNDLES, bundle_id), bundle_id, signer)
    except StoreError:
        return None


def signed_bundle(raw: bytes, bundle_id: str, signer: str) -> dict | None:
    """The bundle ``bundle_id`` as JSON, if its content hashes to that id and ``signer`` signed it."""
    try:
        data = json.loads(raw)
        signature = data.pop("signature")
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        if (
            hashlib.sha256(canonical).hexdigest() != bundle_id
            or data.get("validator_hotkey") != signer
        ):
            return None
        verify_document(signature, "bundle", bundle_id, signer)
    except (AuthError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return data


def _anchored_records(
    mg: Metagraph, documents: DocumentStore, competition: str, aggregators: set[str]
) -> Iterator[tuple[str, int, str]]:
    """Every well-formed collab record of ``competition`` in a bundle an aggregator anchored on
    chain: (its base checkpoint, the round it scored, its next checkpoint)."""
    for neuron in mg.neurons:
        bundle_id = parse_anchor(neuron.commitment.data if neuron.commitment else None)
        if neuron.hotkey not in aggregators or bundle_id is None:
            continue
        records = (_signed_bundle(documents, bundle_id, neuron.hotkey) or {}).get("collab")
        for record in records if isinstance(records, list) else []:
            try:
                found = (str(record["base_checkpoint"]), int(record["round_index"]),
                         str(record["next_checkpoint"]))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                continue
            if record.get("competition") == competition:
                yield found


def anchored_checkpoint(
    mg: Metagraph, documents: DocumentStore, competition: str, aggregators: set[str]
) -> tuple[str, int] | None:
    """(checkpoint id, the round it opens) named by the newest collab round of a bundle an
    aggregator anchored on chain: the checkpoint's hash as the chain holds it."""
    best: tuple[str, int] | None = None
    for _, scored, next_checkpoint in _anchored_records(mg, documents, competition, aggregators):
        if best is None or scored + 1 > best[1]:
            best = (next_checkpoint, scored + 1)
    return best


def round_checkpoint(
    mg: Metagraph,
    documents: DocumentStore,
    competition: str,
    aggregators: set[str],
    round_index: int,
    scan: int = 64,
) -> str | None:
    """The checkpoint round ``round_index`` starts from, as the aggregators published it: the
    bundles they anchored on chain first (a record's base opens its round, its next checkpoint
    the round after), then their signed pointers among the newest ``scan``. This is what the
    round's miners trained from, so a validator that missed rounds or joins late scores from it."""
    for base, scored, next_checkpoint in _anchored_records(mg, documents, competition, aggregators):
        if scored == round_index:
            return base
        if scored + 1 == round_index:
            return next_checkpoint
    pointers = _aggregator_pointers(documents, competition, aggregators, scan)
    return next((p.checkpoint for p in pointers if p.round_index == round_index), None)
