"""The content hash: its definition, stability, order independence and what it refuses."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from crucible.protocol.commitment import secure_hash as protocol_secure_hash
from crucible.protocol.errors import StoreError
from crucible.store.hashing import content_hash, file_sha256, secure_hash
from tests.store.conftest import write_model


def test_file_sha256_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_content_hash_matches_its_documented_definition(model_dir: Path) -> None:
    lines = sorted(
        f"{p.relative_to(model_dir).as_posix()}:{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in model_dir.rglob("*")
        if p.is_file()
    )
    assert content_hash(model_dir) == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert any(line.startswith("sub/adapter.safetensors:") for line in lines)  # recursive


def test_content_hash_is_stable_and_independent_of_location_and_order(tmp_path: Path) -> None:
    a = write_model(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    # the same files written in the reverse order (different directory listing order and mtimes)
    for path in sorted(a.rglob("*"), reverse=True):
        if path.is_file():
            target = b / path.relative_to(a)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (b / "empty-dir").mkdir()  # empty directories do not count
    assert content_hash(a) == content_hash(b) == content_hash(a)
    assert content_hash(write_model(tmp_path / "c")) == content_hash(a)  # deterministic files


def test_content_hash_changes_with_content_or_names(tmp_path: Path, model_dir: Path) -> None:
    before = content_hash(model_dir)
    renamed = tmp_path / "renamed"
    shutil.copytree(model_dir, renamed)
    (renamed / "config.json").rename(renamed / "config2.json")
    assert content_hash(renamed) != before
    assert content_hash(write_model(tmp_path / "other", seed=1)) != before
    (model_dir / "config.json").write_text("{}")
    assert content_hash(model_dir) != before


def test_symlinks_anywhere_are_refused(model_dir: Path) -> None:
    os.symlink("/etc/passwd", model_dir / "sub" / "leak")
    with pytest.raises(StoreError) as err:
        content_hash(model_dir)
    assert err.value.code == "symlink_refused"


def test_symlinked_directory_is_refused(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x").write_text("x")
    os.symlink(tmp_path / "outside", model_dir / "linked")
    with pytest.raises(StoreError) as err:
        content_hash(model_dir)
    assert err.value.code == "symlink_refused"


def test_fifo_and_empty_and_missing_directories_are_refused(
    tmp_path: Path, model_dir: Path
) -> None:
    os.mkfifo(model_dir / "pipe")
    with pytest.raises(StoreError) as err:
        content_hash(model_dir)  # must not block reading the fifo
    assert err.value.code == "bad_file"
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError) as err:
        content_hash(tmp_path / "empty")
    assert err.value.code == "empty_model"
    with pytest.raises(StoreError) as err:
        content_hash(tmp_path / "missing")
    assert err.value.code == "not_found"


def test_secure_hash_binds_content_to_hotkey_and_is_the_protocols() -> None:
    digest = "ab" * 32
    expected = hashlib.sha256((digest + "5Hotkey").encode()).hexdigest()
    assert expected.startswith(secure_hash(digest, "5Hotkey"))
    assert secure_hash(digest, "5Hotkey") == protocol_secure_hash(digest, "5Hotkey")
    assert secure_hash(digest, "5Other") != secure_hash(digest, "5Hotkey")
