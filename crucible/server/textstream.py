"""Text from a growing list of tokens: released in pieces that never split a character, never show
part of a stop sequence, and concatenate to exactly the answer's text.

``Vocabulary`` wraps a tokenizer for the threads that serve one model (fast tokenizers are not
documented thread-safe, so every call holds one lock; one token's text is cached). ``TextStream``
is the incremental decoder one generation uses: ``push(token)`` returns the text that token
releases, ``finish()`` the rest. Pure apart from the tokenizer calls.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

__all__ = ["TextStream", "Tokenizer", "Vocabulary", "token_offsets"]

REPLACEMENT = "\ufffd"  # what a token ending inside a UTF-8 character decodes to


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def __len__(self) -> int: ...


class Vocabulary:
    """A tokenizer behind one lock, with a cache of single-token texts."""

    def __init__(self, tokenizer: Tokenizer, max_token_chars: int = 256) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._texts: dict[int, str] = {}
        self._max_token_chars = max_token_chars

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return self.tokenizer.decode(list(ids))

    def token_text(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self.decode([token_id])[: self._max_token_chars]
            self._texts[token_id] = text  # a dict write is atomic; a race only recomputes
        return text


class TextStream:
    """Incremental decoding with stop sequences and a length cap (module doc).

    Decoding re-reads only a short window of tokens (the ones since the last released
    character), so a long answer costs linear, not quadratic, time. Text that could be the
    beginning of a stop sequence is held back until it is known not to be; once a stop sequence
    appears, the text ends just before it and ``stopped`` is set (``_first_stop``: the stop that
    completes first halts generation, as OpenAI's ``stop`` does)."""

    def __init__(self, vocab: Vocabulary, stop: Sequence[str] = (), max_chars: int = 65_536):
        self._vocab = vocab
        self._stop = tuple(s for s in stop if s)
        self._max_chars = max_chars
        self._ids: list[int] = []
        self._prefix = 0  # _ids[_prefix:_read] were decoded into released-or-held text
        self._read = 0
        self._held = ""  # decoded, not yet released (could start a stop sequence)
        self.text = ""  # released so far
        self.stopped = False  # a stop sequence ended the text
        self.full = False  # the length cap ended the text

    @property
    def ended(self) -> bool:
        return self.stopped or self.full

    @property
    def length(self) -> int:
        """Characters decoded so far (released and held): where the next token's text starts."""
        return len(self.text) + len(self._held)

    def push(self, token_id: int) -> str:
        """Add one token; the text it releases (often all of its own, sometimes none)."""
        if self.ended:
            return ""
        self._ids.append(token_id)
        before = self._vocab.decode(self._ids[self._prefix : self._read])
        after = self._vocab.decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""  # inside a character: wait for the bytes that complete it
        self._prefix, self._read = self._read, len(self._ids)
        return self._release(after[len(before) :], final=False)

    def finish(self) -> str:
        """The end of generation: release whatever is left (an unfinished character too)."""
        if self.ended:
            return ""
        before = self._vocab.decode(self._ids[self._prefix : self._read])
        rest = self._vocab.decode(self._ids[self._prefix :])[len(before) :]
        self._prefix = self._read = len(self._ids)
        return self._release(rest, final=True)

    def _release(self, chunk: str, *, final: bool) -> str:
        pending = self._held + chunk
        cut = self._first_stop(pending)
        if cut is not None:
            pending, self.stopped, hold = pending[:cut], True, 0
        else:
            hold = 0 if final else self._stop_prefix(pending)
        out, self._held = pending[: len(pending) - hold], pending[len(pending) - hold :]
        room = self._max_chars - len(self.text)
        if len(out) > room:
            out, self.full, self._held = out[:room], True, ""
        self.text += out
        return out

    def _first_stop(self, text: str) -> int | None:
        """Where the text ends: generation halts when the first stop sequence is complete, so the
        earliest-*ending* occurrence decides how much text counts, and the answer ends where the
        earliest stop inside that text begins (tokens may carry several characters; the result
        is what character-by-character generation would give, whatever the tokenization)."""
        ends = [i + len(s) for s in self._stop if (i := text.find(s)) >= 0]
        if not ends:
            return None
        seen = text[: min(ends)]
        return min(i for s in self._stop if (i := seen.find(s)) >= 0)

    def _stop_prefix(self, text: str) -> int:
        """The longest end of ``text`` that begins some stop sequence (it must be held back)."""
        longest = 0
        for stop in self._stop:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest


def token_offsets(vocab: Vocabulary, ids: Sequence[int]) -> tuple[str, list[int]]:
    """The decoded text of ``ids`` and where each token starts in it (characters).

    A token that ends inside a character starts where that character starts."""
    stream = TextStream(vocab, max_chars=1 << 30)
    offsets = []
    for token in ids:
        offsets.append(stream.length)
        stream.push(token)
    stream.finish()
    return stream.text, offsets
