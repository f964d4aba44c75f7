"""Decimal numbers that arrive as text in headers (Content-Length, a request nonce).

``str.isdigit`` accepts far more than ASCII digits ("²", "٣"), and ``int`` refuses some of what it
accepts, so a header checked with ``isdigit`` alone can still raise a ``ValueError`` from deep in
a request handler. Everything that reads such a header asks this one function.
"""

from __future__ import annotations

__all__ = ["ascii_decimal"]


def ascii_decimal(text: str | None, max_digits: int = 18) -> int | None:
    """The integer ``text`` spells in 1 to ``max_digits`` ASCII digits, or ``None``."""
    if text is None or not (0 < len(text) <= max_digits) or not text.isascii():
        return None
    return int(text) if text.isdigit() else None
