"""The local content-addressed store: round trip, idempotence, refusals, tampering, crashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crucible.protocol.errors import StoreError
from crucible.store.base import ModelStore, StoredModel
from crucible.store.hashing import content_hash
from crucible.store.local import LocalStore
from tests.store.conftest import CAP, write_model


def test_put_then_get_round_trips_real_safetensors(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert isinstance(store, ModelStore)
    stored = store.put(model_dir)
    digest = content_hash(model_dir)
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert stored == StoredModel("local", digest, digest, size)
    assert store.exists("local", digest)
    assert not store.exists("local", "0" * 64) and not store.exists("hf/x", digest)
    fetched = store.get("local", digest, tmp_path / "cache", max_bytes=CAP)
    assert fetched == tmp_path / "cache" / digest and content_hash(fetched) == digest
    original = load_file(str(model_dir / "model.safetensors"))
    copy = load_file(str(fetched / "model.safetensors"))
    assert original.keys() == copy.keys()
    assert all(torch.equal(original[k], copy[k]) for k in original)
    assert (fetched / "sub" / "adapter.safetensors").is_file()
    assert (
        store.get("local", digest, tmp_path / "cache", max_bytes=CAP) == fetched
    )  # cached, still verified
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [digest]  # no temp dirs


def test_put_is_idempotent(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = store.put(model_dir)
    inode = (store.objects / first.revision / "model.safetensors").stat().st_ino
    assert store.put(model_dir) == first
    assert (store.objects / first.revision / "model.safetensors").stat().st_ino == inode  # reused
    assert [p.name for p in store.objects.iterdir()] == [first.revision]
    other = store.put(write_model(tmp_path / "other", seed=3))
    assert other.revision != first.revision
    assert sorted(p.name for p in store.objects.iterdir()) == sorted(
        [first.revision, other.revision]
    )


def test_tampered_object_is_caught_and_leaves_nothing(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stored = store.put(model_dir)
    weights = store.objects / stored.revision / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # flip one bit of one weight
    weights.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(StoreError) as err:
        store.get("local", stored.revision, cache, max_bytes=CAP)
    assert err.value.code == "hash_mismatch"
    assert list(cache.iterdir()) == []  # no partial or temp directory left behind
    store.put(model_dir)  # putting the model again repairs the object
    assert (
        content_hash(store.get("local", stored.revision, cache, max_bytes=CAP)) == stored.revision
    )


def test_tampered_cache_copy_is_replaced(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stored = store.put(model_dir)
    fetched = store.get("local", stored.revision, tmp_path / "cache", max_bytes=CAP)
    (fetched / "config.json").write_text('{"evil": 1}')
    again = store.get("local", stored.revision, tmp_path / "cache", max_bytes=CAP)
    assert again == fetched and content_hash(again) == stored.revision


@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "w.pt", "w.pth", "w.pkl", "w.ckpt", "sub/W.PT", "x.npy"]
)
def test_pickle_files_are_refused(tmp_path: Path, model_dir: Path, name: str) -> None:
    (model_dir / name).write_bytes(b"\x80\x04K\x01.")  # a pickle
    store = LocalStore(tmp_path / "store")
    with pytest.raises(StoreError) as err:
        store.put(model_dir)
    assert err.value.code == "pickle_refused"
    assert not store.objects.exists() or not any(store.objects.iterdir())


def test_too_large_is_refused(tmp_path: Path, model_dir: Path) -> None:
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    with pytest.raises(StoreError) as err:
        LocalStore(tmp_path / "a", max_bytes=size - 1).put(model_dir)
    assert err.value.code == "too_large"
    assert LocalStore(tmp_path / "b", max_bytes=size).put(model_dir).size_bytes == size


def test_symlinks_are_refused_by_put(tmp_path: Path, model_dir: Path) -> None:
    os.symlink("/etc/passwd", model_dir / "leak.safetensors")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(StoreError) as err:
        store.put(model_dir)
    assert err.value.code == "symlink_refused"
    assert not store.objects.exists() or not any(store.objects.iterdir())


def test_leftovers_of_a_killed_put_do_not_break_the_next(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    digest = content_hash(model_dir)
    stray = store.objects / ".incoming-deadbeef"
    stray.mkdir(parents=True)
    (stray / "model.safetensors").write_bytes(b"partial")
    stored = store.put(model_dir)
    assert stored.revision == digest
    assert content_hash(store.objects / digest) == digest
    assert not store.exists("local", stray.name)
    assert content_hash(store.get("local", digest, tmp_path / "cache", max_bytes=CAP)) == digest


def test_a_half_written_object_is_replaced_by_the_next_put(tmp_path: Path, model_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    digest = content_hash(model_dir)
    (store.objects / digest).mkdir(parents=True)  # e.g. copied in by hand, half way
    (store.objects / digest / "config.json").write_text("{}")
    assert store.put(model_dir).revision == digest
    assert content_hash(store.objects / digest) == digest


def test_bad_references_are_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(StoreError) as err:
        store.get("local", "ab" * 32, tmp_path / "cache", max_bytes=CAP)
    assert err.value.code == "not_found"
    with pytest.raises(StoreError) as err:
        store.get("local", "../../etc", tmp_path / "cache", max_bytes=CAP)
    assert err.value.code == "bad_ref"
    with pytest.raises(StoreError) as err:
        store.get("owner/model", "ab" * 32, tmp_path / "cache", max_bytes=CAP)
    assert err.value.code == "wrong_store"
    with pytest.raises(StoreError) as err:
        store.put(tmp_path / "missing")
    assert err.value.code == "not_found"
