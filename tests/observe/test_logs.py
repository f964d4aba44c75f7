"""The log formatters: one JSON object per line with stable keys; a readable line on a tty."""

from __future__ import annotations

import io
import json
import logging

import pytest

from crucible.observe.logs import (
    HumanFormatter,
    JsonFormatter,
    configure_logging,
    log_event,
    resolve_format,
)

HEAD = ["ts", "level", "neuron", "event", "logger"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def captured():
    """A logger whose records go through the JSON formatter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("crucible-test"))
    logger = logging.getLogger("tests.observe.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_each_event_is_one_json_line_with_stable_keys(captured) -> None:
    logger, stream = captured
    log_event(logger, "extrinsic_refused", call="set_weights", code="bad_nonce", block=7)
    log_event(logger, "block", block=8, extrinsics=0)
    first, second = _lines(stream)
    assert list(first) == [*HEAD, "block", "call", "code"]  # head keys, then fields by name
    assert first["event"] == "extrinsic_refused" and first["code"] == "bad_nonce"
    assert first["level"] == "info" and first["neuron"] == "crucible-test"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert list(second) == [*HEAD, "block", "extrinsics"]


def test_newlines_and_non_ascii_stay_on_one_escaped_line(captured) -> None:
    logger, stream = captured
    log_event(logger, "model_rejected", reason="bad\nconfig", message="Grüße ✓\r\n{")
    raw = stream.getvalue()
    assert raw.count("\n") == 1 and raw.isascii()
    assert "\\n" in raw and "\\u2713" in raw
    (line,) = _lines(stream)
    assert line["reason"] == "bad\nconfig" and line["message"] == "Grüße ✓\r\n{"


def test_a_field_cannot_overwrite_the_head_keys_and_odd_values_serialise(captured) -> None:
    logger, stream = captured
    log_event(logger, "weird", event="spoofed", ts="0", neuron="x", when=object, path=b"\xff")
    (line,) = _lines(stream)
    assert line["event"] == "weird" and line["neuron"] == "crucible-test" and line["ts"] != "0"
    assert line["when"] == "<class 'object'>" and line["path"] == "b'\\xff'"


def test_an_exception_is_logged_with_its_type(captured) -> None:
    logger, stream = captured
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("lookup failed for %s", "uid 3")
    (line,) = _lines(stream)
    assert line["event"] == "log" and line["message"] == "lookup failed for uid 3"
    assert line["level"] == "error" and line["exc_type"] == "KeyError"
    assert "Traceback" in line["exc"] and "missing" in line["exc"]


def test_auto_is_human_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", _Tty()) == "human"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Tty()) == "json"
    with pytest.raises(ValueError, match="is not one of"):
        resolve_format("xml", io.StringIO())


def test_configure_logging_installs_one_handler_and_writes_human_lines_on_a_tty() -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    tty = _Tty()
    try:
        configure_logging("crucible-validator", "auto", stream=io.StringIO())
        handler = configure_logging("crucible-validator", "auto", stream=tty)
        ours = [h for h in root.handlers if h.get_name() == handler.get_name()]
        assert ours == [handler]  # configuring again replaces, never duplicates
        assert isinstance(handler.formatter, HumanFormatter)
        log_event(logging.getLogger("crucible.validator.loop"), "round_finished", block=12)
        logging.getLogger("crucible.x").warning("plain %d", 5)
    finally:
        for h in [h for h in root.handlers if h not in before[0]]:
            root.removeHandler(h)
        root.setLevel(before[1])
    first, second = tty.getvalue().splitlines()
    assert first.endswith("INFO    crucible-validator round_finished block=12")
    assert second.endswith("WARNING crucible-validator crucible.x: plain 5")
