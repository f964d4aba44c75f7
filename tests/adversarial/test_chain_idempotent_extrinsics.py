"""An extrinsic whose reply is lost executes exactly once.

A small HTTP-aware TCP proxy sits between ``LocalChain`` and a real node process. It forwards each
request and reads the node's full reply, then — for the first ``POST /extrinsic`` replies it is
told to spoil — drops the client's connection without relaying it (or holds it past the client's
read timeout). The node applied the call; the client cannot know. Before, the client re-signed
with a fresh nonce and the transfer ran twice; now it re-sends the same signed envelope, the node
answers the recorded result (``duplicate``), and balances prove one execution.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from crucible.chain.interface import DevFaucet, Transfer
from crucible.chain.local.client import LocalChain
from crucible.protocol.errors import ChainUnavailable
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair


def _read_message(sock: socket.socket) -> bytes | None:
    """One HTTP/1.1 message (head and Content-Length body), or None at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


class LossyProxy:
    """Forwards HTTP to ``upstream``; spoils the replies to the next ``spoil`` extrinsics."""

    def __init__(self, upstream_port: int, *, mode: str = "drop", hold_s: float = 0.0) -> None:
        self.upstream_port, self.mode, self.hold_s = upstream_port, mode, hold_s
        self.spoil = 0
        self.spoiled = 0
        self.extrinsic_posts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, client)

    def _should_spoil(self, request: bytes) -> bool:
        if not request.startswith(b"POST /extrinsic "):
            return False
        with self._lock:
            self.extrinsic_posts += 1
            if self.spoiled < self.spoil:
                self.spoiled += 1
                return True
        return False

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        try:
            while not self._stop.is_set():
                request = _read_message(client)
                if request is None:
                    return
                upstream.sendall(request)
                reply = _read_message(upstream)
                if reply is None:
                    return
                if self._should_spoil(request):
                    if self.mode == "hold":
                        time.sleep(self.hold_s)  # past the client's read timeout
                    return  # the node has answered; the client never hears it
                client.sendall(reply)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def node_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("idem"), keypair("owner-coldkey").ss58_address)
    proc.start()
    yield proc
    proc.stop()


def _funded(node_process: NodeProcess, name: str) -> tuple:
    direct = LocalChain(node_process.url)
    sender, dest = keypair(f"{name}-sender"), keypair(f"{name}-dest")
    direct.submit(DevFaucet(amount_rao=10 * TAO), sender).raise_for_failure()
    return direct, sender, dest


@pytest.mark.parametrize(("mode", "timeout_s"), [("drop", 5.0), ("hold", 0.5)])
def test_a_transfer_whose_reply_is_lost_executes_exactly_once(
    node_process: NodeProcess, mode: str, timeout_s: float
) -> None:
    direct, sender, dest = _funded(node_process, f"lost-{mode}")
    proxy = LossyProxy(node_process.port, mode=mode, hold_s=timeout_s * 3)
    proxy.start()
    client = LocalChain(proxy.url, timeout_s=timeout_s)
    try:
        client.genesis, client.nonce(sender.ss58_address)  # warm up: connection and nonce
        proxy.spoil = 1
        result = client.submit(Transfer(dest=dest.ss58_address, amount_rao=3 * TAO), sender)
        assert result.ok and result.duplicate and "already applied" in result.message
        assert proxy.spoiled == 1 and proxy.extrinsic_posts == 2  # the same envelope, twice
        assert direct.balance(dest.ss58_address) == 3 * TAO
        assert direct.balance(sender.ss58_address) == 7 * TAO
        assert direct.nonce(sender.ss58_address) == 2  # faucet + one transfer
        recorded = direct.extrinsic(result.digest)
        assert recorded is not None and recorded.block == result.block and recorded.ok
        # the client carries on normally with the next nonce
        again = client.submit(Transfer(dest=dest.ss58_address, amount_rao=TAO), sender)
        assert again.ok and not again.duplicate
        assert direct.balance(dest.ss58_address) == 4 * TAO
    finally:
        client.close()
        direct.close()
        proxy.stop()


def test_when_every_reply_is_lost_the_client_names_the_digest_and_never_re_signs(
    node_process: NodeProcess,
) -> None:
    direct, sender, dest = _funded(node_process, "all-lost")
    proxy = LossyProxy(node_process.port)
    proxy.start()
    client = LocalChain(proxy.url, timeout_s=5)
    try:
        client.genesis, client.nonce(sender.ss58_address)
        proxy.spoil = 100
        with pytest.raises(ChainUnavailable, match="may or may not have been applied") as info:
            client.submit(Transfer(dest=dest.ss58_address, amount_rao=2 * TAO), sender)
        assert proxy.extrinsic_posts == 4  # bounded re-sends of one envelope
        digest = info.value.fix.split("'")[1]
        recorded = direct.extrinsic(digest)
        assert recorded is not None and recorded.ok and recorded.call == "transfer"
        assert direct.balance(dest.ss58_address) == 2 * TAO  # once, not four times
        assert direct.nonce(sender.ss58_address) == 2
        assert direct.extrinsic("0x" + "00" * 32) is None
    finally:
        client.close()
        direct.close()
        proxy.stop()
