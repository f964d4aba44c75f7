"""``crucible-validator``: run (the evaluation loop), verify, explain, consensus, gateway."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

from crucible.neurons.common import (
    add_store_options,
    chain_from,
    exits_cleanly,
    load_specs,
    new_parser,
    run_command,
    store_resolver,
    subcommands,
)
from crucible.neurons.lifecycle import announce_ready, stops_on_signals
from crucible.neurons.options import add_common_options, load_keys
from crucible.neurons.registration import register_hotkey

DEFAULT_GATEWAY_PORT = 8000
DEFAULT_VALIDATOR_PORT = 8092


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
    from crucible.scoring.releases import ReleaseLoader
    from crucible.scoring.sources import ShardedPools
    from crucible.store.documents import DocumentStore

    documents = DocumentStore(args.store_dir)
    releases = {k: ReleaseLoader(documents, tokenizers[k], s) for k, s in active.items()}
    sharded = {
        k: ShardedPools(s, tokenizers[k], base_dir=args.data_dir)
        for k, s in active.items() if s.data.uses("sharded")
    }  # fmt: skip
    return ValidatorRuntime(
        chain_from(args), keys.hotkey, config, specs, tokenizers, pools, store_resolver(args),
        documents=documents, releases=releases, sharded=sharded, collab=_collab_runtimes(args),
    )  # fmt: skip


def _collab_runtimes(args: argparse.Namespace) -> dict:
    """Each active collab competition with its token streams (train: assignments and the proof
    of own data; eval: the held-out windows), unless --no-collab."""
    if args.no_collab:
        return {}
    from crucible.corpus.dataset import token_stream
    from crucible.corpus.tokenizer import load_tokenizer
    from crucible.protocol.collab import load_collab_specs
    from crucible.validator.collab import CollabRuntime

    out = {}
    for key, spec in load_collab_specs(args.specs).items():
        if spec.active:
            tok = load_tokenizer(args.specs / spec.model.tokenizer)
            streams = (token_stream(args.data_dir, split, tok) for split in ("train", "eval"))
            out[key] = CollabRuntime(spec, *streams)
    return out


@exits_cleanly
def cmd_register(args: argparse.Namespace) -> int:
    return register_hotkey(args)


def _print_outcome(outcome) -> None:
    shown = ", ".join(
        f"uid {u}: {w:.3f}" for u, w in sorted(outcome.weights.items(), key=lambda kv: -kv[1])[:8]
    )
    print(f"block {outcome.block}: weights [{shown}] → {outcome.set_weights}", flush=True)
    if outcome.bundle_path is not None:
        print(f"  bundle {outcome.bundle_path.name}: {outcome.published}", flush=True)
    for uid, why in sorted(outcome.rejections.items()):
        print(f"  uid {uid} rejected: {why}", flush=True)


def _note(text: str) -> None:
    print(f"  {text}", flush=True)


@exits_cleanly
def cmd_run(args: argparse.Namespace) -> int:
    from crucible.validator.lock import WorkDirLock

    with WorkDirLock(args.work_dir):  # one validator process per work dir
        return _run_loop(args)


def _run_loop(args: argparse.Namespace) -> int:
    from crucible.server.objects import ClientLimit
    from crucible.validator.service import ServiceConfig, run_service, serve_bundles
    from crucible.validator.state import load_state

    limit = ClientLimit(args.endpoint_rate, args.endpoint_burst)  # refused before any work
    rt = build_runtime(args)
    state = load_state(rt.config.state_path)
    server = (
        None
        if args.no_serve
        else serve_bundles(rt, state, args.host, args.port, args.external_ip or args.host, limit)
    )
    where = "" if server is None else f"; bundles on {server.url}/v1/bundles"
    idle = threading.Event()  # never set: its wait is an interruptible sleep
    with stops_on_signals("crucible-validator run", f"state in {rt.config.state_path}"):
        try:
            announce_ready(f"validator {rt.keypair.ss58_address} on netuid {args.netuid}{where}")
            config = ServiceConfig(interval_s=args.interval, tick_s=args.tick, rounds=args.rounds)
            run_service(rt, state, config, on_round=_print_outcome, on_note=_note, sleep=idle.wait)
        finally:
            if server is not None:
                server.stop()
    return 0


@exits_cleanly
def cmd_status(args: argparse.Namespace) -> int:
    from crucible.validator.state import load_state
    from crucible.validator.status import describe_status

    state = load_state(args.work_dir / "state.json")
    print(
        describe_status(state, chain_from(args), args.netuid, load_keys(args).hotkey.ss58_address)
    )
    return 0


def _last_bundle_path(args: argparse.Namespace) -> Path:
    """``--bundle``/the positional file if given, else the last bundle this validator wrote."""
    from crucible.protocol.errors import ConfigError
    from crucible.validator.state import load_state

    if getattr(args, "bundle", None) is not None:
        return args.bundle
    state = load_state(args.work_dir / "state.json")
    if state.last_bundle is None:
        raise ConfigError(
            f"no bundle in {args.work_dir} yet",
            code="no_bundle",
            fix="run a round first (`crucible-validator run --rounds 1`) or name a bundle file",
        )
    return args.work_dir / "bundles" / state.last_bundle


def _reevaluate_collab(args: argparse.Namespace, bundle) -> list[str]:
    """Each collab round of the bundle rerun from the store's payloads and checkpoints."""
    from crucible.validator.collab_verify import reevaluate_bundle_collab

    return reevaluate_bundle_collab(
        bundle, args.specs, args.data_dir, store_resolver(args)("local")
    )


@exits_cleanly
def cmd_verify(args: argparse.Namespace) -> int:
    from crucible.store.documents import DocumentStore
    from crucible.validator.bundle import TamperedBundle, load_bundle, recompute
    from crucible.validator.verify import check_against_chain, reevaluate

    try:
        bundle = load_bundle(_last_bundle_path(args))
    except TamperedBundle as exc:
        print(f"TAMPERED: {exc.message}")
        return 1
    print(f"signature: ok (signed by validator {bundle.validator_hotkey})")
    differences = recompute(bundle).differences
    if args.reevaluate:
        models = args.work_dir / "models"
        differences += reevaluate(
            bundle, load_specs(args), args.specs, args.data_dir, models, store_resolver(args),
            DocumentStore(args.store_dir),
        )  # fmt: skip
        differences += _reevaluate_collab(args, bundle)
    print(
        "identical: the weights recompute bit for bit"
        if not differences
        else "DIFFERENCES:\n  " + "\n  ".join(differences)
    )
    if not args.no_chain:
        found = check_against_chain(bundle, chain_from(args))
        if not found.problems and not found.unverifiable:
            print("chain: the inputs and the weights are the chain's")
        for note in found.unverifiable:
            print(f"chain: cannot check: {note}")
        if found.problems:
            print("AGAINST THE CHAIN:\n  " + "\n  ".join(found.problems))
        differences += found.problems
    return 0 if not differences else 1


@exits_cleanly
def cmd_explain(args: argparse.Namespace) -> int:
    from crucible.protocol.errors import ChainError
    from crucible.validator.bundle import load_bundle
    from crucible.validator.explain import explain
    from crucible.validator.state import load_state

    state = load_state(args.work_dir / "state.json")
    bundle = load_bundle(_last_bundle_path(args))
    try:
        mg = chain_from(args).metagraph(args.netuid)
    except ChainError:
        mg = None  # explain works from the bundle alone; the chain only adds what it paid
    result = explain(args.uid, bundle, state, mg)
    print(json.dumps(result.to_json(), indent=1) if args.json else result.to_text())
    return 0


@exits_cleanly
def cmd_consensus(args: argparse.Namespace) -> int:
    """The vtrust the exact Yuma epoch predicts for this validator's last bundle, against the
    other permit holders' published bundles (or, without one, their weights on chain)."""
    from crucible.store.documents import DocumentStore
    from crucible.validator.audit import predicted_vtrust
    from crucible.validator.bundle import TamperedBundle, load_bundle, parse_bundle
    from crucible.validator.bundle_fetch import first_of, http_source, store_source

    mine = load_bundle(_last_bundle_path(args))
    mg = chain_from(args).metagraph(args.netuid)
    source = first_of(http_source(), store_source(DocumentStore(args.store_dir)))
    rows: dict[int, dict[int, int]] = {}
    origin: dict[int, str] = {}
    for n in (n for n in mg.neurons if n.validator_permit):
        if n.hotkey == mine.validator_hotkey:
            rows[n.uid], origin[n.uid] = dict(mine.weights_u16), "this validator's last bundle"
            continue
        raw = source(n, "latest")
        try:
            bundle = parse_bundle(raw) if raw is not None else None
        except TamperedBundle:
            bundle = None
        if bundle is not None and bundle.validator_hotkey == n.hotkey:
            rows[n.uid], origin[n.uid] = dict(bundle.weights_u16), "its published bundle"
        elif mg.weights.get(n.uid):
            rows[n.uid], origin[n.uid] = dict(mg.weights[n.uid]), "its weights on chain"
    trust = predicted_vtrust(rows, mg)
    print("predicted vtrust (exact Yuma over current stake), validators with a permit:")
    for uid, value in sorted(trust.items()):
        print(f"  uid {uid}: {value:.4f}  ({origin[uid]})")
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
    with stops_on_signals("crucible-validator gateway"):
        message = f"OpenAI-compatible gateway on http://{args.host}:{args.port}/v1"
        serve(
            app,
            args.host,
            args.port,
            log_level="warning",
            on_started=lambda: announce_ready(message),
        )
    return 0


def _command(add, name: str, fn, help_text: str) -> argparse.ArgumentParser:
    p = add(name, fn, help_text)
    add_common_options(p)
    add_store_options(p)
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(".crucible/validator"),
        help="state, bundles and the model cache",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="corpus folder")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible-validator", __doc__)
    add = subcommands(parser)
    _command(
        add, "register", cmd_register, "burned registration of the wallet's hotkey (coldkey signs)"
    )
    r = _command(
        add, "run", cmd_run, "the evaluation loop: evaluate, compete, set weights, write bundles"
    )
    r.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0 = forever)")
    r.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    r.add_argument(
        "--tick", type=float, default=6.0, help="seconds between reveal attempts (a block is 12 s)"
    )
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    r.add_argument("--no-set-weights", action="store_true", help="evaluate only (a dry run)")
    r.add_argument("--no-collab", action="store_true", help="score the model competitions only")
    r.add_argument("--host", default="127.0.0.1", help="bind address of the bundle endpoint")
    r.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CRUCIBLE_VALIDATOR_PORT", DEFAULT_VALIDATOR_PORT)),
        help="port of the public bundle endpoint (env CRUCIBLE_VALIDATOR_PORT; 0: any free port)",
    )
    r.add_argument("--external-ip", help="the IP to advertise on chain (default: --host)")
    r.add_argument("--no-serve", action="store_true", help="do not serve the bundles over HTTP")
    r.add_argument(
        "--endpoint-rate",
        type=float,
        default=5.0,
        help="requests a second each client address may make of the bundle endpoint (miners "
        "behind one address share it; raise it for many)",
    )
    r.add_argument(
        "--endpoint-burst", type=int, default=20, help="requests a client address may make at once"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(long_running=True)
    v = _command(
        add, "verify", cmd_verify, "recompute the weights of a score bundle and report differences"
    )
    v.add_argument(
        "bundle", type=Path, nargs="?", default=None, help="a bundle file (default: the last one)"
    )
    v.add_argument(
        "--reevaluate", action="store_true", help="also recompute the losses from the stored models"
    )
    v.add_argument(
        "--no-chain", action="store_true", help="skip the checks against the chain (offline)"
    )
    e = _command(add, "explain", cmd_explain, "why a uid has its weight")
    e.add_argument("uid", type=int, help="the uid to explain")
    e.add_argument("--bundle", type=Path, help="a bundle file (default: the last one)")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    _command(
        add,
        "status",
        cmd_status,
        "what the last round did, what landed on chain, pending reveals and anchors",
    )
    _command(
        add,
        "consensus",
        cmd_consensus,
        "how far the last weights are from the other validators' consensus",
    )
    g = _command(
        add,
        "gateway",
        cmd_gateway,
        "an OpenAI-compatible /v1/completions in front of the best miners",
    )
    g.add_argument("--host", default="127.0.0.1", help="bind address")
    g.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CRUCIBLE_GATEWAY_PORT", DEFAULT_GATEWAY_PORT)),
        help="port (env CRUCIBLE_GATEWAY_PORT)",
    )
    g.add_argument("--api-keys", type=Path, required=True, help='JSON file {"key": "name", …}')
    g.add_argument(
        "--usage-log",
        type=Path,
        default=Path(".crucible/gateway-usage.jsonl"),
        help="one JSON line per request",
    )
    g.add_argument("--rate", type=float, default=2.0, help="requests per second per API key")
    g.add_argument("--top-k", type=int, default=3, help="miners asked per request")
    g.set_defaults(long_running=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
