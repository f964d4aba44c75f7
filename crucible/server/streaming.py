"""Signed server-sent event streams: the frame format, its incremental parser, and the server's
loop that turns a handler's events into signed frames.

A frame is ``event: KIND\\n`` ``data: JSON\\n`` [``sig: 0x…\\n``] ``\\n`` (the data is one line:
JSON never holds a raw newline). Which frames are signed, and over what, is
``protocol.auth.StreamSigner`` / ``StreamVerifier`` (crucible-stream/1). The last frame is
``end`` or ``error``; ``error`` carries an ``ErrorResponse`` body, exactly like an HTTP error.

``stream_frames`` is what ``NeuronServer`` runs for a streaming route: it pulls ``(kind,
message)`` pairs from the handler, signs and frames them, and ends the stream with a signed
``error`` frame if the handler raises or runs past the route's timeout. When the client goes
away, the server's task is cancelled and the handler's iterator is closed, so its work stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from pydantic import BaseModel

from crucible.protocol.auth import StreamSigner
from crucible.protocol.errors import CrucibleError, RequestError
from crucible.protocol.messages import (
    STREAM_END,
    STREAM_ERROR,
    STREAM_KINDS,
    ErrorDetail,
    ErrorResponse,
)
from crucible.server.errors import HandlerTimeout

__all__ = [
    "END_KINDS",
    "Frame",
    "FrameDecoder",
    "StreamEvents",
    "encode_frame",
    "error_frame_body",
    "stream_frames",
]

log = logging.getLogger(__name__)

END_KINDS = frozenset({STREAM_END, STREAM_ERROR})
MAX_SIGNATURE_CHARS = 2 + 128

StreamEvents = AsyncIterator[tuple[str, BaseModel]]


def encode_frame(kind: str, data: bytes, signature: str | None) -> bytes:
    frame = b"event: " + kind.encode() + b"\ndata: " + data + b"\n"
    if signature is not None:
        frame += b"sig: " + signature.encode() + b"\n"
    return frame + b"\n"


def error_frame_body(code: str, message: str) -> bytes:
    detail = ErrorDetail(code=code[:64], message=message[:1024])
    return ErrorResponse(error=detail).model_dump_json().encode()


@dataclass(frozen=True)
class Frame:
    kind: str
    data: bytes
    signature: str | None

    @property
    def last(self) -> bool:
        return self.kind in END_KINDS


def _bad(message: str) -> RequestError:
    return RequestError(f"malformed event stream: {message}", code="bad_stream")


class FrameDecoder:
    """Bytes of a stream in, whole frames out; ``RequestError`` (``bad_stream``) on anything
    that is not a frame of this format or is larger than ``max_frame_bytes``."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            raw, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            frames.append(self._parse(raw))
        if len(self._buffer) > self._max:
            raise _bad(f"a frame is larger than {self._max} bytes")
        return frames

    def _parse(self, raw: bytes) -> Frame:
        fields: dict[bytes, bytes] = {}
        for line in raw.split(b"\n"):
            name, sep, value = line.partition(b": ")
            if not sep or name not in (b"event", b"data", b"sig") or name in fields:
                raise _bad("a frame holds an unknown, repeated or unnamed line")
            fields[name] = value
        kind = fields.get(b"event", b"").decode("ascii", "replace")
        if kind not in STREAM_KINDS or b"data" not in fields:
            raise _bad(f"unknown frame kind {kind[:20]!r}")
        signature = fields.get(b"sig")
        if signature is not None and (
            len(signature) > MAX_SIGNATURE_CHARS or not signature.startswith(b"0x")
        ):
            raise _bad("a signature is not 0x-hex")
        return Frame(kind, fields[b"data"], None if signature is None else signature.decode())


async def stream_frames(
    events: StreamEvents, signer: StreamSigner, *, timeout_s: float
) -> AsyncIterator[bytes]:
    """Signed frames of ``events`` (module doc); always ends with one ``end`` or ``error``."""
    deadline = time.monotonic() + timeout_s

    def frame(kind: str, data: bytes) -> bytes:
        last = kind in END_KINDS
        return encode_frame(kind, data, signer.frame(kind, data, last=last))

    try:
        async with aclosing(events):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HandlerTimeout(f"the stream ran past this route's {timeout_s:g}s")
                try:
                    kind, message = await asyncio.wait_for(anext(events), remaining)
                except StopAsyncIteration:
                    raise RuntimeError("the stream's handler ended without an end frame") from None
                except asyncio.TimeoutError:
                    raise HandlerTimeout(
                        f"the stream ran past this route's {timeout_s:g}s"
                    ) from None
                yield frame(kind, message.model_dump_json().encode())
                if kind in END_KINDS:
                    return
    except CrucibleError as exc:
        yield frame(STREAM_ERROR, error_frame_body(exc.code, exc.message))
    except Exception:  # a handler bug: end the stream with a 500-like error, keep serving
        log.exception("streaming handler failed")
        yield frame(STREAM_ERROR, error_frame_body("internal_error", "the handler failed"))
