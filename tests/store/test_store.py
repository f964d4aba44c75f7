"""The local content-addressed store and the content hash; the Hub store's offline behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.build import tiny_model
from models.io import save_model_dir
from protocol.errors import StoreError
from store.hashing import content_hash
from store.hf import HuggingFaceStore
from store.local import LocalStore


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_model_dir(tiny_model(), tmp_path / "model")


def test_put_then_get_round_trips_and_verifies(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stored = store.put(model_dir)
    assert stored.revision == content_hash(model_dir) and store.exists("local", stored.revision)
    fetched = store.get("local", stored.revision, tmp_path / "cache")
    assert content_hash(fetched) == stored.revision
    assert store.put(model_dir) == stored  # idempotent


def test_content_hash_ignores_where_the_directory_is(tmp_path: Path, model_dir: Path) -> None:
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for f in model_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert content_hash(copy) == content_hash(model_dir)
    (copy / "config.json").write_text("{}")
    assert content_hash(copy) != content_hash(model_dir)


def test_tampered_object_is_caught_and_leaves_nothing(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stored = store.put(model_dir)
    (store.objects / stored.revision / "config.json").write_text('{"evil": 1}')
    with pytest.raises(StoreError) as err:
        store.get("local", stored.revision, tmp_path / "cache")
    assert err.value.code == "hash_mismatch"
    assert not any((tmp_path / "cache").iterdir())


def test_pickle_and_oversized_models_are_refused(tmp_path: Path, model_dir: Path) -> None:
    (model_dir / "weights.pt").write_bytes(b"x")
    with pytest.raises(StoreError) as err:
        LocalStore(tmp_path / "a").put(model_dir)
    assert err.value.code == "pickle_refused"
    (model_dir / "weights.pt").unlink()
    with pytest.raises(StoreError) as err:
        LocalStore(tmp_path / "b", max_bytes=10).put(model_dir)
    assert err.value.code == "too_large"


def test_symlinks_are_refused(tmp_path: Path, model_dir: Path) -> None:
    os.symlink("/etc/passwd", model_dir / "leak")
    with pytest.raises(StoreError) as err:
        content_hash(model_dir)
    assert err.value.code == "symlink_refused"


def test_leftovers_of_a_killed_put_do_not_break_the_next(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (store.objects / ".incoming-deadbeef").mkdir(parents=True)
    (store.objects / ".incoming-deadbeef" / "half").write_bytes(b"partial")
    stored = store.put(model_dir)
    assert content_hash(store.objects / stored.revision) == stored.revision


def test_unknown_revision_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as err:
        LocalStore(tmp_path).get("local", "ab" * 32, tmp_path / "cache")
    assert err.value.code == "not_found"


def test_hub_store_fails_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(StoreError):
        HuggingFaceStore("owner/model", retries=0).get("owner/model", "abc1234", tmp_path / "dl")
    with pytest.raises(StoreError, match="owner/name"):
        HuggingFaceStore("not-a-repo")
