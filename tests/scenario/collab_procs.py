"""A collab subnet of real processes: a node process with manual blocks, one
``crucible-validator run`` and ``crucible-miner collab`` processes, each with its own wallet,
sharing one specs folder whose collab round is small enough for a test and either one local
store (``shared_store``: a cluster with one disk) or none (each process its own store; the
validator serves its checkpoints and pointers, each miner its payloads, as on the real network).

The test process drives the block clock and reads what the processes leave behind: commitments
on chain, the validator's ``state.json`` and bundles, the miners' output lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from crucible.chain.interface import AddStake, BurnedRegister, DevFaucet
from crucible.chain.local.client import LocalChain
from crucible.competitions import specs_dir
from crucible.protocol.collab import CollabSpec, PayloadCommitment, load_collab_specs
from tests.chain.nodeproc import NodeProcess
from tests.conftest import TAO
from tests.waiting import WAIT_S, wait_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"

# the shipped spec, shrunk: a 10-block round of 6 inner steps on 2 windows each
SMALL_ROUND = {"round_blocks": "10", "inner_steps": "6", "batch_size": "4",
               "eval_windows": "8", "proof_windows": "24", "proof_z": "0.5"}  # fmt: skip
# proof_z: see tests/collab/world.py (the fixture corpus is too small for the shipped 1.645)


def write_specs(folder: Path, aggregator: str) -> CollabSpec:
    """A copy of the shipped specs whose collab round is small and aggregated by ``aggregator``
    (the reward shares are the shipped ones, so they still sum to 1)."""
    shutil.copytree(specs_dir(), folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    text = (folder / "collab.toml").read_text()
    for key, value in {**SMALL_ROUND, "aggregators": json.dumps([aggregator])}.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, f"collab.toml has no single {key!r} line"
    (folder / "collab.toml").write_text(text)
    spec = load_collab_specs(folder)["collab"]
    assert (spec.round_blocks, spec.inner_steps, spec.scoring.aggregators) == (10, 6, (aggregator,))
    return spec


@dataclass
class Proc:
    """One neuron process; its stdout and stderr go to a log file (a pipe nobody reads fills)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", *self.argv], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_line(self, pattern: str, timeout_s: float = WAIT_S) -> re.Match[str]:
        """The first output line matching ``pattern`` (fails early if the process exits)."""

        def found() -> re.Match[str] | None:
            match = re.search(pattern, self.text(), flags=re.M)
            if match is None and not self.alive():
                raise AssertionError(f"{self.name} exited: {self.text()[-3000:]}")
            return match

        return wait_for(f"{self.name} to print {pattern!r}", found, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in time; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout_s)
        return self.popen.returncode


@dataclass
class CollabSubnet:
    tmp: Path
    node: NodeProcess
    chain: LocalChain
    spec: CollabSpec | None = None
    shared_store: bool = True
    uids: dict[str, int] = field(default_factory=dict)
    keys: dict[str, object] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    stopped: list[Proc] = field(default_factory=list)
    servers: list[object] = field(default_factory=list)  # the test's own (a rider's endpoint)

    @property
    def wallets(self) -> Path:
        return self.tmp / "wallets"

    @property
    def store_dir(self) -> Path:
        return self.tmp / "store"

    def store_of(self, name: str | None) -> Path:
        """The store ``name`` reads and writes (``store_dir`` when shared)."""
        return self.store_dir if self.shared_store or name is None else self.tmp / f"{name}-store"

    @property
    def specs(self) -> Path:
        return self.tmp / "specs"

    def register(self, name: str, *, stake_tao: int = 0, keypair: object | None = None) -> int:
        """A funded, registered hotkey: a real wallet on disk, or ``keypair`` (the test's own)."""
        if keypair is None:
            import bittensor as bt

            wallet = bt.Wallet(name=name, hotkey="default", path=str(self.wallets))
            wallet.create_new_coldkey(use_password=False, suppress=True)
            wallet.create_new_hotkey(use_password=False, suppress=True)
            coldkey, hotkey = wallet.coldkey, wallet.hotkey
        else:
            from tests.conftest import keypair as named

            coldkey, hotkey = named(f"{name}-coldkey"), keypair
        self.chain.submit(
            DevFaucet(amount_rao=(1000 + stake_tao) * TAO), coldkey
        ).raise_for_failure()
        result = self.chain.submit(BurnedRegister(netuid=1, hotkey=hotkey.ss58_address), coldkey)
        self.uids[name], self.keys[name] = result.raise_for_failure().data["uid"], hotkey
        if stake_tao:
            self.chain.submit(
                AddStake(1, hotkey.ss58_address, stake_tao * TAO), coldkey
            ).raise_for_failure()
        return self.uids[name]

    def _env(self, name: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("BT_")}
        return {
            **keep, "BT_CHAIN_ENDPOINT": self.node.url, "BT_WALLET_PATH": str(self.wallets),
            "BT_WALLET_NAME": name, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        }  # fmt: skip

    def _common(self, name: str | None = None) -> list[str]:
        return ["--store-dir", str(self.store_of(name)), "--data-dir", str(FIXTURE),
                "--specs", str(self.specs)]  # fmt: skip

    def _serving(self) -> list[str]:
        """With no shared store every neuron serves (a free loopback port, put on chain)."""
        return ["--no-serve"] if self.shared_store else ["--port", "0"]

    def start_validator(self, name: str) -> Proc:
        argv = ["crucible.neurons.validator", "run", "--interval", "1", "--tick", "0.5",
                *self._serving(), "--quiet", "--work-dir", str(self.tmp / name), *self._common(name)]  # fmt: skip
        return self._start(name, argv)

    def start_miner(self, name: str) -> Proc:
        argv = ["crucible.neurons.miner", "collab", "--poll", "0.5", *self._serving(),
                "--work-dir", str(self.tmp / name), *self._common(name)]  # fmt: skip
        return self._start(name, argv)

    def _start(self, name: str, argv: list[str]) -> Proc:
        runs = sum(p.name == name for p in self.stopped)
        proc = Proc(name, argv, self._env(name), self.tmp / f"{name}-{runs}.log")
        proc.start()
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> int | None:
        proc = self.procs.pop(name)
        self.stopped.append(proc)
        return proc.stop()

    def stop_all(self) -> dict[str, int | None]:
        while self.servers:
            self.servers.pop().stop()
        return {name: self.stop(name) for name in list(self.procs)}

    def state(self, name: str) -> dict:
        path = self.tmp / name / "state.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet (it is replaced atomically)
            return {}

    def collab_progress(self, name: str) -> dict:
        return (self.state(name).get("collab") or {}).get("collab") or {}

    def committed_round(self, name: str) -> int | None:
        """The round of ``name``'s collab commitment on chain (None when it has none)."""
        neuron = self.chain.metagraph(1).neurons[self.uids[name]]
        if neuron.commitment is None or not PayloadCommitment.looks_like(neuron.commitment.data):
            return None
        return PayloadCommitment.parse(neuron.commitment.data).round_index

    def step_to(self, block: int) -> None:
        if self.chain.block() < block:
            self.chain.step(block - self.chain.block())
