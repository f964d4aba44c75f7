"""Streamed text: pieces that concatenate to the whole answer, never split a character, never
show part of a stop sequence; the competition's real tokenizer throughout."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.server.textstream import TextStream, Vocabulary, token_offsets

VOCAB = Vocabulary(load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json"))


def _stream(
    text: str, stop: tuple[str, ...] = (), max_chars: int = 1 << 20
) -> tuple[list, TextStream]:
    stream = TextStream(VOCAB, stop, max_chars)
    pieces = [stream.push(t) for t in VOCAB.encode(text)]
    pieces.append(stream.finish())
    return pieces, stream


def test_pieces_concatenate_to_the_decoded_text_and_never_split_a_character() -> None:
    text = "It is a truth — café ☃ universally acknowledged"
    pieces, stream = _stream(text)
    assert "".join(pieces) == stream.text == VOCAB.decode(VOCAB.encode(text))
    assert all("\ufffd" not in piece for piece in pieces)
    assert "" in pieces  # the first bytes of "—" and "☃" release nothing yet


def test_text_ends_before_the_first_stop_sequence_and_never_shows_part_of_one() -> None:
    pieces, stream = _stream("Thou art more lovely and more temperate", stop=("more tem", "xyz"))
    assert stream.text == "Thou art more lovely and " and stream.stopped
    assert "".join(pieces) == stream.text
    # "more" was held back until " lovely" showed it is not the stop sequence
    released = ""
    for piece in pieces:
        released += piece
        assert not released.endswith("more t")


def test_a_stop_sequence_across_token_boundaries_is_found() -> None:
    _, stream = _stream("a b c d e f", stop=("c d",))
    assert stream.text == "a b " and stream.stopped


def test_the_length_cap_ends_the_text() -> None:
    _, stream = _stream("It is a truth universally acknowledged", max_chars=10)
    assert stream.text == "It is a tr" and stream.full and not stream.stopped


def test_offsets_are_where_each_token_starts() -> None:
    ids = VOCAB.encode("Thou art ☃ fair")
    text, offsets = token_offsets(VOCAB, ids)
    assert text == "Thou art ☃ fair" and offsets[0] == 0 and offsets == sorted(offsets)
    assert text[offsets[1] :].startswith(" art")
    snowman = text.index("☃")
    assert offsets.count(snowman) >= 2  # its bytes are split over tokens: they share its start


@settings(max_examples=60, deadline=None)
@example(text="100", stop=("0", "100"))  # "0" completes first, though "100" starts first
@example(text="ab", stop=("b", "ab"))  # both complete together: the earlier start wins
@given(
    text=st.text(min_size=1, max_size=60),
    stop=st.lists(st.text(min_size=1, max_size=4), max_size=3).map(tuple),
)
def test_streamed_text_is_the_prefix_before_the_first_stop(
    text: str, stop: tuple[str, ...]
) -> None:
    pieces, stream = _stream(text, stop)
    decoded = VOCAB.decode(VOCAB.encode(text))
    assert "".join(pieces) == stream.text
    # character by character, generation halts where the first stop sequence is complete
    halt = next((n for n in range(len(decoded) + 1) if any(s in decoded[:n] for s in stop)), None)
    if stream.stopped:
        seen = decoded[:halt]
        assert halt is not None
        assert stream.text == seen[: min(seen.find(s) for s in stop if s in seen)]
    else:
        assert stream.text == decoded and halt is None


@pytest.mark.parametrize("token", [0, 1, 259, 8191])
def test_a_single_tokens_text_is_cached_and_bounded(token: int) -> None:
    assert VOCAB.token_text(token) == VOCAB.token_text(token) == VOCAB.decode([token])[:256]
