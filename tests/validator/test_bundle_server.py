"""The public bundle endpoint and the store behind it: keyless reads, bounded, rate-limited."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from crucible.protocol.anchor import anchor_text, parse_anchor
from crucible.protocol.errors import ConfigError, StoreError
from crucible.server import run_in_thread
from crucible.server.objects import ClientLimit
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
        build_bundle_server(store, lambda: latest["id"], limit=ClientLimit(100, 100))
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
        build_bundle_server(store, lambda: None, limit=ClientLimit(0.01, 3))
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


@pytest.mark.parametrize(
    ("rate", "burst", "phrase"),
    [
        (0.0, 20, "must be in (0, 1e6]"),
        (-5.0, 20, "must be in (0, 1e6]"),
        (1e9, 20, "must be in (0, 1e6]"),
        (float("nan"), 20, "must be a number"),
        (float("inf"), 20, "must be a number"),
        ("5", 20, "must be a number"),
        (True, 20, "must be a number"),
        (5.0, 0, "burst must be an integer in [1, 1e6]"),
        (5.0, 10**7, "burst must be an integer in [1, 1e6]"),
        (5.0, True, "burst must be an integer in [1, 1e6]"),
        (5.0, 2.5, "burst must be an integer in [1, 1e6]"),
    ],
)
def test_an_absurd_client_allowance_is_refused(rate, burst, phrase: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        ClientLimit(rate, burst)


def test_the_validator_cli_refuses_an_absurd_endpoint_rate_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from crucible.neurons.validator import main

    argv = ["run", "--chain-endpoint", "http://127.0.0.1:9", "--work-dir", str(tmp_path / "w")]
    assert main([*argv, "--endpoint-rate", "0"]) == ConfigError("x").exit_code
    assert "error [config_error]: a client's request rate must be in (0, 1e6]" in capsys.readouterr().err  # fmt: skip
    assert main([*argv, "--endpoint-burst", "0"]) == ConfigError("x").exit_code
    assert "burst must be an integer in [1, 1e6], got 0" in capsys.readouterr().err
