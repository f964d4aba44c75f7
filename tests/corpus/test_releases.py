"""Fresh data releases: built from a folder, content-addressed, and checked line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.corpus.releases import build_release, encode_release, parse_release, release_id
from crucible.corpus.sources import Document
from crucible.protocol.errors import DataError
from crucible.protocol.release import ReleaseCommitment


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    (folder / "news").mkdir(parents=True, exist_ok=True)
    (folder / "news" / "a.txt").write_text("First fresh text.")
    (folder / "b.jsonl").write_text(json.dumps({"id": "b/1", "text": "Second."}) + "\n\n")
    (folder / "notes.md").write_text("not part of the release")
    return folder


def test_a_folder_becomes_a_sorted_content_addressed_release(tmp_path: Path) -> None:
    raw = build_release(_folder(tmp_path))
    docs = parse_release(raw, release_id(raw), max_bytes=10_000, max_documents=10)
    assert [(d.doc_id, d.text) for d in docs] == [
        ("b/1", "Second."),
        ("news/a", "First fresh text."),
    ]
    assert build_release(_folder(tmp_path)) == raw  # deterministic: same folder, same id
    assert encode_release(list(reversed(docs))) == raw


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda raw: raw + b"x", "release_hash_mismatch"),
        (lambda raw: raw.replace(b"Second", b"Secund"), "release_hash_mismatch"),
    ],
)
def test_a_tampered_release_is_refused(tmp_path: Path, mutate, code: str) -> None:
    raw = build_release(_folder(tmp_path))
    with pytest.raises(DataError) as info:
        parse_release(mutate(raw), release_id(raw), max_bytes=10_000, max_documents=10)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("lines", "code", "phrase"),
    [
        ([b'{"id": "a", "text": "x", "extra": 1}'], "release_malformed", "exactly"),
        ([b'{"id": "", "text": "x"}'], "release_malformed", "printable"),
        ([b'{"id": "a\\u0000b", "text": "x"}'], "release_malformed", "printable"),
        ([b'{"id": "a", "text": ""}'], "release_malformed", "non-empty"),
        ([b'{"id": 5, "text": "x"}'], "release_malformed", "printable"),
        ([b"[" * 5000 + b"]" * 5000], "release_malformed", "not JSON"),
        (
            [b'{"id": "a", "text": "x"}', b'{"id": "a", "text": "y"}'],
            "release_malformed",
            "share an id",
        ),
        ([b"\xff\xfe"], "release_malformed", "not UTF-8"),
        ([], "release_empty", "no document"),
    ],
)
def test_a_malformed_release_is_refused_with_its_reason(lines, code: str, phrase: str) -> None:
    raw = b"\n".join(lines) + (b"\n" if lines else b"")
    with pytest.raises(DataError, match=phrase) as info:
        parse_release(raw, release_id(raw), max_bytes=1_000_000, max_documents=10)
    assert info.value.code == code


def test_size_and_count_bounds_come_first() -> None:
    raw = encode_release([Document(f"d{i}", "text " * 10) for i in range(5)])
    with pytest.raises(DataError, match="the competition allows 10") as info:
        parse_release(raw, "0" * 64, max_bytes=10, max_documents=100)  # before any hashing
    assert info.value.code == "release_too_large"
    with pytest.raises(DataError, match="5 documents; the competition allows 4"):
        parse_release(raw, release_id(raw), max_bytes=10_000, max_documents=4)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_a_data_error(raw: bytes) -> None:
    try:
        parse_release(raw, release_id(raw), max_bytes=10_000, max_documents=50)
    except DataError:
        pass


def test_release_commitments_round_trip_within_the_chain_limit() -> None:
    c = ReleaseCommitment("local", "ab" * 32)
    assert ReleaseCommitment.parse(str(c)) == c and len(str(c).encode()) <= 128
    assert ReleaseCommitment.looks_like(str(c)) and not ReleaseCommitment.looks_like(
        "tiny@2:local:x:y"
    )
