"""Corpus split, documents through ``datasets``, tokenizer training and loading — no hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crucible.competitions import specs_dir
from crucible.corpus.dataset import load_documents, token_stream, tokenized_documents
from crucible.corpus.fetch import CorpusPaths, _download, write_corpus
from crucible.corpus.sources import Document, Source
from crucible.corpus.split import split_of
from crucible.corpus.tokenizer import (
    file_sha256,
    load_competition_tokenizer,
    load_tokenizer,
    train_tokenizer,
)
from crucible.neurons.data import main as data_cli
from crucible.protocol.competition import load_competitions
from crucible.protocol.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
ROOT = Path(__file__).resolve().parents[2]
TINY = load_competitions(specs_dir())["tiny"]


def test_split_is_a_pure_function_of_the_document_id() -> None:
    assert split_of("austen/mansfieldpark") == "eval"
    assert split_of("austen/emma") == "train"
    ids = [f"doc/{i}" for i in range(2000)]
    held = sum(split_of(i) == "eval" for i in ids)
    assert 200 < held < 400  # ~15 % held out


def test_fixture_holds_whole_works_on_both_sides(tmp_path: Path) -> None:
    manifest = json.loads(CorpusPaths(FIXTURE).manifest.read_text())
    splits = {d["id"]: d["split"] for d in manifest["documents"]}
    assert set(splits.values()) == {"train", "eval", "fresh"}
    assert all(split_of(doc) == split for doc, split in splits.items())
    train_ids = set(load_documents(FIXTURE, "train", cache_dir=tmp_path)["id"])
    eval_ids = set(load_documents(FIXTURE, "eval", cache_dir=tmp_path)["id"])
    fresh_ids = set(load_documents(FIXTURE, "fresh", cache_dir=tmp_path)["id"])
    assert not train_ids & eval_ids and not (train_ids | eval_ids) & fresh_ids
    assert eval_ids == {d for d, s in splits.items() if s == "eval"}
    assert fresh_ids == {d for d, s in splits.items() if s == "fresh"}


def test_write_corpus_refuses_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="share an id"):
        write_corpus([Document("a/b", "x"), Document("a/b", "y")], CorpusPaths(tmp_path))


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="crucible data fetch"):
        load_documents(tmp_path, "train")


def test_tokenizer_training_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    texts = load_documents(FIXTURE, "train", cache_dir=tmp_path / "cache")["text"]
    first, second = train_tokenizer(texts, 1024), train_tokenizer(texts, 1024)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    first.backend_tokenizer.save(str(a))
    second.backend_tokenizer.save(str(b))
    assert file_sha256(a) == file_sha256(b)
    tok = load_tokenizer(a)
    text = "It is a truth universally acknowledged, that a single man"
    assert len(tok) == 1024 and tok.decode(tok.encode(text)) == text


def test_committed_tokenizer_matches_the_competition_spec() -> None:
    spec = load_competitions(specs_dir())["tiny"]
    path = specs_dir() / spec.model.tokenizer
    assert file_sha256(path) == spec.model.tokenizer_sha256
    tok = load_tokenizer(path)
    assert len(tok) == spec.model.vocab_size
    assert (
        tok.decode(tok.encode("Thou art more lovely and more temperate"))
        == "Thou art more lovely and more temperate"
    )


def test_broken_tokenizer_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        load_tokenizer(tmp_path / "missing.json")


def test_token_stream_separates_documents_with_eos(tmp_path: Path) -> None:
    tok = load_competition_tokenizer(TINY.model, specs_dir())
    stream = token_stream(FIXTURE, "eval", tok, cache_dir=tmp_path)
    docs = tokenized_documents(FIXTURE, "eval", tok, cache_dir=tmp_path)
    assert len(stream) == sum(len(ids) + 1 for ids in docs["input_ids"])
    assert (stream == tok.eos_token_id).sum() >= len(docs)


def test_reading_the_committed_fixture_writes_nothing_into_it(tmp_path: Path) -> None:
    before = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*"))
    tok = load_competition_tokenizer(TINY.model, specs_dir())
    token_stream(FIXTURE, "train", tok)  # the default cache: datasets' own, never the corpus dir
    assert sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*")) == before


def test_competition_tokenizer_is_verified_against_the_spec(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(specs_dir(), specs)
    assert len(load_competition_tokenizer(TINY.model, specs)) == 8192
    path = specs / TINY.model.tokenizer
    path.write_text(path.read_text().replace('"Thou"', '"THOU"', 1) + " ")
    with pytest.raises(DataError, match="expects") as err:
        load_competition_tokenizer(TINY.model, specs)
    assert err.value.code == "tokenizer_mismatch"
    wrong_vocab = TINY.model.model_copy(update={"vocab_size": 4096})
    with pytest.raises(DataError, match="4096"):
        load_competition_tokenizer(wrong_vocab, specs_dir())


def test_a_file_that_is_not_a_tokenizer_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(DataError) as err:
        load_tokenizer(tmp_path / "t.json")
    assert err.value.code == "tokenizer_broken"


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_an_unreachable_source_is_a_clear_error(tmp_path: Path) -> None:
    # apt answers "unable to locate" from its local package lists: no network is touched
    missing = Source("nothing", "deb", "crucible-no-such-package", "x.deb", "0" * 64)
    with pytest.raises(DataError, match="crucible-no-such-package") as err:
        _download(missing, tmp_path)
    assert err.value.code == "source_unreachable" and err.value.fix


def test_a_cached_download_with_another_checksum_is_not_used(tmp_path: Path) -> None:
    # a cached file with the wrong bytes is re-downloaded; here the "download" is a package that
    # apt cannot find, so the stale file must not be used
    (tmp_path / "x.deb").write_bytes(b"tampered")
    source = Source("nothing", "deb", "crucible-no-such-package", "x.deb", "0" * 64)
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    with pytest.raises(DataError) as err:
        _download(source, tmp_path)
    assert err.value.code == "source_unreachable"  # it went to fetch again instead of using it


def test_data_info_lists_documents_and_explains_a_missing_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert data_cli(["info", "--data-dir", str(FIXTURE)]) == 0
    listed = capsys.readouterr().out
    assert "austen/" in listed and "eval" in listed and "train" in listed
    assert data_cli(["info", "--data-dir", str(tmp_path)]) != 0
    assert "crucible data fetch" in capsys.readouterr().err
