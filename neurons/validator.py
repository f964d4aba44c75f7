"""``crucible-validator``: run (the evaluation loop), verify, explain, consensus, gateway."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    load_specs,
    store_resolver,
)
from crucible.neurons.options import add_common_options, load_keys, resolve


def build_runtime(args: argparse.Namespace):
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.scoring.windows import load_eval_pool
    from crucible.validator.loop import ValidatorConfig, ValidatorRuntime

    keys = load_keys(args)
    specs = load_specs(args)
    active = {k: s for k, s in specs.items() if s.active}
    tokenizers = {k: load_tokenizer(args.specs / s.model.tokenizer) for k, s in active.items()}
    pools = {k: load_eval_pool(args.data_dir, tokenizers[k]) for k in active}
    config = ValidatorConfig(
        args.netuid,
        args.work_dir,
        device=args.device,
        set_weights=not args.no_set_weights,
        progress=not args.quiet,
    )
    return ValidatorRuntime(
        chain_from(args), keys.hotkey, config, specs, tokenizers, pools, store_resolver(args)
    )


@exits_cleanly
def cmd_run(args: argparse.Namespace) -> int:
    from crucible.validator.loop import run_round
    from crucible.validator.state import load_state

    rt = build_runtime(args)
    state = load_state(rt.config.state_path)
    done = 0
    while True:
        outcome = run_round(rt, state)
        shown = ", ".join(
            f"uid {u}: {w:.3f}"
            for u, w in sorted(outcome.weights.items(), key=lambda kv: -kv[1])[:8]
        )
        print(
            f"block {outcome.block}: weights [{shown}] → {outcome.set_weights}; bundle {outcome.bundle_path}",
            flush=True,
        )
        for uid, why in sorted(outcome.rejections.items()):
            print(f"  uid {uid} rejected: {why}")
        done += 1
        if args.rounds and done >= args.rounds:
            return 0
        time.sleep(args.interval)


@exits_cleanly
def cmd_verify(args: argparse.Namespace) -> int:
    from crucible.validator.bundle import load_bundle, recompute

    try:
        bundle = load_bundle(args.bundle)
    except ValueError as exc:
        print(f"TAMPERED: {exc}")
        return 1
    report = recompute(bundle)
    if args.reevaluate:
        from crucible.validator.verify import reevaluate

        report.differences.extend(
            reevaluate(
                bundle, load_specs(args), args.specs, args.data_dir, args.work_dir / "models"
            )
        )
    print(
        "identical: the weights recompute bit for bit"
        if not report.differences
        else "DIFFERENCES:\n  " + "\n  ".join(report.differences)
    )
    return 0 if not report.differences else 1


@exits_cleanly
def cmd_explain(args: argparse.Namespace) -> int:
    from crucible.validator.bundle import load_bundle
    from crucible.validator.explain import explain
    from crucible.validator.state import load_state

    state = load_state(args.work_dir / "state.json")
    if state.last_bundle is None and args.bundle is None:
        print("no bundle yet: run a round first")
        return 1
    bundle = load_bundle(args.bundle or args.work_dir / "bundles" / state.last_bundle)
    result = explain(args.uid, bundle, state)
    print(json.dumps(result.to_json(), indent=1) if args.json else result.to_text())
    return 0


@exits_cleanly
def cmd_consensus(args: argparse.Namespace) -> int:
    from crucible.validator.bundle import load_bundle
    from crucible.validator.explain import consensus_distance
    from crucible.validator.state import load_state

    state = load_state(args.work_dir / "state.json")
    bundle = load_bundle(args.work_dir / "bundles" / state.last_bundle)
    mg = chain_from(args).metagraph(args.netuid)
    keys = load_keys(args)
    others = {
        uid: {j: v / 65535 for j, v in row.items()}
        for uid, row in mg.weights.items()
        if mg.neurons[uid].hotkey != keys.hotkey.ss58_address
    }
    stakes = {n.uid: float(n.stake_rao) for n in mg.neurons if n.validator_permit}
    trust = consensus_distance(bundle.weights, others, stakes)
    print(
        f"expected validator trust of the last bundle's weights against {len(others)} other validators: {trust:.4f}"
    )
    return 0


@exits_cleanly
def cmd_gateway(args: argparse.Namespace) -> int:
    from crucible.client.gateway import ApiKeys, build_gateway
    from crucible.client.subnet import Subnet
    from crucible.server import serve

    keys = load_keys(args)
    subnet = Subnet(
        chain_from(args), args.netuid, keys.hotkey, top_k=args.top_k, metagraph_ttl_s=12.0
    )
    app = build_gateway(
        subnet, ApiKeys.from_file(args.api_keys), usage_log=args.usage_log, rate_per_s=args.rate
    )
    print(f"OpenAI-compatible gateway on http://{args.host}:{args.port}/v1", flush=True)
    serve(app, args.host, args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crucible-validator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        add_common_options(p)
        add_store_options(p)
        p.add_argument("--work-dir", type=Path, default=Path(".crucible/validator"))
        p.add_argument("--data-dir", type=Path, default=Path("data"))
        p.set_defaults(fn=fn)
        return p

    r = command(
        "run", cmd_run, "the evaluation loop: evaluate, compete, set weights, write bundles"
    )
    r.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0 = forever)")
    r.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    r.add_argument("--device", default="cpu")
    r.add_argument("--no-set-weights", action="store_true")
    r.add_argument("--quiet", action="store_true")
    v = command(
        "verify", cmd_verify, "recompute the weights of a score bundle and report differences"
    )
    v.add_argument("bundle", type=Path)
    v.add_argument(
        "--reevaluate", action="store_true", help="also recompute the losses from the stored models"
    )
    e = command("explain", cmd_explain, "why a uid has its weight")
    e.add_argument("uid", type=int)
    e.add_argument("--bundle", type=Path)
    e.add_argument("--json", action="store_true")
    command(
        "consensus",
        cmd_consensus,
        "how far the last weights are from the other validators' consensus",
    )
    g = command(
        "gateway", cmd_gateway, "an OpenAI-compatible /v1/completions in front of the best miners"
    )
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--api-keys", type=Path, required=True, help='JSON file {"key": "name", …}')
    g.add_argument("--usage-log", type=Path, default=Path(".crucible/gateway-usage.jsonl"))
    g.add_argument("--rate", type=float, default=2.0, help="requests per second per API key")
    g.add_argument("--top-k", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve(args)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
