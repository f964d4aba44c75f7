"""``crucible-miner``: register, train, publish, serve, eval."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    load_specs,
    store_resolver,
)
from crucible.neurons.options import add_common_options, describe, load_keys, resolve


def _spec(args: argparse.Namespace):
    specs = load_specs(args)
    if args.competition not in specs:
        from crucible.protocol.errors import ConfigError

        raise ConfigError(f"no competition {args.competition!r}; known: {sorted(specs)}")
    return specs[args.competition]


@exits_cleanly
def cmd_register(args: argparse.Namespace) -> int:
    from crucible.chain.interface import BurnedRegister

    keys = load_keys(args, need_coldkey=True)
    result = chain_from(args).submit(
        BurnedRegister(netuid=args.netuid, hotkey=keys.hotkey.ss58_address), keys.coldkey
    )
    result.raise_for_failure()
    print(
        f"registered {keys.hotkey.ss58_address} as uid {result.data.get('uid')} (burned {result.data.get('burn_rao', 0) / 1e9:.4f} TAO)"
    )
    return 0


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


@exits_cleanly
def cmd_train(args: argparse.Namespace) -> int:
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.miner.train import TrainConfig, train
    from crucible.models.build import ModelShape, build_config, build_model
    from crucible.models.io import load_model_dir
    from crucible.scoring.windows import load_eval_pool

    spec = _spec(args)
    tok = load_tokenizer(args.specs / spec.model.tokenizer)
    tokens = token_stream(args.data_dir, "train", tok)
    if args.from_leader:
        model = _leader_model(args, spec)
    elif args.init_from:
        model = load_model_dir(args.init_from, spec.model).model
    else:
        shape = ModelShape(
            args.architecture,
            spec.model.vocab_size,
            spec.model.sequence_length,
            args.layers,
            args.hidden,
            args.heads,
            args.ffn,
        )
        model = build_model(build_config(shape, eos_token_id=tok.eos_token_id), seed=args.seed)
    pool = load_eval_pool(args.data_dir, tok)
    from crucible.scoring.sampling import select_samples

    held_out = select_samples(pool, args.seed, 16, spec.model.sequence_length)
    import numpy as np

    windows = np.stack([pool.window(s, spec.model.sequence_length) for s in held_out])
    cfg = TrainConfig(
        out_dir=args.out, sequence_length=spec.model.sequence_length, batch_size=args.batch_size, grad_accum=args.grad_accum,
        lr=args.lr, warmup_steps=args.warmup, max_steps=args.steps, time_budget_s=args.time_budget,
        token_budget=args.token_budget, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        seed=args.seed, device=args.device, progress=not args.quiet,
    )  # fmt: skip
    result = train(model, tokens, cfg, eval_windows=windows)
    print(
        f"trained {result.steps} steps ({result.tokens:,} tokens, {result.seconds:.0f} s); held-out loss {result.eval_loss:.4f}; model in {result.model_dir}"
    )
    return 0


@exits_cleanly
def cmd_publish(args: argparse.Namespace) -> int:
    from crucible.miner.publish import publish
    from crucible.store.hf import HuggingFaceStore
    from crucible.store.local import LocalStore

    keys = load_keys(args)
    store = HuggingFaceStore(args.hf_repo) if args.hf_repo else LocalStore(args.store_dir)
    result = publish(args.model, _spec(args), store, chain_from(args), args.netuid, keys.hotkey)
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
    print(f"serving {slot.current.commitment} on {args.host}:{args.port}", flush=True)
    try:
        serve(
            build_miner_server(keys.hotkey, chain, args.netuid, slot).app,
            args.host,
            args.port,
            log_level="warning",
        )
    finally:
        watcher.stop()
    return 0


@exits_cleanly
def cmd_eval(args: argparse.Namespace) -> int:
    from crucible.miner.selfeval import self_evaluate

    keys = load_keys(args)
    report = self_evaluate(
        chain_from(args), args.netuid, _spec(args), args.specs, args.data_dir, store_resolver(args), args.cache_dir,
        model_dir=args.model, hotkey=keys.hotkey.ss58_address, block=args.block,
    )  # fmt: skip
    print(report.to_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crucible-miner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        add_common_options(p)
        add_store_options(p)
        p.add_argument("--competition", default="tiny")
        p.add_argument("--data-dir", type=Path, default=Path("data"))
        p.add_argument("--cache-dir", type=Path, default=Path(".crucible/miner-cache"))
        p.set_defaults(fn=fn)
        return p

    command(
        "register",
        cmd_register,
        "burned registration of the wallet's hotkey (signed by the coldkey)",
    )
    t = command("train", cmd_train, "train a model on the training split")
    t.add_argument("--out", type=Path, default=Path(".crucible/train"))
    t.add_argument(
        "--init-from", type=Path, help="continue from a model directory (e.g. the leader's)"
    )
    t.add_argument(
        "--architecture",
        default="LlamaForCausalLM",
        choices=["LlamaForCausalLM", "GPT2LMHeadModel"],
    )
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--hidden", type=int, default=192)
    t.add_argument("--heads", type=int, default=6)
    t.add_argument("--ffn", type=int, default=512)
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--warmup", type=int, default=20)
    t.add_argument("--time-budget", type=float, help="seconds")
    t.add_argument("--token-budget", type=int)
    t.add_argument("--eval-every", type=int, default=50)
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true")
    p = command("publish", cmd_publish, "check, store and commit a model")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--hf-repo", help="publish to this Hugging Face repo instead of the local store")
    s = command("serve", cmd_serve, "serve the committed model (info, generate, logprobs)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8091)
    s.add_argument("--external-ip", help="the IP to advertise on chain (default: --host)")
    s.add_argument("--watch-interval", type=float, default=12.0)
    e = command("eval", cmd_eval, "score a model exactly as a validator would, against the leader")
    e.add_argument(
        "--model", type=Path, help="a local model directory (default: your committed model)"
    )
    e.add_argument("--block", type=int, help="round at this block (default: the latest round)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolved = resolve(args)
    if getattr(args, "verbose", False):
        print(describe(resolved))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
