"""The envelope parser and digest: untrusted bytes in, an envelope or a named refusal out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.chain.interface import SetCommitment
from crucible.chain.local.extrinsic import (
    DIGEST_PATTERN,
    SignedExtrinsic,
    parse_envelope,
    sign_call,
)
from crucible.chain.local.state import SCHEMA_VERSION, open_db
from crucible.protocol.errors import ExtrinsicRejected
from tests.conftest import keypair


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=512), st.text(max_size=512).map(str.encode)))
def test_parse_envelope_returns_an_envelope_or_a_named_refusal(body: bytes) -> None:
    try:
        ext = parse_envelope(body)
    except ExtrinsicRejected as exc:
        assert exc.code in ("malformed", "too_large")
    else:
        assert isinstance(ext, SignedExtrinsic)


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (b"[" * 9 + b"]" * 9, "nests deeper than 8"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nests deeper than 8"),
        (b'{"nonce": 9223372036854775808}', "at most 9223372036854775807"),
        (b'{"nonce": ' + b"1" * 5000 + b"}", "at most 9223372036854775807"),
        (b"[NaN]", "NaN is not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"x" * (300 * 1024), "at most 262144 bytes"),
    ],
)
def test_hostile_bodies_are_refused_before_parsing_deeply(body: bytes, phrase: str) -> None:
    with pytest.raises(ExtrinsicRejected, match=phrase):
        parse_envelope(body)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    ext = sign_call(
        SetCommitment(netuid=1, data='[[[[[[[[[[{{{{{{{{\\"'), keypair("s"), nonce=0, genesis="g"
    )
    assert parse_envelope(json.dumps(ext.to_json()).encode()) == ext


def test_the_digest_covers_the_canonical_signed_bytes_whatever_the_wire_layout() -> None:
    ext = sign_call(SetCommitment(netuid=1, data="m"), keypair("d"), nonce=3, genesis="0xg")
    assert DIGEST_PATTERN.match(ext.digest())
    spaced = json.dumps(ext.to_json(), indent=2, sort_keys=False).encode()
    assert parse_envelope(spaced).digest() == ext.digest()
    resigned = sign_call(SetCommitment(netuid=1, data="m"), keypair("d"), nonce=3, genesis="0xg")
    assert resigned.payload() == ext.payload() and resigned.digest() != ext.digest()


def test_a_schema_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(str(path))
    old.execute(
        "CREATE TABLE extrinsics (id INTEGER PRIMARY KEY AUTOINCREMENT, block INTEGER NOT NULL, "
        "signer TEXT NOT NULL, call TEXT NOT NULL, body TEXT NOT NULL, digest TEXT NOT NULL)"
    )
    old.execute("INSERT INTO extrinsics VALUES (1, 5, 's', 'faucet', '{}', '0xabc')")
    old.commit()
    old.close()
    db = open_db(path)
    try:
        assert db.execute("SELECT block, result FROM extrinsics").fetchall() == [(5, None)]
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION == 2
    finally:
        db.close()
