"""Corpus split, documents through ``datasets``, tokenizer training and loading — no hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.dataset import load_documents, token_stream, tokenized_documents
from corpus.fetch import CorpusPaths, write_corpus
from corpus.sources import Document
from corpus.split import split_of
from corpus.tokenizer import file_sha256, load_tokenizer, train_tokenizer
from protocol.competition import load_competitions
from protocol.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_split_is_a_pure_function_of_the_document_id() -> None:
    assert split_of("austen/mansfieldpark") == "eval"
    assert split_of("austen/emma") == "train"
    ids = [f"doc/{i}" for i in range(2000)]
    held = sum(split_of(i) == "eval" for i in ids)
    assert 200 < held < 400  # ~15 % held out


def test_fixture_holds_whole_works_on_both_sides() -> None:
    manifest = json.loads(CorpusPaths(FIXTURE).manifest.read_text())
    splits = {d["id"]: d["split"] for d in manifest["documents"]}
    assert set(splits.values()) == {"train", "eval"}
    assert all(split_of(doc) == split for doc, split in splits.items())
    train_ids = set(load_documents(FIXTURE, "train")["id"])
    eval_ids = set(load_documents(FIXTURE, "eval")["id"])
    assert not train_ids & eval_ids and eval_ids == {d for d, s in splits.items() if s == "eval"}


def test_write_corpus_refuses_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="share an id"):
        write_corpus([Document("a/b", "x"), Document("a/b", "y")], CorpusPaths(tmp_path))


def test_missing_corpus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="crucible data fetch"):
        load_documents(tmp_path, "train")


def test_tokenizer_training_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    texts = load_documents(FIXTURE, "train")["text"]
    first, second = train_tokenizer(texts, 1024), train_tokenizer(texts, 1024)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    first.backend_tokenizer.save(str(a))
    second.backend_tokenizer.save(str(b))
    assert file_sha256(a) == file_sha256(b)
    tok = load_tokenizer(a)
    text = "It is a truth universally acknowledged, that a single man"
    assert len(tok) == 1024 and tok.decode(tok.encode(text)) == text


def test_committed_tokenizer_matches_the_competition_spec() -> None:
    spec = load_competitions(ROOT / "competitions")["tiny"]
    path = ROOT / "competitions" / spec.model.tokenizer
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


def test_token_stream_separates_documents_with_eos() -> None:
    tok = load_tokenizer(ROOT / "competitions" / "tokenizers" / "crucible-bpe-8k-v1.json")
    stream = token_stream(FIXTURE, "eval", tok)
    docs = tokenized_documents(FIXTURE, "eval", tok)
    assert len(stream) == sum(len(ids) + 1 for ids in docs["input_ids"])
    assert (stream == tok.eos_token_id).sum() >= len(docs)
