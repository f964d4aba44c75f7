"""Collab neurons that share no disk copy from each other's endpoints: a validator's bundle server
(pointers, checkpoints, bundles) and miners' payload servers, real HTTP on 127.0.0.1, real
keys, real stores; forged, tampered and hostile answers are refused and nothing of them kept."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from crucible.chain.interface import Commitment, Endpoint, Metagraph, Neuron
from crucible.collab.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointPointer,
    latest_pointer,
    load_checkpoint_dir,
    publish_pointer,
    store_checkpoint,
)
from crucible.collab.payload_store import put_payload
from crucible.collab.peer_sync import PayloadPull, pull_checkpoint, pull_payloads, pull_published
from crucible.collab.shared_model import genesis_params, param_shapes
from crucible.protocol.anchor import anchor_text
from crucible.protocol.auth import sign_document
from crucible.protocol.errors import ModelUnavailable
from crucible.server.objects import build_object_server
from crucible.server.runner import RunningServer, run_in_thread
from crucible.store.documents import BUNDLES, DocumentStore
from crucible.store.local import LocalStore
from crucible.store.peer import PeerLimits
from crucible.validator.bundle_server import build_bundle_server
from tests.collab.world import small_spec
from tests.conftest import TEST_HYPERPARAMETERS, keypair

SPEC = small_spec()
AGGREGATOR = keypair("peer-aggregator")
FAST = PeerLimits(timeout_s=2.0, deadline_s=1.0)


def _neuron(uid: int, hotkey: str, endpoint: str | None, commitment: str | None = None) -> Neuron:
    ip_port = None
    if endpoint is not None:
        host, port = endpoint.removeprefix("http://").rsplit(":", 1)
        ip_port = Endpoint(host, int(port))
    return Neuron(uid, hotkey, "cold", 0, True, uid == 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0, ip_port,
                  None if commitment is None else Commitment(commitment, 1))  # fmt: skip


def _metagraph(*neurons: Neuron) -> Metagraph:
    return Metagraph(1, 100, "0x" + "00" * 32, AGGREGATOR.ss58_address, TEST_HYPERPARAMETERS,
                     tuple(neurons))  # fmt: skip


def _bundle(signer, collab: list[dict]) -> tuple[str, bytes]:
    body = {"validator_hotkey": signer.ss58_address, "collab": collab}
    bundle_id = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    digest = bundle_id.hexdigest()
    return digest, json.dumps(
        {**body, "signature": sign_document(signer, "bundle", digest)}
    ).encode()


@dataclass
class Aggregator:
    """A validator's published state and the bundle server it runs over it."""

    store: LocalStore
    documents: DocumentStore
    server: RunningServer
    checkpoint: str
    pointer: CheckpointPointer
    answer_pointer: list[bytes]  # what the pointer route answers (a test may swap it)


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[Aggregator]:
    store, documents = LocalStore(tmp_path / "agg"), DocumentStore(tmp_path / "agg")
    ckpt = store_checkpoint(store, genesis_params(SPEC), None, competition=SPEC.key)
    pointer = CheckpointPointer(SPEC.key, 3, ckpt, None, AGGREGATOR.ss58_address, 90)
    pointer = pointer.signed(AGGREGATOR)
    publish_pointer(documents, pointer)
    answer = [pointer.to_bytes()]
    app = build_bundle_server(documents, lambda: None, objects=store,
                              latest_pointer=lambda c: answer[0] if c == SPEC.key else None)  # fmt: skip
    with run_in_thread(app) as server:
        yield Aggregator(store, documents, server, ckpt, pointer, answer)


def test_a_miner_on_another_machine_follows_the_aggregators_pointer_and_checkpoint(
    aggregator: Aggregator, tmp_path: Path
) -> None:
    mg = _metagraph(_neuron(0, AGGREGATOR.ss58_address, aggregator.server.url))
    mine, docs = LocalStore(tmp_path / "miner"), DocumentStore(tmp_path / "miner")
    assert pull_published(SPEC, mg, docs) == []
    assert latest_pointer(docs, SPEC.key, {AGGREGATOR.ss58_address}) == aggregator.pointer
    shapes = param_shapes(genesis_params(SPEC))
    pull_checkpoint(SPEC, mg, mine, aggregator.checkpoint, shapes)
    folder = mine.get("local", aggregator.checkpoint, tmp_path / "out", max_bytes=1 << 30,
                      allowed_files={CHECKPOINT_FILE})  # fmt: skip
    got = load_checkpoint_dir(folder, shapes, competition=SPEC.key).params
    assert all(got[k].equal(v) for k, v in genesis_params(SPEC).items())


def test_forged_and_foreign_pointers_are_not_kept(aggregator: Aggregator, tmp_path: Path) -> None:
    mg = _metagraph(_neuron(0, AGGREGATOR.ss58_address, aggregator.server.url))
    docs = DocumentStore(tmp_path / "miner")
    stranger = keypair("peer-stranger")
    theirs = replace(aggregator.pointer, aggregator=stranger.ss58_address, signature="").signed(
        stranger
    )
    tampered = json.loads(aggregator.pointer.to_bytes())
    tampered["checkpoint"] = "ee" * 32  # a checkpoint the aggregator never signed
    for answer, phrase in ((theirs.to_bytes(), "another hotkey"),
                           (json.dumps(tampered).encode(), "signature"), (b"{", "not a checkpoint pointer")):  # fmt: skip
        aggregator.answer_pointer[0] = answer
        notes = pull_published(SPEC, mg, docs)
        assert len(notes) == 1 and phrase in notes[0], notes
    assert latest_pointer(docs, SPEC.key, {AGGREGATOR.ss58_address, stranger.ss58_address}) is None


def test_only_the_bundle_the_aggregator_anchored_and_signed_is_kept(
    aggregator: Aggregator, tmp_path: Path
) -> None:
    record = {"competition": SPEC.key, "round_index": 2, "base_checkpoint": "aa" * 32,
              "next_checkpoint": aggregator.checkpoint}  # fmt: skip
    good_id, good = _bundle(AGGREGATOR, [record])
    forged_id, forged = _bundle(keypair("peer-forger"), [record])
    aggregator.documents.put(BUNDLES, good_id, good)
    aggregator.documents.put(BUNDLES, forged_id, forged)  # served, but signed by someone else
    docs = DocumentStore(tmp_path / "miner")
    for bundle_id, kept in ((forged_id, False), (good_id, True)):
        mg = _metagraph(
            _neuron(0, AGGREGATOR.ss58_address, aggregator.server.url, anchor_text(bundle_id))
        )
        notes = pull_published(SPEC, mg, docs)
        assert docs.has(BUNDLES, bundle_id) is kept
        assert bool(notes) is not kept and all("not the anchored bundle" in n for n in notes)


def test_a_checkpoint_no_aggregator_can_serve_is_unavailable_not_anyones_fault(
    aggregator: Aggregator, tmp_path: Path
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    mg = _metagraph(_neuron(0, AGGREGATOR.ss58_address, f"http://127.0.0.1:{port}"))
    mine = LocalStore(tmp_path / "miner")
    shapes = param_shapes(genesis_params(SPEC))
    with pytest.raises(ModelUnavailable, match="none of the aggregators") as err:
        pull_checkpoint(SPEC, mg, mine, aggregator.checkpoint, shapes, FAST)
    assert err.value.transient and not mine.exists("local", aggregator.checkpoint)
    no_endpoint = _metagraph(_neuron(0, AGGREGATOR.ss58_address, None))
    pull_checkpoint(SPEC, no_endpoint, mine, aggregator.checkpoint, shapes)  # a shared disk: no-op


def _trickler() -> tuple[str, threading.Event]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def run() -> None:
        conn, _ = sock.accept()
        with conn, sock:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.wait(0.05):
                    conn.sendall(b"x")
            except OSError:  # the reader hung up at its deadline
                pass

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def test_each_miners_payload_is_copied_or_refused_on_its_own(tmp_path: Path) -> None:
    honest_store, liar_store = LocalStore(tmp_path / "honest"), LocalStore(tmp_path / "liar")
    honest = put_payload(honest_store, b"honest payload bytes")
    lie = put_payload(liar_store, b"the committed bytes")
    (liar_store.objects / lie / "payload.safetensors").write_bytes(b"other bytes")
    slow_url, stop = _trickler()
    mine = LocalStore(tmp_path / "validator")
    with (
        run_in_thread(build_object_server(honest_store, {"payload.safetensors"})) as h,
        run_in_thread(build_object_server(liar_store, {"payload.safetensors"})) as liar,
    ):
        pulls = [PayloadPull(1, h.url, honest), PayloadPull(2, liar.url, lie),
                 PayloadPull(3, None, "cd" * 32), PayloadPull(4, slow_url, "ef" * 32),
                 PayloadPull(5, h.url, "ab" * 32)]  # fmt: skip
        started = time.monotonic()
        why = pull_payloads(mine, pulls, max_bytes=1 << 20, limits=FAST)
        took = time.monotonic() - started
    stop.set()
    assert set(why) == {2, 3, 4, 5} and mine.exists("local", honest)
    assert why[2].startswith("hash_mismatch") and why[3].startswith("not_found")
    assert why[4].startswith("peer_slow") and why[5].startswith("not_found")
    assert not mine.exists("local", lie)
    assert took < FAST.deadline_s + FAST.timeout_s + 1.0  # the slow one held one worker, alone


def test_a_payload_its_miner_does_not_serve_is_copied_from_the_aggregators_copy(
    aggregator: Aggregator, tmp_path: Path
) -> None:
    kept = put_payload(aggregator.store, b"a payload the aggregator copied in time")
    forged = put_payload(aggregator.store, b"what the aggregator was given")
    (aggregator.store.objects / forged / "payload.safetensors").write_bytes(b"tampered")
    mine = LocalStore(tmp_path / "validator")
    pulls = [PayloadPull(1, None, kept), PayloadPull(2, None, forged)]
    why = pull_payloads(mine, pulls, 1 << 20, FAST, fallback_urls=[aggregator.server.url])
    assert mine.exists("local", kept) and not mine.exists("local", forged)
    assert set(why) == {2} and why[2].startswith("not_found")  # the miner's own failure, kept
