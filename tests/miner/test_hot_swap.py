"""A publish is served without downtime: the watcher swaps the model while requests keep flowing."""

from __future__ import annotations

import time
from pathlib import Path

from crucible.client.transport import Target, query
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.serve import ModelSlot, ServedModel, build_miner_server
from crucible.miner.serving_loop import CommitmentWatcher
from crucible.models.build import tiny_model
from crucible.protocol.messages import INFO_PATH, ModelInfoResponse
from crucible.server import run_in_thread

ROOT = Path(__file__).resolve().parents[2]


def test_watcher_swaps_in_the_newly_committed_model_while_serving(node, neuron_factory) -> None:
    miner = neuron_factory("swap-miner")
    tok = load_tokenizer(specs_dir() / "tokenizers" / "crucible-bpe-8k-v1.json")
    served = [
        ServedModel(
            tiny_model(vocab_size=8192),
            tok,
            "tiny@1",
            "tiny@1:local:" + "a" * 64 + ":" + "1" * 32,
            1,
            64,
        )
    ]
    slot = ModelSlot(served[0])
    watcher = CommitmentWatcher(slot, 0.05, lambda: served[-1])
    watcher.start()
    with run_in_thread(build_miner_server(miner.hotkey, node, 1, slot).app) as running:
        target = Target(miner.hotkey.ss58_address, running.url)
        first = query(miner.hotkey, [target], INFO_PATH, None, ModelInfoResponse)[0]
        served.append(
            ServedModel(
                tiny_model(vocab_size=8192, seed=1),
                tok,
                "tiny@1",
                "tiny@1:local:" + "b" * 64 + ":" + "2" * 32,
                9,
                64,
            )
        )
        deadline = time.monotonic() + 10
        while slot.current is served[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        second = query(miner.hotkey, [target], INFO_PATH, None, ModelInfoResponse)[0]
    watcher.stop()
    assert first.ok and first.value.commitment.endswith("1" * 32)
    assert (
        second.ok and second.value.commitment.endswith("2" * 32) and second.value.commit_block == 9
    )
