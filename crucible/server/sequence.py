"""One generation request, step by step: what is done with each row of logits a model produces.

A ``Sequence`` owns everything one request asks for — its sampling parameters and seeded
generator, stop sequences, log-probabilities, echo, the token budget — and turns each row of
logits it is given into the next token and a stream event. It never runs the model: whoever
runs it (one request at a time, ``miner.serve``'s unbatched path, or many at once,
``server.batcher``) calls ``start`` with the prompt's logits, then ``step`` once per new row,
until ``done``. So batched and unbatched serving share every decision but the forward pass,
and give the same answer for the same logits.

Events go to ``sink`` as ``(kind, message)`` with the kinds of ``protocol.messages``
(``STREAM_START``, ``STREAM_DELTA``, ``STREAM_END``); ``fail`` sends an error instead. Calls come
from one thread at a time (the one running the model).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch
from pydantic import BaseModel
from torch.nn import functional as F

from crucible.protocol.errors import CrucibleError
from crucible.protocol.messages import (
    MAX_ECHO_TEXT_CHARS,
    MAX_OUTPUT_TEXT_CHARS,
    MIN_TEMPERATURE,
    STREAM_DELTA,
    STREAM_END,
    STREAM_ERROR,
    STREAM_START,
    StreamDelta,
    StreamEnd,
    StreamStart,
    TokenLogprob,
    TopLogprob,
)
from crucible.server.textstream import TextStream, Vocabulary, token_offsets

__all__ = ["FLOOR_LOGPROB", "Decoding", "Sequence", "Sink", "next_token"]

FLOOR_LOGPROB = -1e30  # what -inf (or NaN) is sent as: the wire carries finite numbers only

Sink = Callable[[str, BaseModel | CrucibleError | BaseException], None]


@dataclass(frozen=True)
class Decoding:
    """What one request asks of generation (checked by the wire schema before it gets here)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # alternatives per token; None: no log-probabilities
    echo: bool = False
    eos_token_id: int | None = None


def next_token(
    logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator: torch.Generator
) -> int:
    """One token from ``logits``; greedy when the sampling distribution is degenerate.

    The schema floors temperature and top-p, but a model's own logits may hold inf or NaN, so
    the distribution is cleaned and renormalised here rather than trusted: a bad model gives a
    bad answer, never an exception."""
    logits = torch.nan_to_num(logits, nan=-math.inf)
    greedy = int(torch.argmax(logits))
    if temperature == 0:
        return greedy
    probs = torch.softmax(logits / max(temperature, MIN_TEMPERATURE), dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0, posinf=0.0, neginf=0.0)
    if top_k:
        kth = torch.topk(probs, min(top_k, probs.numel())).values[-1]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
        mask = torch.zeros_like(probs, dtype=torch.bool).scatter(0, order[keep], True)
        probs = torch.where(mask, probs, torch.zeros_like(probs))
    total = float(probs.sum())
    if not (math.isfinite(total) and total > 0.0):
        return greedy
    return int(torch.multinomial(probs / total, 1, generator=generator))


def _finite(value: float) -> float:
    return min(0.0, value) if math.isfinite(value) else FLOOR_LOGPROB


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(torch.nan_to_num(logits.float(), nan=-math.inf), dim=-1)


class Sequence:
    """The state of one generation (module doc)."""

    def __init__(
        self,
        prompt_ids: Seq[int],
        decoding: Decoding,
        vocab: Vocabulary,
        *,
        commitment: str | None,
        sink: Sink,
        cancel: threading.Event | None = None,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.ids = list(prompt_ids)  # prompt and continuation: what the model reads
        self.new: list[int] = []
        self.decoding, self.vocab, self.commitment = decoding, vocab, commitment
        self.sink = sink
        self.cancel = cancel or threading.Event()
        self.generator = torch.Generator().manual_seed(decoding.seed)
        self.text = TextStream(vocab, decoding.stop, MAX_OUTPUT_TEXT_CHARS)
        self.finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def wants_prompt_logits(self) -> bool:
        """Whether ``start`` needs the logits of every prompt position (echo with logprobs)."""
        return self.decoding.echo and self.decoding.logprobs is not None

    def start(self, last_logits: torch.Tensor, prompt_logits: torch.Tensor | None = None) -> None:
        """The prompt was read: ``last_logits`` predict the first new token; ``prompt_logits``
        (positions × vocabulary, only if ``wants_prompt_logits``) score the prompt itself."""
        d = self.decoding
        prompt_text, prompt_logprobs = None, None
        if d.echo:
            prompt_text, offsets = token_offsets(self.vocab, self.prompt_ids)
            prompt_text = prompt_text[:MAX_ECHO_TEXT_CHARS]
            if prompt_logits is not None and d.logprobs is not None:
                prompt_logprobs = self._prompt_logprobs(prompt_logits, offsets, d.logprobs)
        start = StreamStart(
            commitment=self.commitment,
            prompt_tokens=len(self.prompt_ids),
            prompt_text=prompt_text,
            prompt_logprobs=prompt_logprobs,
        )
        self.sink(STREAM_START, start)
        self.step(last_logits)

    def step(self, logits: torch.Tensor) -> None:
        """One row of logits (the vocabulary) → the next token, its event, maybe the end."""
        if self.done:
            return
        d = self.decoding
        token = next_token(logits.float(), d.temperature, d.top_p, d.top_k, self.generator)
        offset = self.text.length
        self.new.append(token)
        self.ids.append(token)
        eos = d.eos_token_id is not None and token == d.eos_token_id
        released = "" if eos else self.text.push(token)
        if eos or self.text.ended:
            self.finish_reason = "stop" if eos or self.text.stopped else "length"
        elif len(self.new) >= d.max_new_tokens:
            self.finish_reason = "length"
        if self.done:
            released += self.text.finish()
        logprobs = None
        if d.logprobs is not None:
            logprobs = [self._token_logprob(_log_softmax(logits), token, offset, d.logprobs)]
        self.sink(STREAM_DELTA, StreamDelta(token_ids=[token], text=released, logprobs=logprobs))
        if self.done:
            end = StreamEnd(finish_reason=self.finish_reason, completion_tokens=len(self.new))
            self.sink(STREAM_END, end)

    def fail(self, error: BaseException) -> None:
        """The model could not go on (or nobody waits): the stream ends with ``error``."""
        if not self.done:
            self.finish_reason = "error"
            self.sink(STREAM_ERROR, error)

    def _token_logprob(
        self, logp: torch.Tensor, token: int, offset: int, alternatives: int
    ) -> TokenLogprob:
        top = []
        if alternatives:
            values, ids = torch.topk(logp, min(alternatives, logp.numel()))
            top = [
                TopLogprob(id=int(i), text=self.vocab.token_text(int(i)), logprob=_finite(float(v)))
                for v, i in zip(values.tolist(), ids.tolist(), strict=True)
            ]
        return TokenLogprob(
            id=token,
            text=self.vocab.token_text(token),
            offset=min(offset, MAX_ECHO_TEXT_CHARS),
            logprob=_finite(float(logp[token])),
            top=top,
        )

    def _prompt_logprobs(
        self, logits: torch.Tensor, offsets: list[int], alternatives: int
    ) -> list[TokenLogprob]:
        """``logits[i]`` predicts prompt token ``i + 1``; the first token has no log-probability."""
        ids = self.prompt_ids
        first = TokenLogprob(
            id=ids[0], text=self.vocab.token_text(ids[0]), offset=0, logprob=None, top=[]
        )
        logp = _log_softmax(logits[: len(ids) - 1])
        out = [first]
        for i in range(1, len(ids)):
            out.append(
                self._token_logprob(
                    logp[i - 1], ids[i], min(offsets[i], MAX_ECHO_TEXT_CHARS), alternatives
                )
            )
        return out
