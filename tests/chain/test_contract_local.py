"""The Chain contract against both local backends: in-process node and a real node process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible.chain.interface import DevFaucet
from crucible.chain.local.client import LocalChain
from tests.chain.contract import ChainContract
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair


class TestInProcessNode(ChainContract):
    @pytest.fixture
    def chain(self, node):
        return node

    @pytest.fixture
    def advance(self, node):
        return node.step

    @pytest.fixture
    def funded_coldkey(self, node):
        coldkey = keypair("contract-coldkey")
        node.submit(DevFaucet(amount_rao=10_000 * TAO), coldkey).raise_for_failure()
        return coldkey


@pytest.fixture(scope="module")
def node_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("node"), keypair("owner-coldkey").ss58_address)
    proc.start()
    yield proc
    proc.stop()


class TestNodeOverHttp(ChainContract):
    @pytest.fixture
    def chain(self, node_process: NodeProcess) -> Iterator[LocalChain]:
        chain = LocalChain(node_process.url)
        yield chain
        chain.close()

    @pytest.fixture
    def advance(self, chain: LocalChain):
        return chain.step

    @pytest.fixture
    def funded_coldkey(self, chain: LocalChain, request: pytest.FixtureRequest):
        coldkey = keypair(f"http-coldkey-{request.node.name}")
        chain.submit(DevFaucet(amount_rao=10_000 * TAO), coldkey).raise_for_failure()
        return coldkey

    def register(self, chain, coldkey, name):
        # the node process lives for the whole module: make hotkeys unique per coldkey
        return super().register(chain, coldkey, f"{coldkey.ss58_address[:8]}-{name}")


def test_http_api_rejects_garbage_and_keeps_serving(node_process: NodeProcess) -> None:
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", node_process.port, timeout=5)
    for body in (b"garbage", b"[]", json.dumps({"call": "x"}).encode(), b"{" * 10):
        conn.request("POST", "/extrinsic", body=body)
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert response.status == 400 and payload["code"] == "malformed"
    conn.request("POST", "/extrinsic", body=b"x" * (300 * 1024))
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["code"] == "too_large"
    assert LocalChain(node_process.url).block() >= 0


def test_unreachable_node_is_a_clear_error(tmp_path: Path) -> None:
    from crucible.protocol.errors import ChainUnavailable
    from tests.chain.nodeproc import free_port

    with pytest.raises(ChainUnavailable, match="unreachable"):
        LocalChain(f"http://127.0.0.1:{free_port()}", timeout_s=1).block()
