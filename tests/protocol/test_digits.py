"""``ascii_decimal``: the one reader of numbers that arrive as header text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crucible.protocol.digits import ascii_decimal


def test_only_ascii_digits_within_the_length_are_numbers() -> None:
    assert ascii_decimal("0") == 0 and ascii_decimal("1234") == 1234
    assert ascii_decimal("9" * 18) == int("9" * 18) and ascii_decimal("9" * 19) is None
    for text in (None, "", "²", "٣", "1²", "-1", "+1", " 1", "1 ", "1_000", "0x10", "1e3"):
        assert ascii_decimal(text) is None, text


@given(st.text(max_size=24))
def test_any_text_is_a_number_or_none_never_an_error(text: str) -> None:
    value = ascii_decimal(text)
    assert value is None or (text.isascii() and str(value) == text.lstrip("0").rjust(1, "0"))
