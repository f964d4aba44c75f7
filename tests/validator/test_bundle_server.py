"""The public bundle endpoint and the store behind it: keyless reads, bounded, rate-limited."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from crucible.protocol.anchor import anchor_text, parse_anchor
from crucible.protocol.errors import StoreError
from crucible.server import run_in_thread
from crucible.store.documents import MAX_DOCUMENT_BYTES, DocumentStore
from crucible.validator.bundle_server import build_bundle_server

ID = "ab" * 32


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_endpoint_serves_the_latest_and_by_id_and_refuses_the_rest(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    latest: dict[str, str | None] = {"id": None}
    with run_in_thread(
        build_bundle_server(store, lambda: latest["id"], rate_per_s=100, burst=100)
    ) as server:
        status, body = get(f"{server.url}/v1/bundles/latest")
        assert status == 404 and json.loads(body)["error"]["code"] == "no_bundle"
        store.put("bundles", ID, b'{"signed": true}')
        latest["id"] = ID
        assert get(f"{server.url}/v1/bundles/latest") == (200, b'{"signed": true}')
        assert get(f"{server.url}/v1/bundles/{ID}") == (200, b'{"signed": true}')
        status, body = get(f"{server.url}/v1/bundles/{'cd' * 32}")
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        status, body = get(f"{server.url}/v1/bundles/..%2F..%2Fetc%2Fpasswd")
        assert status in (400, 404) and json.loads(body)["error"]["code"] in (
            "bad_ref",
            "not_found",
        )


def test_a_client_past_its_budget_gets_429(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    with run_in_thread(
        build_bundle_server(store, lambda: None, rate_per_s=0.01, burst=3)
    ) as server:
        statuses = [get(f"{server.url}/health")[0] for _ in range(6)]
    assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {429}


def test_the_store_bounds_names_and_sizes(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    with pytest.raises(StoreError, match="is not a document name"):
        store.put("bundles", "../escape", b"{}")
    with pytest.raises(StoreError, match="a document is at most"):
        store.put("bundles", ID, b"x" * (MAX_DOCUMENT_BYTES + 1))
    with pytest.raises(StoreError, match="no bundles") as info:
        store.get("bundles", ID)
    assert info.value.code == "not_found"


def test_anchors_round_trip_and_refuse_anything_else() -> None:
    assert parse_anchor(anchor_text(ID)) == ID and len(anchor_text(ID)) <= 128
    for other in (
        None,
        "tiny@1:local:abc:def",
        "crucible-bundle@1:" + "zz" * 32,
        "crucible-bundle@1:" + ID + "0",
    ):
        assert parse_anchor(other) is None
    with pytest.raises(ValueError, match="is not a bundle id"):
        anchor_text("nope")
