"""Structured logs: one event per line with a stable ``event`` name.

Code emits ``log_event(log, "extrinsic_refused", call="set_weights", code="bad_nonce")``; the
entry point calls ``configure_logging(neuron, fmt)`` once, which installs one stderr handler on
the root logger with either formatter:

* ``json``: one JSON object per line, keys in a stable order — ``ts`` (UTC, ISO 8601), ``level``,
  ``neuron``, ``event``, ``logger``, then the event's fields sorted by name; plain ``log.info``
  records are ``event: "log"`` with a ``message``; an exception adds ``exc_type`` and ``exc``.
  Everything is ASCII-escaped, so a field holding a newline or non-ASCII text stays on its line.
* ``human``: ``HH:MM:SS LEVEL neuron event key=value …`` for a terminal.

``auto`` (the default) is ``human`` when the stream is a terminal, else ``json``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = [
    "LOG_FORMATS",
    "HumanFormatter",
    "JsonFormatter",
    "configure_logging",
    "log_event",
    "resolve_format",
]

LOG_FORMATS = ("auto", "human", "json")
_EVENT = "crucible_event"  # LogRecord attributes set through ``extra``
_FIELDS = "crucible_fields"
_HANDLER_NAME = "crucible-observe"


def log_event(
    logger: logging.Logger, event: str, /, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one structured event; ``fields`` must never hold a secret."""
    if logger.isEnabledFor(level):
        message = " ".join([event, *(f"{k}={v}" for k, v in fields.items())])
        logger.log(level, "%s", message, extra={_EVENT: event, _FIELDS: fields})


def _event_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    event = getattr(record, _EVENT, None)
    if event is None:
        return "log", {"message": record.getMessage()}
    return event, dict(getattr(record, _FIELDS, {}))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module doc); never raises on an odd field value."""

    def __init__(self, neuron: str) -> None:
        super().__init__()
        self.neuron = neuron

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _event_of(record)
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "neuron": self.neuron,
            "event": event,
            "logger": record.name,
        }
        for key in sorted(fields):
            out.setdefault(key, fields[key])  # a field never overwrites the head keys
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, default=str, separators=(",", ":"))


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL neuron event key=value …`` (plain records: their message)."""

    converter = time.gmtime

    def __init__(self, neuron: str) -> None:
        super().__init__()
        self.neuron = neuron

    def format(self, record: logging.LogRecord) -> str:
        event, fields = _event_of(record)
        head = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {self.neuron}"
        if event == "log":
            line = f"{head} {record.name}: {fields['message']}"
        else:
            line = " ".join([head, event, *(f"{k}={v}" for k, v in fields.items())])
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` → ``human`` on a terminal, ``json`` otherwise."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {LOG_FORMATS}")
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "human" if isatty is not None and isatty() else "json"


def configure_logging(
    neuron: str, fmt: str = "auto", *, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Install (or replace) this package's one handler on the root logger; returns it."""
    stream = sys.stderr if stream is None else stream
    chosen = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(neuron) if chosen == "json" else HumanFormatter(neuron))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
