"""``crucible-miner``: register, train, eval, publish and serve a model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    load_specs,
    new_parser,
    run_command,
    spec_named,
    store_resolver,
    subcommands,
)
from crucible.neurons.lifecycle import announce_ready, stops_on_signals
from crucible.neurons.options import add_common_options, load_keys
from crucible.neurons.registration import register_hotkey

DEFAULT_MINER_PORT = 8091


@exits_cleanly
def cmd_register(args: argparse.Namespace) -> int:
    return register_hotkey(args)


def _leader_model(args: argparse.Namespace, spec):
    """The committed model of the top-incentive miner in this competition, verified like a validator."""
    from crucible.models.fetch import fetch_and_verify
    from crucible.protocol.errors import ModelRejected

    mg = chain_from(args).metagraph(args.netuid)
    for neuron in sorted(mg.neurons, key=lambda n: -n.incentive):
        if neuron.commitment is None or not neuron.commitment.data.startswith(spec.key + ":"):
            continue
        try:
            fetched = fetch_and_verify(
                neuron.commitment.data,
                neuron.hotkey,
                {spec.id: spec},
                store_resolver(args),
                args.cache_dir,
            )
        except ModelRejected:
            continue
        print(f"starting from the leader: uid {neuron.uid} ({neuron.commitment.data})")
        return fetched.loaded.model
    raise ModelRejected("missing", f"no verifiable committed model in {spec.key} to start from")


def _initial_model(args: argparse.Namespace, spec, eos_token_id: int, cluster=None):
    """The model to train; under torchrun rank 0 fetches a leader first, the others then read it
    from the cache (never several processes writing the same cache entry)."""
    from crucible.miner import distributed
    from crucible.models.build import ModelShape, build_config, build_model
    from crucible.models.io import load_model_dir

    if args.from_leader:
        cluster = cluster or distributed.SINGLE
        if not cluster.is_main:
            distributed.barrier(cluster)
        model = _leader_model(args, spec)
        if cluster.is_main:
            distributed.barrier(cluster)
        return model
    if args.init_from:
        return load_model_dir(args.init_from, spec.model).model
    shape = ModelShape(
        args.architecture,
        spec.model.vocab_size,
        spec.model.sequence_length,
        args.layers,
        args.hidden,
        args.heads,
        args.ffn,
    )
    return build_model(build_config(shape, eos_token_id=eos_token_id), seed=args.seed)


@exits_cleanly
def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.miner.distributed import cluster_from_env, process_group
    from crucible.miner.train import TrainConfig, train
    from crucible.scoring.sampling import select_samples
    from crucible.scoring.windows import load_eval_pool

    spec = spec_named(args)
    cluster = cluster_from_env()
    device = cluster.device(args.device)
    cfg = TrainConfig(
        out_dir=args.out, sequence_length=spec.model.sequence_length, batch_size=args.batch_size, grad_accum=args.grad_accum,
        lr=args.lr, warmup_steps=args.warmup, max_steps=args.steps, time_budget_s=args.time_budget,
        token_budget=args.token_budget, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        seed=args.seed, device=device, progress=not args.quiet, parallel=args.parallel,
    )  # fmt: skip
    cluster.rows(cfg.batch_size)  # an uneven split is refused before any process group starts
    if args.threads:
        torch.set_num_threads(args.threads)
    with process_group(cluster, device):
        tok = load_tokenizer(args.specs / spec.model.tokenizer)
        tokens = token_stream(args.data_dir, "train", tok)
        model = _initial_model(args, spec, tok.eos_token_id, cluster)
        pool = load_eval_pool(args.data_dir, tok)
        held_out = select_samples(pool, args.seed, 16, spec.model.sequence_length)
        windows = np.stack([pool.window(s, spec.model.sequence_length) for s in held_out])
        result = train(model, tokens, cfg, eval_windows=windows, cluster=cluster)
    if cluster.is_main:
        where = f" on {cluster.world} processes ({args.parallel})" if cluster.distributed else ""
        print(
            f"trained {result.steps} steps{where} ({result.tokens:,} tokens, {result.seconds:.0f} s); held-out loss {result.eval_loss:.4f}; model in {result.model_dir}"
        )
    return 0


@exits_cleanly
def cmd_publish(args: argparse.Namespace) -> int:
    from crucible.miner.publish import publish
    from crucible.store.hf import HuggingFaceStore
    from crucible.store.local import LocalStore

    keys = load_keys(args)
    store = HuggingFaceStore(args.hf_repo) if args.hf_repo else LocalStore(args.store_dir)
    result = publish(
        args.model, spec_named(args), store, chain_from(args), args.netuid, keys.hotkey
    )
    print(
        f"published {result.report.parameters:,} parameters; committed at block {result.block}:\n  {result.commitment}"
    )
    return 0


@exits_cleanly
def cmd_serve(args: argparse.Namespace) -> int:
    from crucible.miner.serve import ModelSlot, build_miner_server
    from crucible.miner.serving_loop import CommitmentWatcher, load_committed, register_endpoint
    from crucible.server import serve

    keys = load_keys(args)
    chain = chain_from(args)
    specs = load_specs(args)

    def load():
        return load_committed(
            chain,
            args.netuid,
            keys.hotkey.ss58_address,
            specs,
            args.specs,
            store_resolver(args),
            args.cache_dir,
        )

    slot = ModelSlot(load())
    register_endpoint(chain, args.netuid, keys.hotkey, args.external_ip or args.host, args.port)
    watcher = CommitmentWatcher(slot, args.watch_interval, load)
    watcher.start()
    app = build_miner_server(keys.hotkey, chain, args.netuid, slot).app
    with stops_on_signals("crucible-miner serve"):
        try:
            message = f"serving {slot.current.commitment} on http://{args.host}:{args.port}"
            serve(
                app,
                args.host,
                args.port,
                log_level="warning",
                on_started=lambda: announce_ready(message),
            )
        finally:
            watcher.stop()
    return 0


@exits_cleanly
def cmd_eval(args: argparse.Namespace) -> int:
    from crucible.miner.selfeval import self_evaluate
    from crucible.store.documents import DocumentStore

    keys = load_keys(args)
    report = self_evaluate(
        chain_from(args), args.netuid, spec_named(args), args.specs, args.data_dir, store_resolver(args), args.cache_dir,
        model_dir=args.model, hotkey=keys.hotkey.ss58_address, block=args.block,
        documents=DocumentStore(args.store_dir),
    )  # fmt: skip
    print(report.to_text())
    return 0


def _collab_line(report) -> str:
    ratio = report.dense_bytes / report.payload_bytes if report.payload_bytes else 0
    return (
        f"round {report.round_index}: {report.outcome} at block {report.block}; "
        f"{report.payload_bytes:,} bytes ({ratio:.0f}× less than fp32 Δ), "
        f"trained {report.train_seconds:.1f} s from {report.base_checkpoint[:12]}…"
    )


@exits_cleanly
def cmd_collab(args: argparse.Namespace) -> int:
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.miner.collab import CollabMiner, follow
    from crucible.miner.distributed import cluster_from_env, process_group
    from crucible.protocol.collab import load_collab_specs
    from crucible.protocol.errors import ConfigError
    from crucible.store.documents import DocumentStore
    from crucible.store.local import LocalStore

    specs = load_collab_specs(args.specs)
    if args.competition not in specs:
        raise ConfigError(f"no collab competition {args.competition!r} in {args.specs}",
                          fix=f"one of: {', '.join(sorted(specs)) or 'none'}")  # fmt: skip
    spec = specs[args.competition]
    keys = load_keys(args)
    cluster = cluster_from_env()
    device = cluster.device(args.device)
    tokens = token_stream(args.data_dir, "train", load_tokenizer(args.specs / spec.model.tokenizer))
    with process_group(cluster, device), stops_on_signals("crucible-miner collab"):
        miner = CollabMiner(
            chain_from(args), keys.hotkey, args.netuid, spec, LocalStore(args.store_dir),
            DocumentStore(args.store_dir), tokens, args.work_dir, device=device, cluster=cluster,
        )  # fmt: skip
        server = _serve_payloads(args, miner) if cluster.is_main else None
        try:
            if cluster.is_main:
                where = "" if server is None else f"; payloads on {server.url}/v1/objects"
                announce_ready(
                    f"collab miner {keys.hotkey.ss58_address[:10]}… on {spec.key}{where}"
                )
            for report in follow(miner, args.rounds or None, poll_s=args.poll):
                if cluster.is_main:
                    print(_collab_line(report), flush=True)
        finally:
            if server is not None:
                server.stop()
    return 0


def _serve_payloads(args: argparse.Namespace, miner):
    """The endpoint validators on other machines copy this miner's payloads from (on chain)."""
    if args.no_serve:
        return None
    from crucible.miner.payload_server import serve_payloads

    return serve_payloads(miner.chain, miner.netuid, miner.hotkey, miner.store, args.host,
                          args.port, args.external_ip)  # fmt: skip


def _command(add, name: str, fn, help_text: str) -> argparse.ArgumentParser:
    p = add(name, fn, help_text)
    add_common_options(p)
    add_store_options(p)
    p.add_argument("--competition", default="tiny", help="competition id (a spec in --specs)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="corpus folder")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".crucible/miner-cache"),
        help="where fetched models are kept",
    )
    return p


TRAIN_HELP = """train a model on the training split

Resumable: a run folder's checkpoint (every --checkpoint-every steps, and at the end) is picked
up by the same command after a crash or kill -9, and the resumed run ends with the same model.

Several processes (data parallel), one per core or GPU, with torchrun:

  torchrun --nproc-per-node 2 -m crucible.neurons.miner train --out runs/m1 --steps 2000
  torchrun --nproc-per-node 8 -m crucible.neurons.miner train --competition small \\
      --device cuda --parallel fsdp --batch-size 64 --hidden 768 --layers 12 --heads 12 --ffn 3072

--batch-size is the global batch (sequences per micro-step over all processes; a multiple of
--nproc-per-node): each process trains on its share, gradients are averaged, and the loss equals
one process's on the same batch. Only rank 0 writes checkpoints and the model; a checkpoint holds
full tensors, so a run resumes on any number of processes. CPUs use the gloo backend (torchrun
gives each process 1 thread unless OMP_NUM_THREADS or --threads says otherwise), GPUs NCCL with
one GPU per process (--device cuda becomes cuda:LOCAL_RANK). --parallel fsdp shards parameters,
gradients and AdamW moments per decoder layer: for models whose training state does not fit one
GPU several times over (the small competition on 8-16 GB cards).
"""


def _train_options(t: argparse.ArgumentParser) -> None:
    t.description = TRAIN_HELP
    t.add_argument("--out", type=Path, default=Path(".crucible/train"), help="run folder")
    start = t.add_mutually_exclusive_group()
    start.add_argument(
        "--init-from", type=Path, help="continue from a model directory (e.g. your last model)"
    )
    start.add_argument(
        "--from-leader",
        action="store_true",
        help="start from the top-incentive miner's committed model, verified like a validator",
    )
    t.add_argument(
        "--architecture",
        default="LlamaForCausalLM",
        choices=["LlamaForCausalLM", "GPT2LMHeadModel"],
        help="architecture of a new model",
    )
    t.add_argument("--layers", type=int, default=4, help="layers of a new model")
    t.add_argument("--hidden", type=int, default=192, help="hidden size of a new model")
    t.add_argument("--heads", type=int, default=6, help="attention heads of a new model")
    t.add_argument("--ffn", type=int, default=512, help="feed-forward size of a new model")
    t.add_argument("--steps", type=int, default=200, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    t.add_argument("--warmup", type=int, default=20, help="warm-up steps")
    t.add_argument("--time-budget", type=float, help="stop after this many seconds")
    t.add_argument("--token-budget", type=int, help="stop after this many training tokens")
    t.add_argument("--eval-every", type=int, default=50, help="held-out loss every N steps")
    t.add_argument(
        "--checkpoint-every", type=int, default=25, help="resumable checkpoint every N steps"
    )
    t.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    t.add_argument(
        "--parallel",
        default="ddp",
        choices=["ddp", "fsdp"],
        help="under torchrun: replicate the model (ddp) or shard it per layer (fsdp)",
    )
    t.add_argument(
        "--threads",
        type=int,
        help="torch threads per process (default: torch's, or OMP_NUM_THREADS)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible-miner", __doc__)
    add = subcommands(parser)
    _command(
        add,
        "register",
        cmd_register,
        "burned registration of the wallet's hotkey (signed by the coldkey)",
    )
    _train_options(_command(add, "train", cmd_train, "train a model on the training split"))
    p = _command(add, "publish", cmd_publish, "check, store and commit a model")
    p.add_argument("--model", type=Path, required=True, help="the model directory to publish")
    p.add_argument("--hf-repo", help="publish to this Hugging Face repo instead of the local store")
    s = _command(add, "serve", cmd_serve, "serve the committed model (info, generate, logprobs)")
    s.add_argument("--host", default="127.0.0.1", help="bind address")
    s.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CRUCIBLE_MINER_PORT", DEFAULT_MINER_PORT)),
        help="port (env CRUCIBLE_MINER_PORT)",
    )
    s.add_argument("--external-ip", help="the IP to advertise on chain (default: --host)")
    s.add_argument(
        "--watch-interval", type=float, default=12.0, help="seconds between commitment checks"
    )
    s.set_defaults(long_running=True)
    c = _command(add, "collab", cmd_collab, "train the shared model with everyone (collab rounds)")
    c.set_defaults(competition="collab")
    c.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0 = forever)")
    c.add_argument("--work-dir", type=Path, default=Path(".crucible/collab"),
                   help="error-feedback residual and fetched checkpoints")  # fmt: skip
    c.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    c.add_argument("--poll", type=float, default=2.0, help="seconds between chain polls")
    c.add_argument("--host", default="127.0.0.1", help="bind address of the payload endpoint")
    c.add_argument("--port", type=int, default=int(os.environ.get("CRUCIBLE_COLLAB_PORT", "0")),
                   help="payload endpoint port (0: any free one; env CRUCIBLE_COLLAB_PORT)")  # fmt: skip
    c.add_argument("--external-ip", help="the IP to advertise on chain (default: --host)")
    c.add_argument("--no-serve", action="store_true",
                   help="serve no payloads (validators read them from a shared --store-dir)")  # fmt: skip
    c.set_defaults(long_running=True)
    e = _command(add, "eval", cmd_eval, "score a model exactly as a validator would, vs the leader")
    e.add_argument(
        "--model", type=Path, help="a local model directory (default: your committed model)"
    )
    e.add_argument("--block", type=int, help="round at this block (default: the latest round)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
