"""``crucible-client ask --stream``: a real CLI process, a real node process, a real miner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible.chain.interface import BurnedRegister, DevFaucet, ServeEndpoint, SetCommitment
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.models.build import tiny_model
from crucible.server import run_in_thread
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO, keypair

ROOT = Path(__file__).resolve().parents[2]
COMMITMENT = "tiny@1:local:" + "c" * 64 + ":" + "d" * 32


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Path]]:
    import bittensor as bt

    tmp = tmp_path_factory.mktemp("cli-stream")
    node = NodeProcess(tmp / "chain", keypair("owner-coldkey").ss58_address)
    chain = node.start()
    coldkey, hotkey = keypair("cli-stream-miner-c"), keypair("cli-stream-miner-h")
    chain.submit(DevFaucet(amount_rao=1000 * TAO), coldkey).raise_for_failure()
    chain.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey).raise_for_failure()
    chain.submit(SetCommitment(netuid=1, data=COMMITMENT), hotkey).raise_for_failure()
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    served = ServedModel(tiny_model(vocab_size=8192), tok, "tiny@1", COMMITMENT, 1, 64)
    miner = run_in_thread(build_miner_server(hotkey, chain, 1, ModelSlot(served)).app)
    chain.submit(
        ServeEndpoint(netuid=1, ip="127.0.0.1", port=miner.port), hotkey
    ).raise_for_failure()
    wallets = tmp / "wallets"
    wallet = bt.Wallet(name="reader", hotkey="default", path=str(wallets))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    try:
        yield node, wallets
    finally:
        miner.stop()
        node.stop()


def _ask(node: NodeProcess, wallets: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "BT_CHAIN_ENDPOINT": node.url, "BT_WALLET_PATH": str(wallets),
        "BT_WALLET_NAME": "reader",
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "crucible.neurons.client", "ask", "Thou art", "--max-tokens", "6",
         *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_ask_stream_prints_the_answer_as_it_comes_and_who_gave_it(subnet) -> None:
    node, wallets = subnet
    streamed = _ask(node, wallets, "--stream")
    whole = _ask(node, wallets)
    assert streamed.returncode == 0 and whole.returncode == 0, streamed.stderr + whole.stderr
    assert streamed.stdout.strip() == whole.stdout.strip() != ""
    assert "uid 0" in streamed.stderr and "6 tokens (length)" in streamed.stderr
    assert COMMITMENT in streamed.stderr
