"""``make demo``, step 9: what an operator sees — the node's JSON-line log and its Prometheus
``/metrics``, then the dashboard (``crucible dashboard``) over the demo's subnet.

The dashboard is started on a free loopback port with the same snapshot code the command serves,
read once to show what it displays, and with ``make demo KEEP=1`` kept up — the chain ticking a
block a second and the validator scoring each round — until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter

from crucible.neurons.demo_parts import DemoWorld

__all__ = ["dashboard_step"]


def _dashboard_app(world: DemoWorld, specs: dict):
    from crucible.dashboard import Dashboard, DashboardConfig, build_app
    from crucible.store.documents import DocumentStore
    from crucible.validator.bundle_fetch import first_of, http_source, store_source

    source = first_of(http_source(5.0), store_source(DocumentStore(world.store_dir)))
    config = DashboardConfig(netuid=1, network="localnet", epoch_rule="local", refresh_s=1.0)
    return build_app(Dashboard(config, world.chain, source, specs))


def _show(url: str, world: DemoWorld) -> None:
    for _ in range(30):  # the first poll runs when the app starts
        try:
            with urllib.request.urlopen(f"{url}/api/snapshot", timeout=10) as answer:
                snap = json.loads(answer.read())
            break
        except OSError:
            time.sleep(0.5)
    else:
        print("the dashboard did not answer")
        return
    board = snap["leaderboards"][0] if snap["leaderboards"] else None
    leader = (
        f"leader uid {board['rows'][0]['uid']} ({world.name_of(board['rows'][0]['uid'])}) in "
        f"{board['competition']} at round block {board['round_block']}"
        if board
        else "no leaderboard yet"
    )
    verdicts = ", ".join(f"uid {a['uid']}: {a['verdict']}" for a in snap["audits"])
    print(f"dashboard at {url}/ — block {snap['chain']['block']}, {len(snap['neurons'])} neurons, {leader}; audit {verdicts}")  # fmt: skip


def _keep_running(world: DemoWorld, runtime) -> None:
    from crucible.validator.loop import run_round

    rt, state = runtime
    print("KEEP=1: the chain ticks a block a second and the validator scores each round; Ctrl-C stops")  # fmt: skip
    try:
        while True:
            time.sleep(1.0)
            world.chain.step(1)
            if world.chain.block() % 20 == 0:
                outcome = run_round(rt, state)
                print(f"block {outcome.block}: round scored, weights {outcome.set_weights}")
    except KeyboardInterrupt:
        print("stopping")


def _logs_and_metrics(world: DemoWorld) -> None:
    lines = (world.tmp / "node.log").read_text(errors="replace").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    counts = Counter(e["event"] for e in events)
    print(f"node.log: {len(events)} JSON events — {dict(counts.most_common(5))}")
    epoch = next((e for e in reversed(events) if e["event"] == "epoch"), None)
    if epoch is not None:
        print(f"  last epoch: {json.dumps(epoch)}")
    with urllib.request.urlopen(f"{world.chain.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    wanted = ("crucible_chain_block_height ", "crucible_chain_epochs_total ", 'outcome="accepted"')
    print(f"{world.chain.url}/metrics:")
    for line in text.splitlines():
        if not line.startswith("#") and "_created" not in line and any(w in line for w in wanted):
            print(f"  {line}")


def dashboard_step(world: DemoWorld, runtime, specs: dict) -> None:
    from crucible.server import run_in_thread

    _logs_and_metrics(world)
    with run_in_thread(_dashboard_app(world, specs)) as dashboard:
        _show(dashboard.url, world)
        if os.environ.get("KEEP", "") not in ("", "0"):
            _keep_running(world, runtime)
