"""The Hub store, without the Hub: construction, the fail-fast offline path, and the retry and
error policy against a scripted Hub-like HTTP server on 127.0.0.1 (no upload or download: this
machine cannot reach huggingface.co, so put/get against a real Hub are untested here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from crucible.protocol.errors import StoreError
from crucible.store.base import ModelStore
from crucible.store.hf import HuggingFaceStore


def test_construction_checks_the_repo_id() -> None:
    store = HuggingFaceStore("owner/model", token="hf_x", retries=5, backoff_s=0.5)
    assert isinstance(store, ModelStore)
    assert (store.repo_id, store.token, store.retries, store.backoff_s) == (
        "owner/model", "hf_x", 5, 0.5,
    )  # fmt: skip
    for bad in ("not-a-repo", "", "a/b/c", "../x"):
        with pytest.raises(StoreError, match="owner/name") as err:
            HuggingFaceStore(bad)
        assert err.value.code == "bad_ref"


def test_get_fails_fast_offline(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    sleeps: list[float] = []
    store = HuggingFaceStore("owner/model", retries=3, backoff_s=5.0, sleep=sleeps.append)
    for call in (
        lambda: store.get("owner/model", "abc1234", tmp_path / "dl"),
        lambda: store.put(model_dir),
        lambda: store.exists("owner/model", "abc1234"),
    ):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.code == "offline"
    assert sleeps == []  # offline is not transient: no retry, no backoff
    assert not (tmp_path / "dl").exists() or list((tmp_path / "dl").iterdir()) == []


def test_get_refuses_bad_revisions(tmp_path: Path) -> None:
    store = HuggingFaceStore("owner/model", retries=0)
    with pytest.raises(StoreError) as err:
        store.get("owner/model", "../../x", tmp_path / "dl")
    assert err.value.code == "bad_ref"


class FakeHub:
    """A Hub-like server answering model-info requests with a scripted list of HTTP statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.paths = list(statuses), []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hub.paths.append(self.path)
                status = hub.statuses.pop(0) if hub.statuses else 200
                body = {"id": "owner/model", "sha": "a" * 40} if status == 200 else {"error": "x"}
                raw = json.dumps(body).encode()
                self.send_response(status)
                if status == 404:
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Lift offline mode for one test; every request goes to the 127.0.0.1 fake only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub() -> Iterator[Callable[[list[int]], FakeHub]]:
    hubs: list[FakeHub] = []

    def make(statuses: list[int]) -> FakeHub:
        hubs.append(FakeHub(statuses))
        return hubs[-1]

    yield make
    for hub in hubs:
        hub.close()


def _store(hub: FakeHub, sleeps: list[float], retries: int = 3) -> HuggingFaceStore:
    return HuggingFaceStore(
        "owner/model", endpoint=hub.url, retries=retries, backoff_s=0.5, sleep=sleeps.append
    )


@pytest.mark.usefixtures("online")
def test_transient_errors_are_retried_with_doubling_backoff(
    fake_hub: Callable[[list[int]], FakeHub],
) -> None:
    hub, sleeps = fake_hub([503, 429, 200]), []
    assert _store(hub, sleeps).exists("owner/model", "abc1234") is True
    assert len(hub.paths) == 3 and sleeps == [0.5, 1.0]
    assert hub.paths[0] == "/api/models/owner/model/revision/abc1234"


@pytest.mark.usefixtures("online")
def test_persistent_outage_gives_up_with_a_store_error(
    fake_hub: Callable[[list[int]], FakeHub],
) -> None:
    hub, sleeps = fake_hub([502] * 10), []
    with pytest.raises(StoreError, match="after 3 tries") as err:
        _store(hub, sleeps, retries=2).exists("owner/model", "abc1234")
    assert err.value.code == "hub_error" and len(hub.paths) == 3 and sleeps == [0.5, 1.0]


@pytest.mark.usefixtures("online")
def test_missing_repo_and_refused_token_fail_at_once(
    fake_hub: Callable[[list[int]], FakeHub],
) -> None:
    hub, sleeps = fake_hub([404]), []
    assert _store(hub, sleeps).exists("owner/model", "abc1234") is False
    hub = fake_hub([401])
    with pytest.raises(StoreError) as err:
        _store(hub, sleeps).exists("owner/model", "abc1234")
    assert err.value.code == "hub_refused" and len(hub.paths) == 1 and sleeps == []
