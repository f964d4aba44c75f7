"""Anyone can audit every weight on chain: two validators, a weight copier and three miners, all
real processes, on a node process with commit-reveal on, through two epochs.

Both validators (stakes 1000 and 3000 TAO) run ``crucible-validator run``: they evaluate, commit,
reveal in the chain's window, publish signed bundles on their endpoints and anchor them. A third
validator copies the others' weights from the chain without evaluating. ``crucible audit`` (no
wallet) passes the two, flags the copier, finds their bundles in full agreement and predicts
vtrust ≥ 0.95, which the chain then confirms. Every kind of tampering is caught through the same
audit with a reason.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crucible.chain.interface import (
    AddStake,
    BurnedRegister,
    CommitWeights,
    DevFaucet,
    RevealWeights,
)
from crucible.chain.local.client import LocalChain
from crucible.chain.weights import weights_commit_hash
from crucible.competitions import specs_dir
from crucible.miner.publish import publish
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from crucible.protocol.competition import load_competitions
from crucible.protocol.version import SPEC_VERSION
from crucible.store.local import LocalStore
from crucible.validator.audit import audit_validator
from crucible.validator.bundle import Bundle, rescored
from tests.chain.nodeproc import NodeProcess, free_port
from tests.conftest import TAO
from tests.waiting import wait_for

SLOW = {"timeout_s": 180.0, "poll_s": 0.3}  # validator ticks and reveal epochs take a while

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
SPEC = load_competitions(specs_dir())["tiny"]
STAKES = {"val-a": 1000, "val-b": 3000, "copier": 2000}


@dataclass
class Subnet:
    tmp: Path
    node: NodeProcess
    chain: LocalChain
    wallets: Path
    uids: dict[str, int]
    keys: dict[str, object]
    procs: list[subprocess.Popen[str]]


def _wallet(path: Path, name: str):
    import bittensor as bt

    wallet = bt.Wallet(name=name, hotkey="default", path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True)
    wallet.create_new_hotkey(use_password=False, suppress=True)
    return wallet


def _env(s: Subnet, name: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BT_")}
    return {
        **keep,
        "BT_CHAIN_ENDPOINT": s.node.url,
        "BT_WALLET_PATH": str(s.wallets),
        "BT_WALLET_NAME": name,
    }


def _start(s: Subnet, name: str, *argv: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=ROOT, env=_env(s, name), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    s.procs.append(proc)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for the service's ready line
        if line.startswith("ready:"):
            return proc
    raise AssertionError(f"{name} exited before it was ready")


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subnet]:
    tmp = tmp_path_factory.mktemp("audit")
    node = NodeProcess(tmp / "chain", "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
                       "--commit-reveal-enabled", "true", "--commitment-rate-limit", "1")  # fmt: skip
    chain = node.start()
    s = Subnet(tmp, node, chain, tmp / "wallets", {}, {}, [])
    store = LocalStore(tmp / "store")
    for name in (*STAKES, "m1", "m2", "m3"):
        wallet = _wallet(s.wallets, name)
        chain.submit(DevFaucet(amount_rao=10_000 * TAO), wallet.coldkey).raise_for_failure()
        result = chain.submit(
            BurnedRegister(netuid=1, hotkey=wallet.hotkey.ss58_address), wallet.coldkey
        )
        s.uids[name], s.keys[name] = result.raise_for_failure().data["uid"], wallet.hotkey
        if name in STAKES:
            chain.submit(
                AddStake(1, wallet.hotkey.ss58_address, STAKES[name] * TAO), wallet.coldkey
            ).raise_for_failure()
    for seed, name in enumerate(("m1", "m2", "m3"), start=1):
        model = build_model(
            build_config(ModelShape(layers=1, hidden=32, heads=2, ffn=64)), seed=seed
        )
        publish(save_model_dir(model, tmp / name), SPEC, store, chain, 1, s.keys[name])
        chain.step(1)
    chain.step(10)  # an epoch: permits for the staked validators
    common = ("--store-dir", str(tmp / "store"), "--data-dir", str(FIXTURE))
    for name in ("m1", "m2", "m3"):
        _start(s, name, "crucible.neurons.miner", "serve", "--port", str(free_port()), "--watch-interval", "1",
               "--cache-dir", str(tmp / f"cache-{name}"), *common)  # fmt: skip
    chain.step(20 - chain.block() % 20)  # a round block the models are eligible in
    for name in ("val-a", "val-b"):
        _start(s, name, "crucible.neurons.validator", "run", "--interval", "1", "--tick", "0.3", "--quiet",
               "--port", str(free_port()), "--work-dir", str(tmp / name), *common)  # fmt: skip
    yield s
    for proc in s.procs:
        proc.terminate()
    for proc in s.procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    node.stop()


def _state(s: Subnet, name: str) -> dict:
    path = s.tmp / name / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _copy_weights(s: Subnet) -> tuple:
    """The copier commits val-b's on-chain row as its own; it reveals it an epoch later."""
    row = s.chain.metagraph(1).weights.get(s.uids["val-b"], {})
    uids, values = tuple(sorted(row)), tuple(row[u] for u in sorted(row))
    salt = tuple(secrets.randbelow(65536) for _ in range(8))
    hotkey = s.keys["copier"]
    digest = weights_commit_hash(hotkey.ss58_address, 1, uids, values, salt, SPEC_VERSION)
    s.chain.submit(CommitWeights(1, digest), hotkey).raise_for_failure()
    return uids, values, salt


VALIDATORS = ("val-a", "val-b")


def _all(s: Subnet, check) -> bool:
    return all(check(_state(s, name)) for name in VALIDATORS)


@pytest.fixture(scope="module")
def two_epochs(subnet: Subnet):
    s = subnet
    wait_for(
        "both validators to commit", lambda: _all(s, lambda st: st.get("pending_reveal")), **SLOW
    )
    first_round = _state(s, "val-a")["last_report"]["block"]
    s.chain.step(10)  # the reveal epoch opens: the validators reveal on their next tick
    wait_for(
        "both reveals to land", lambda: _all(s, lambda st: not st.get("pending_reveal")), **SLOW
    )
    assert all(s.chain.metagraph(1).weights.get(s.uids[n]) for n in VALIDATORS)
    copied = _copy_weights(s)
    s.chain.step(10)  # the next round block: both validators score again and commit
    wait_for(
        "the second round",
        lambda: _all(
            s, lambda st: st["last_report"]["block"] > first_round and st.get("pending_reveal")
        ),
        **SLOW,
    )
    s.chain.submit(RevealWeights(1, *copied, SPEC_VERSION), s.keys["copier"]).raise_for_failure()
    s.chain.step(10)  # an epoch over everyone's revealed weights; the second reveals follow
    wait_for("the second reveals and anchors", lambda: _all(
        s, lambda st: not st.get("pending_reveal") and st.get("anchored_bundle") == st["last_bundle"].removesuffix(".json")
    ), **SLOW)  # fmt: skip
    return s


def test_audit_passes_the_validators_and_flags_the_copier(two_epochs: Subnet) -> None:
    s = two_epochs
    out = subprocess.run(
        [sys.executable, "-m", "crucible.neurons.crucible", "audit", "--json", "--store-dir", str(s.tmp / "store")],
        cwd=ROOT, env={k: v for k, v in _env(s, "nobody").items() if k != "BT_WALLET_NAME"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.stdout.startswith("{"), out.stdout + out.stderr
    report = json.loads(out.stdout)
    verdicts = {row["uid"]: row["verdict"] for row in report["validators"]}
    assert verdicts[s.uids["val-a"]] == "ok" and verdicts[s.uids["val-b"]] == "ok", report
    assert verdicts[s.uids["copier"]].startswith("FLAGGED: weights on chain but no bundle")
    assert out.returncode == 1  # a flagged validator fails the audit
    (agreement,) = report["agreement"].values()
    assert agreement == pytest.approx(1.0)
    vtrust = report["predicted_vtrust"]
    assert vtrust[str(s.uids["val-a"])] >= 0.95 and vtrust[str(s.uids["val-b"])] >= 0.95
    mg = s.chain.metagraph(1)
    assert mg.neurons[s.uids["val-a"]].validator_trust >= 0.95
    assert mg.neurons[s.uids["val-b"]].validator_trust >= 0.95


def _bundle_of(s: Subnet, name: str) -> Bundle:
    from crucible.store.documents import DocumentStore

    bundle_id = _state(s, name)["anchored_bundle"]
    return Bundle.model_validate_json(DocumentStore(s.tmp / "store").get("bundles", bundle_id))


def _swap(bundle: Bundle) -> Bundle:
    r = bundle.rounds[0]
    a, b = sorted(r.losses)[:2]
    losses = {**r.losses, a: r.losses[b], b: r.losses[a]}
    return rescored(bundle.model_copy(update={"rounds": [r.model_copy(update={"losses": losses})]}))


TAMPERING = {
    "swapped uids": (lambda b: _swap(b), "TAMPERED"),
    "altered loss": (lambda b: b.model_copy(update={"rounds": [b.rounds[0].model_copy(update={"losses": {u: [x * 0.9 for x in v] for u, v in b.rounds[0].losses.items()}})]}), "TAMPERED"),
    "altered block hash": (lambda b: b.model_copy(update={"rounds": [b.rounds[0].model_copy(update={"block_hash": "0x" + "12" * 32})]}), "TAMPERED"),
    "altered commit block": (lambda b: b.model_copy(update={"rounds": [b.rounds[0].model_copy(update={"commit_blocks": {u: c + 1 for u, c in b.rounds[0].commit_blocks.items()}})]}), "TAMPERED"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_with_a_published_bundle_is_caught(two_epochs: Subnet, kind: str) -> None:
    """A changed bundle under the original signature fails its signature; re-signed by another
    key it is not the validator's; re-signed by the validator itself the chain contradicts it."""
    from crucible.protocol.anchor import anchor_text
    from crucible.validator.bundle import bundle_bytes

    s = two_epochs
    original = _bundle_of(s, "val-b")
    alter, verdict = TAMPERING[kind]
    forged = alter(original).model_copy(update={"signature": original.signature})
    mg = s.chain.metagraph(1)
    neuron = mg.neurons[s.uids["val-b"]]
    raw = json.dumps(forged.model_dump(mode="json")).encode()
    audit = audit_validator(neuron, mg, s.chain, lambda n, ref: raw, {SPEC.id: SPEC})
    assert audit.verdict.startswith(verdict), audit.verdict
    # re-signed by another key (and anchored nowhere): it is not val-b's bundle
    other = forged.model_copy(
        update={"validator_hotkey": s.keys["val-a"].ss58_address, "signature": ""}
    ).signed(s.keys["val-a"])
    audit = audit_validator(
        neuron, mg, s.chain, lambda n, ref: bundle_bytes(other), {SPEC.id: SPEC}
    )
    assert audit.verdict.startswith("TAMPERED"), audit.verdict
    assert anchor_text(original.bundle_id) == neuron.commitment.data


def test_a_stale_bundle_is_reported_not_passed(two_epochs: Subnet) -> None:
    s = two_epochs
    mg = s.chain.metagraph(1)
    bundles = sorted((s.tmp / "val-a" / "bundles").glob("*.json"), key=lambda p: p.stat().st_mtime)
    assert len(bundles) >= 2 and _state(s, "val-a")["anchored_bundle"] != bundles[0].stem
    oldest = bundles[0].read_bytes()  # an endpoint answering an older bundle for the anchored id
    audit = audit_validator(
        mg.neurons[s.uids["val-a"]], mg, s.chain, lambda n, ref: oldest, {SPEC.id: SPEC}
    )
    assert audit.verdict.startswith("TAMPERED: asked for the anchored bundle"), audit.verdict
