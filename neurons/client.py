"""``crucible-client``: ask the subnet, list its miners."""

from __future__ import annotations

import argparse
import json
import sys

from crucible.neurons.common import chain_from, exits_cleanly, new_parser, run_command, subcommands
from crucible.neurons.options import add_common_options, load_keys


@exits_cleanly
def cmd_ask(args: argparse.Namespace) -> int:
    from crucible.client.subnet import Subnet
    from crucible.protocol.messages import SamplingParams

    subnet = Subnet(
        chain_from(args),
        args.netuid,
        load_keys(args).hotkey,
        top_k=args.top_k,
        timeout_s=args.timeout,
    )
    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if args.stream:
        return _ask_streaming(subnet, args, sampling)
    answer = subnet.ask(
        args.prompt,
        max_tokens=args.max_tokens,
        sampling=sampling,
    )
    if args.json:
        print(json.dumps(answer.__dict__, indent=1))
    else:
        print(answer.text)
        print(
            f"\n— uid {answer.uid} ({answer.hotkey[:10]}…), {answer.latency_ms:.0f} ms, serving {answer.commitment}",
            file=sys.stderr,
        )
    return 0


def _ask_streaming(subnet, args: argparse.Namespace, sampling) -> int:
    """Print the answer as the miner produces it; who answered goes to stderr at the end."""
    from crucible.client.subnet import Delta, Finished, Started

    started = None
    for item in subnet.stream(
        args.prompt, max_new_tokens=args.max_tokens, sampling=sampling, stop=args.stop or []
    ):
        if isinstance(item, Started):
            started = item
        elif isinstance(item, Delta):
            print(item.text, end="", flush=True)
        elif isinstance(item, Finished) and started is not None:
            print()
            print(
                f"\n— uid {started.uid} ({started.hotkey[:10]}…), first token {started.ttft_ms:.0f} ms, "
                f"{item.latency_ms:.0f} ms, {item.completion_tokens} tokens ({item.finish_reason}), "
                f"serving {started.commitment}",
                file=sys.stderr,
            )
    return 0


@exits_cleanly
def cmd_miners(args: argparse.Namespace) -> int:
    from crucible.client.subnet import Subnet

    rows = Subnet(
        chain_from(args), args.netuid, load_keys(args).hotkey, timeout_s=args.timeout
    ).miners()
    print(
        f"{'uid':>4} {'hotkey':12} {'incentive':>9} {'endpoint':24} {'reachable':>9}  served model"
    )
    for m in rows:
        served = (
            "—"
            if m.served_commitment is None
            else ("matches chain" if m.served_commitment == m.commitment else "DIFFERS from chain")
        )
        reach = "-" if m.reachable is None else ("yes" if m.reachable else "no")
        print(
            f"{m.uid:>4} {m.hotkey[:10] + '…':12} {m.incentive:>9.4f} {m.endpoint or '-':24} {reach:>9}  {served}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("crucible-client", __doc__)
    add = subcommands(parser)
    a = add("ask", cmd_ask, "ask the best miners")
    a.add_argument("prompt", help="the text to continue")
    a.add_argument("--max-tokens", type=int, default=32, help="new tokens at most")
    a.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    a.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    a.add_argument("--stop", action="append", help="stop before this text (repeatable)")
    a.add_argument(
        "--stream", action="store_true", help="print tokens as they come (one miner, best first)"
    )
    a.add_argument("--seed", type=int, default=0, help="sampling seed")
    a.add_argument("--top-k", type=int, default=3, help="miners asked at once")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    m = add("miners", cmd_miners, "uid, hotkey, incentive, endpoint, served model, reachable")
    for p in (a, m):
        add_common_options(p)
        p.add_argument("--timeout", type=float, default=20.0, help="seconds per miner")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
