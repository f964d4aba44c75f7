"""The Hub store, without the Hub: construction, the fail-fast offline path, the retry and error
policy, and capped downloads (sizes listed first, bytes counted while streaming, a server that
lies) against a Hub-like HTTP server on 127.0.0.1 (``tests/store/fakehub.py``). This machine
cannot reach huggingface.co, so put against a real Hub is untested here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crucible.protocol.errors import StoreError
from crucible.store.base import ModelStore
from crucible.store.hashing import content_hash
from crucible.store.hf import HuggingFaceStore, plan_download
from tests.store.conftest import CAP
from tests.store.fakehub import SHA, FakeHub


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
        lambda: store.get("owner/model", "abc1234", tmp_path / "dl", max_bytes=CAP),
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
        store.get("owner/model", "../../x", tmp_path / "dl", max_bytes=CAP)
    assert err.value.code == "bad_ref"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Lift offline mode for one test; every request goes to the 127.0.0.1 fake only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub() -> Iterator[Callable[..., FakeHub]]:
    hubs: list[FakeHub] = []

    def make(statuses: list[int] | None = None, **kwargs: object) -> FakeHub:
        hubs.append(FakeHub(statuses, **kwargs))
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
    fake_hub: Callable[..., FakeHub],
) -> None:
    hub, sleeps = fake_hub([503, 429, 200]), []
    assert _store(hub, sleeps).exists("owner/model", "abc1234") is True
    assert len(hub.paths) == 3 and sleeps == [0.5, 1.0]
    assert hub.paths[0] == "/api/models/owner/model/revision/abc1234"


@pytest.mark.usefixtures("online")
def test_persistent_outage_gives_up_with_a_store_error(
    fake_hub: Callable[..., FakeHub],
) -> None:
    hub, sleeps = fake_hub([502] * 10), []
    with pytest.raises(StoreError, match="after 3 tries") as err:
        _store(hub, sleeps, retries=2).exists("owner/model", "abc1234")
    assert err.value.code == "hub_error" and len(hub.paths) == 3 and sleeps == [0.5, 1.0]


@pytest.mark.usefixtures("online")
def test_missing_repo_and_refused_token_fail_at_once(
    fake_hub: Callable[..., FakeHub],
) -> None:
    hub, sleeps = fake_hub([404]), []
    assert _store(hub, sleeps).exists("owner/model", "abc1234") is False
    for status, code in ((401, "hub_auth"), (403, "hub_refused")):
        hub = fake_hub([status])
        with pytest.raises(StoreError, match=f"HTTP {status}") as err:
            _store(hub, sleeps).exists("owner/model", "abc1234")
        assert err.value.code == code and len(hub.paths) == 1 and sleeps == []


# ---- get: capped before and while downloading ------------------------------------------------


@pytest.mark.usefixtures("online")
def test_get_downloads_the_listed_files_of_the_pinned_commit(
    fake_hub: Callable[..., FakeHub], model_dir: Path, tmp_path: Path
) -> None:
    hub = FakeHub.serving(model_dir)
    try:
        sleeps: list[float] = []
        store = _store(hub, sleeps)
        path, digest = store.fetch("owner/model", SHA[:12], tmp_path / "dl", max_bytes=CAP)
    finally:
        hub.close()
    assert path == tmp_path / "dl" / SHA[:12] and digest == content_hash(model_dir)
    assert sorted(hub.downloads) == ["config.json", "model.safetensors", "sub/adapter.safetensors"]
    assert all(f"/resolve/{SHA}/" in p for p in hub.paths[1:])  # the full sha the listing named
    assert hub.paths[0].startswith(f"/api/models/owner/model/revision/{SHA[:12]}?blobs=")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [SHA[:12]] and sleeps == []


@pytest.mark.usefixtures("online")
def test_a_model_declared_over_the_cap_downloads_nothing(
    fake_hub: Callable[..., FakeHub], model_dir: Path, tmp_path: Path
) -> None:
    hub = fake_hub(files={"config.json": b"{}"}, declared={"model.safetensors": 50 * 1024**3})
    with pytest.raises(StoreError, match="nothing was downloaded") as err:
        _store(hub, []).get("owner/model", SHA, tmp_path / "dl", max_bytes=CAP)
    assert err.value.code == "too_large"
    assert hub.downloads == [] and list((tmp_path / "dl").glob("*")) == []


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("pytorch_model.bin", "pickle_refused"),
        ("evil.py", "unexpected_file"),
        ("../../outside.safetensors", "bad_file"),
        ("/etc/passwd", "bad_file"),
        ("sub/../config.json", "bad_file"),
    ],
)
def test_unexpected_or_escaping_files_download_nothing(
    fake_hub: Callable[..., FakeHub], tmp_path: Path, name: str, code: str
) -> None:
    hub = fake_hub(files={"config.json": b"{}", name: b"x"})
    allowed = {"config.json", "model.safetensors"}
    with pytest.raises(StoreError) as err:
        _store(hub, []).get(
            "owner/model", SHA, tmp_path / "dl", max_bytes=CAP, allowed_files=allowed
        )
    assert err.value.code == code and hub.downloads == []
    assert not (tmp_path / "outside.safetensors").exists()


@pytest.mark.usefixtures("online")
def test_a_listing_for_another_commit_is_refused(
    fake_hub: Callable[..., FakeHub], tmp_path: Path
) -> None:
    hub = fake_hub(files={"config.json": b"{}"}, sha="f" * 40, answer_any_revision=True)
    with pytest.raises(StoreError, match="listed commit") as err:
        _store(hub, []).get("owner/model", SHA, tmp_path / "dl", max_bytes=CAP)
    assert err.value.code == "hub_error" and hub.downloads == []


@pytest.mark.usefixtures("online")
def test_a_server_sending_more_than_it_declared_is_cut_off_while_streaming(
    fake_hub: Callable[..., FakeHub], tmp_path: Path
) -> None:
    """No Content-Length: only the byte counter can see that 256 MiB follow a 4-byte file."""
    extra = 256 * 1024**2
    hub = fake_hub(files={"config.json": b"{}\n\n"}, extra_bytes=extra, content_length=False)
    sleeps: list[float] = []
    with pytest.raises(StoreError, match="declared 4 bytes but sent at least") as err:
        _store(hub, sleeps).get("owner/model", SHA, tmp_path / "dl", max_bytes=CAP)
    assert err.value.code == "size_mismatch" and sleeps == []  # not retried
    assert list((tmp_path / "dl").glob("*")) == [] and list((tmp_path / "dl").glob(".*")) == []
    hub.close()  # waits for the server's writer: it stopped when the client hung up
    assert hub.sent["config.json"] < extra


@pytest.mark.usefixtures("online")
def test_a_content_length_over_the_declared_size_is_refused_unread(
    fake_hub: Callable[..., FakeHub], tmp_path: Path
) -> None:
    hub = fake_hub(files={"config.json": b"{}"}, extra_bytes=64 * 1024**2)
    with pytest.raises(StoreError, match="announces 67108866") as err:
        _store(hub, []).get("owner/model", SHA, tmp_path / "dl", max_bytes=CAP)
    assert err.value.code == "size_mismatch"
    assert list((tmp_path / "dl").glob(".*")) == []


@pytest.mark.usefixtures("online")
def test_a_transient_download_error_is_retried(
    fake_hub: Callable[..., FakeHub], model_dir: Path, tmp_path: Path
) -> None:
    hub = FakeHub.serving(model_dir, download_statuses=[503])
    sleeps: list[float] = []
    try:
        path = _store(hub, sleeps).get("owner/model", SHA, tmp_path / "dl", max_bytes=CAP)
    finally:
        hub.close()
    assert content_hash(path) == content_hash(model_dir) and sleeps == [0.5]


_SIBLING = st.fixed_dictionaries(
    {
        "rfilename": st.sampled_from(["config.json", "model.safetensors", ".gitattributes"])
        | st.text(max_size=12),
        "size": st.none() | st.booleans() | st.integers(-5, 2**64) | st.text(max_size=3),
    }
)


@settings(max_examples=150, deadline=None)
@example(
    sha=SHA[:12], siblings=[{"rfilename": "config.json", "size": 0}], max_bytes=0
)  # a short sha is no pin
@given(
    sha=st.sampled_from([SHA, SHA[:12], "f" * 40, None, 7, ""]),
    siblings=st.none() | st.lists(_SIBLING, max_size=6),
    max_bytes=st.integers(0, 10**6),
)
def test_any_hub_listing_is_a_bounded_plan_or_a_store_error(
    sha: object, siblings: list[dict] | None, max_bytes: int
) -> None:
    from huggingface_hub.hf_api import ModelInfo

    info = ModelInfo(id="owner/model", sha=sha, siblings=siblings)
    allowed = {"config.json", "model.safetensors"}
    try:
        commit, files = plan_download(info, SHA[:12], max_bytes, allowed)
    except StoreError as exc:
        assert exc.code in {
            "hub_error", "bad_file", "pickle_refused", "unexpected_file", "empty_model",
            "too_large",
        }  # fmt: skip
        return
    assert commit == SHA and files and sum(size for _, size in files) <= max_bytes
    assert {name for name, _ in files} <= allowed
