"""``torchrun --nproc-per-node 2 -m crucible.neurons.miner collab``: two CPU processes (gloo)
train one miner's round together; rank 0 alone commits and stores, and the payload is the one a
single process computes for the same round (the same top-k picks, up to float rounding), and
rank 0 keeps the inner optimizer's moments for the next round."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crucible.collab.codec import decode_payload, index_overlap
from crucible.collab.payload_store import fetch_payload
from crucible.collab.shared_model import genesis_params, param_shapes
from crucible.corpus.dataset import token_stream
from crucible.corpus.tokenizer import load_tokenizer
from crucible.miner.collab import MOMENTS_FILE, CollabMiner
from crucible.miner.collab_train import InnerMoments
from crucible.protocol.collab import PayloadCommitment
from crucible.store.documents import DocumentStore
from crucible.store.local import LocalStore
from tests.chain.nodeproc import NodeProcess
from tests.conftest import keypair
from tests.scenario.collab_procs import FIXTURE, CollabSubnet, write_specs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_train_one_miners_round_and_rank_zero_alone_submits(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "chain", keypair("owner-coldkey").ss58_address,
                       "--commitment-rate-limit", "1")  # fmt: skip
    chain = node.start()
    try:
        net = CollabSubnet(tmp_path, node, chain)
        uid = net.register("ddp")
        spec = write_specs(net.specs, keypair("nobody").ss58_address)  # no aggregator: checkpoint 0
        r = spec.round_of(chain.block()) + 1
        net.step_to(spec.window(r)[0])
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                   "-m", "crucible.neurons.miner", "collab", "--rounds", "1", "--poll", "0.2",
                   "--work-dir", str(tmp_path / "ddp"), *net._common()]  # fmt: skip
        env = net._env("ddp") | {"PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert done.stdout.count(f"round {r}: committed") == 1, done.stdout  # rank 0 only
        raw_commitment = chain.metagraph(1).neurons[uid].commitment.data
        c = PayloadCommitment.parse(raw_commitment)
        assert c.round_index == r and c.matches(net.keys["ddp"].ss58_address)
        shapes = param_shapes(genesis_params(spec))
        store = LocalStore(net.store_dir)
        raw = fetch_payload(store, "local", c.content_hash, tmp_path / "fetched", 1 << 24)
        meta, two = decode_payload(raw, shapes, spec.codec)
        # the same round in one process, from the same checkpoint 0 and assignment
        tokens = token_stream(FIXTURE, "train", load_tokenizer(net.specs / spec.model.tokenizer))
        one_miner = CollabMiner(chain, net.keys["ddp"], 1, spec, store, DocumentStore(net.store_dir),
                                tokens, tmp_path / "one")  # fmt: skip
        delta, _ = one_miner.train_round(r, meta.base_checkpoint)
        one = one_miner.feedback.step(delta)
        assert index_overlap(one, two) > 0.99
        # rank 0 kept the inner AdamW's moments for the next round: the ones one process has
        kept = InnerMoments.load(tmp_path / "ddp" / MOMENTS_FILE, shapes).tensors
        assert float(kept["model.norm.weight.step"]) == spec.inner_steps
        ours = one_miner.moments.tensors
        assert all(
            torch.allclose(kept[k], ours[k], rtol=1e-3, atol=1e-7)
            for k in ours
            if k.endswith("exp_avg_sq")
        )
    finally:
        chain.close()
        node.stop()
