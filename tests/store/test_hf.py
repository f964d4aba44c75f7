"""The Hub store, without a Hub: construction and the fail-fast offline path only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol.errors import StoreError
from store.base import ModelStore
from store.hf import HuggingFaceStore


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
    store = HuggingFaceStore("owner/model", retries=3, backoff_s=5.0)  # would take 35 s retrying
    start = time.monotonic()
    for call in (
        lambda: store.get("owner/model", "abc1234", tmp_path / "dl"),
        lambda: store.put(model_dir),
        lambda: store.exists("owner/model", "abc1234"),
    ):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.code == "offline"
    assert time.monotonic() - start < 2
    assert not (tmp_path / "dl").exists() or list((tmp_path / "dl").iterdir()) == []


def test_get_refuses_bad_revisions(tmp_path: Path) -> None:
    store = HuggingFaceStore("owner/model", retries=0)
    with pytest.raises(StoreError) as err:
        store.get("owner/model", "../../x", tmp_path / "dl")
    assert err.value.code == "bad_ref"
