"""A hostile or lying store costs the validator a bounded download and blames no miner wrongly.

Found by attack: the Hub store downloaded the whole repo before any size check. Now the repo's
files and sizes are listed at the pinned commit first (refused unread when over the
competition's cap or unexpected), and each file is streamed with a byte counter that cuts the
connection past its declared size: a lying server (or a man in the middle) costs at most one
chunk beyond the declared bytes, and is nobody's rejection (``ModelUnavailable``, transient).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from crucible.competitions import specs_dir
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.fetch import fetch_and_verify
from crucible.models.io import save_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import ModelRejected, ModelUnavailable
from crucible.store.hashing import content_hash
from crucible.store.hf import HuggingFaceStore
from tests.conftest import keypair
from tests.store.fakehub import SHA, FakeHub

SPEC = load_competitions(specs_dir())["tiny"]
HOTKEY = keypair("hub-miner").ss58_address
EXTRA = 512 * 1024**2  # what the lying server tries to push beyond the declared size


@pytest.fixture(autouse=True)
def _online_to_loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    shape = ModelShape(layers=1, hidden=32, heads=2, ffn=64)
    return save_model_dir(build_model(build_config(shape)), tmp_path / "model")


@pytest.fixture
def hubs() -> Iterator[list[FakeHub]]:
    started: list[FakeHub] = []
    yield started
    for hub in started:
        hub.close()


def _fetch(hub: FakeHub, model_dir: Path, cache: Path) -> object:
    raw = str(
        ModelCommitment.for_model(SPEC.key, "owner/model", SHA, content_hash(model_dir), HOTKEY)
    )
    store = HuggingFaceStore("owner/model", endpoint=hub.url, retries=0)
    return fetch_and_verify(raw, HOTKEY, {SPEC.id: SPEC}, lambda ref: store, cache, backoff_s=0)


def test_a_server_sending_more_than_it_declared_is_cut_off_and_blames_nobody(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    """No Content-Length: the body would only end when the server closes the connection."""
    hub = FakeHub.serving(model_dir, extra_bytes=EXTRA, content_length=False)
    cache = tmp_path / "cache"
    try:
        with pytest.raises(ModelUnavailable, match="download cut off") as err:
            _fetch(hub, model_dir, cache)
    finally:
        hub.close()  # waits for the server's writers
    assert err.value.transient and not isinstance(err.value, ModelRejected)
    assert list(cache.iterdir()) == []  # no partial download left behind
    assert hub.downloads and max(hub.sent.values()) < EXTRA  # the client hung up early


def test_a_gzip_bomb_is_cut_off_at_the_declared_size(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    """Under a MiB on the wire that inflates to 128 MiB: the counter counts what inflates."""
    hubs.append(FakeHub.serving(model_dir, extra_bytes=128 * 1024**2, gzip_bomb=True))
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable, match="download cut off") as err:
        _fetch(hubs[0], model_dir, cache)
    assert err.value.transient and list(cache.iterdir()) == []


def test_the_same_honest_hub_serves_the_model(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    hubs.append(FakeHub.serving(model_dir))
    assert _fetch(hubs[0], model_dir, tmp_path / "cache").content_hash == content_hash(model_dir)


def test_a_repo_declaring_more_than_the_competition_allows_is_refused_unread(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    hubs.append(FakeHub.serving(model_dir, declared={"model.safetensors": 50 * 1024**3}))
    with pytest.raises(ModelRejected, match="nothing was downloaded") as err:
        _fetch(hubs[0], model_dir, tmp_path / "cache")
    assert err.value.reason == "too_large" and hubs[0].downloads == []
