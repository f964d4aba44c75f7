"""What every ``ModelStore`` promises about ``get``, run against each implementation: the local
store, and the Hub store against the 127.0.0.1 fake Hub serving the same files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants
import pytest

from crucible.protocol.errors import StoreError
from crucible.store.base import ModelStore
from crucible.store.hashing import content_hash
from crucible.store.hf import HuggingFaceStore
from crucible.store.local import LocalStore
from tests.store.conftest import CAP
from tests.store.fakehub import SHA, FakeHub


@dataclass(frozen=True)
class Published:
    store: ModelStore
    ref: str
    revision: str
    size_bytes: int
    digest: str


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


@pytest.fixture(params=["local", "hub"])
def published(
    request: pytest.FixtureRequest,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Published]:
    size, digest = _size(model_dir), content_hash(model_dir)
    if request.param == "local":
        store = LocalStore(tmp_path / "store")
        stored = store.put(model_dir)
        yield Published(store, "local", stored.revision, size, digest)
        return
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub = FakeHub.serving(model_dir)
    try:
        store = HuggingFaceStore("owner/model", endpoint=hub.url, retries=0)
        yield Published(store, "owner/model", SHA, size, digest)
    finally:
        hub.close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_get_materialises_exactly_the_published_files(published: Published, tmp_path: Path) -> None:
    p = published
    path = p.store.get(p.ref, p.revision, tmp_path / "cache", max_bytes=p.size_bytes)
    assert path == tmp_path / "cache" / p.revision and content_hash(path) == p.digest
    assert _leftovers(tmp_path / "cache") == [p.revision]  # no temp dir left beside it
    again = p.store.get(p.ref, p.revision, tmp_path / "cache", max_bytes=p.size_bytes)
    assert again == path and content_hash(again) == p.digest


def test_an_object_over_the_cap_is_refused_and_nothing_is_left(
    published: Published, tmp_path: Path
) -> None:
    p = published
    with pytest.raises(StoreError, match=f"at most {p.size_bytes - 1} allowed") as err:
        p.store.get(p.ref, p.revision, tmp_path / "cache", max_bytes=p.size_bytes - 1)
    assert err.value.code == "too_large" and _leftovers(tmp_path / "cache") == []


def test_a_cached_copy_is_held_to_the_cap_too(published: Published, tmp_path: Path) -> None:
    p = published
    p.store.get(p.ref, p.revision, tmp_path / "cache", max_bytes=p.size_bytes)
    with pytest.raises(StoreError) as err:
        p.store.get(p.ref, p.revision, tmp_path / "cache", max_bytes=p.size_bytes - 1)
    assert err.value.code == "too_large"


def test_a_file_outside_the_allowed_names_is_refused(published: Published, tmp_path: Path) -> None:
    p = published
    allowed = {"config.json", "model.safetensors"}  # not sub/adapter.safetensors
    with pytest.raises(StoreError, match="sub/adapter.safetensors is not part of a model") as err:
        p.store.get(p.ref, p.revision, tmp_path / "cache", max_bytes=CAP, allowed_files=allowed)
    assert err.value.code == "unexpected_file" and _leftovers(tmp_path / "cache") == []


def test_an_unknown_revision_is_not_found(published: Published, tmp_path: Path) -> None:
    p = published
    with pytest.raises(StoreError) as err:
        p.store.get(
            p.ref, "0" * 64 if p.ref == "local" else "0" * 40, tmp_path / "c", max_bytes=CAP
        )
    assert err.value.code == "not_found"
