"""Objects copied from another neuron's endpoint: real servers on 127.0.0.1, real stores.

The honest server is ``crucible.server.objects`` over a ``LocalStore``; the hostile ones are raw
sockets that lie about sizes, trickle bytes or send other content, since a peer can send anything.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crucible.protocol.errors import StoreError
from crucible.server.objects import ClientLimit, build_object_server
from crucible.server.runner import RunningServer, run_in_thread
from crucible.store.hashing import content_hash
from crucible.store.local import LocalStore
from crucible.store.peer import PeerLimits, http_get, object_url, pull_object

NAME = "payload.safetensors"
FAST = PeerLimits(timeout_s=2.0, deadline_s=1.0)


def _object(store: LocalStore, tmp: Path, raw: bytes, name: str = NAME) -> str:
    folder = tmp / f"obj-{len(raw)}-{raw[:4].hex()}"
    folder.mkdir()
    (folder / name).write_bytes(raw)
    return store.put(folder).content_hash


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LocalStore, RunningServer]]:
    store = LocalStore(tmp_path / "theirs")
    with run_in_thread(build_object_server(store, {NAME}, limit=ClientLimit(100, 100))) as running:
        yield store, running


def test_an_object_is_copied_once_and_rehashes_to_its_id(served, tmp_path: Path) -> None:
    theirs, server = served
    digest = _object(theirs, tmp_path, b"compressed pseudo-gradient" * 100)
    mine = LocalStore(tmp_path / "mine")
    assert pull_object(server.url, digest, NAME, mine, max_bytes=1 << 20) is True
    assert mine.exists("local", digest) and content_hash(mine.objects / digest) == digest
    assert pull_object(server.url, digest, NAME, mine, max_bytes=1 << 20) is False  # held already


def test_a_peer_sending_other_bytes_is_refused_and_nothing_is_kept(served, tmp_path: Path) -> None:
    theirs, server = served
    digest = _object(theirs, tmp_path, b"the committed payload")
    (theirs.objects / digest / NAME).write_bytes(b"something else entirely")  # the peer lies
    mine = LocalStore(tmp_path / "mine")
    with pytest.raises(StoreError, match="sent content") as err:
        pull_object(server.url, digest, NAME, mine, max_bytes=1 << 20)
    assert err.value.code == "hash_mismatch"
    assert not mine.exists("local", digest)
    assert not any(mine.objects.iterdir()) if mine.objects.exists() else True


def test_an_object_over_the_cap_is_refused_by_its_declared_length(served, tmp_path: Path) -> None:
    theirs, server = served
    digest = _object(theirs, tmp_path, b"x" * 5000)
    with pytest.raises(StoreError, match="declares 5000") as err:
        pull_object(server.url, digest, NAME, LocalStore(tmp_path / "mine"), max_bytes=4999)
    assert err.value.code == "too_large"


def test_missing_objects_files_and_bad_ids_each_get_their_code(served, tmp_path: Path) -> None:
    _, server = served
    mine = LocalStore(tmp_path / "mine")
    with pytest.raises(StoreError, match="HTTP 404") as err:
        pull_object(server.url, "ab" * 32, NAME, mine, max_bytes=100)
    assert err.value.code == "not_found"
    with pytest.raises(StoreError, match="not a content hash") as err:
        pull_object(server.url, "../../etc", NAME, mine, max_bytes=100)
    assert err.value.code == "bad_ref"
    with pytest.raises(StoreError, match="pickle-like") as err:
        pull_object(server.url, "ab" * 32, "weights.pt", mine, max_bytes=100)
    assert err.value.code == "pickle_refused"


def test_the_object_server_answers_only_the_files_it_was_told_to(served, tmp_path: Path) -> None:
    theirs, server = served
    secret = _object(theirs, tmp_path, b"not for strangers", name="model.safetensors")
    status, body = _get(object_url(server.url, secret, "model.safetensors"))
    assert status == 404 and body["error"]["code"] == "unexpected_file"
    status, body = _get(f"{server.url}/v1/objects/ZZ/{NAME}")
    assert status == 400 and body["error"]["code"] == "bad_ref"
    status, _ = _get(f"{server.url}/v1/objects/{'ab' * 32}/..%2F..%2Fstate.json")
    assert status == 404


def test_a_client_past_its_rate_is_told_so(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "theirs")
    with run_in_thread(build_object_server(store, {NAME}, limit=ClientLimit(0.01, 2))) as server:
        codes = [_get(f"{server.url}/health")[0] for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]


@contextmanager
def _raw_server(answer) -> Iterator[str]:
    """A one-connection-at-a-time TCP server whose ``answer(conn)`` writes anything at all."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                try:
                    answer(conn, stop)
                except OSError:  # the client hung up: what a cut-off looks like from here
                    pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_a_peer_sending_past_the_cap_without_a_length_is_cut_off() -> None:
    sent = []

    def flood(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for _ in range(200):  # 12.8 MB if nobody stops it
            conn.sendall(b"\0" * 65536)
            sent.append(1)

    with _raw_server(flood) as url, pytest.raises(StoreError, match="cut off") as err:
        http_get(url + "/x", max_bytes=100_000, limits=FAST)
    assert err.value.code == "too_large"
    assert len(sent) < 200


def test_a_peer_trickling_bytes_cannot_hold_the_reader_past_the_deadline() -> None:
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b"x")
            time.sleep(0.05)  # each byte well within the read timeout

    started = time.monotonic()
    with _raw_server(trickle) as url, pytest.raises(StoreError, match="at the deadline") as err:
        http_get(url + "/x", max_bytes=2_000_000, limits=FAST)
    assert err.value.code == "peer_slow"
    assert time.monotonic() - started < FAST.deadline_s + FAST.timeout_s + 1.0


def test_garbage_errors_and_closed_ports_are_store_errors() -> None:
    def garbage(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")

    def failing(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")

    with _raw_server(garbage) as url, pytest.raises(StoreError, match="malformed") as err:
        http_get(url + "/x", max_bytes=100, limits=FAST)
    assert err.value.code == "bad_answer"
    with _raw_server(failing) as url, pytest.raises(StoreError, match="HTTP 500") as err:
        http_get(url + "/x", max_bytes=100, limits=FAST)
    assert err.value.code == "peer_refused"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(StoreError, match="unreachable") as err:
        http_get(f"http://127.0.0.1:{port}/x", max_bytes=100, limits=FAST)
    assert err.value.code == "peer_unreachable"


def test_a_length_in_other_digits_than_ascii_is_no_length() -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: a peer's header must not crash a reader."""

    def superscript(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\nConnection: close\r\n\r\nhello")

    with _raw_server(superscript) as url:
        assert http_get(url + "/x", max_bytes=100, limits=FAST) == b"hello"
