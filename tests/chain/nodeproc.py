"""Run a real ``crucible localnet`` node process on a free loopback port (manual blocks)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from crucible.chain.local.client import LocalChain

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeProcess:
    def __init__(self, data_dir: Path, owner: str, *extra: str) -> None:
        self.data_dir, self.owner, self.extra = data_dir, owner, extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalChain:
        args = [
            sys.executable, "-m", "crucible.neurons.crucible", "localnet", "--data-dir", str(self.data_dir),
            "--port", str(self.port), "--block-time", "0", "--owner", self.owner,
            "--tempo", "10", "--commit-reveal-enabled", "false", "--weights-rate-limit", "2",
            *self.extra,
        ]  # fmt: skip
        # stderr (the node's JSON log lines) goes to a file: an unread pipe fills up and blocks
        # the node mid-write once it has logged ~64 KiB
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-{self.port}.stderr.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        chain = LocalChain(self.url, timeout_s=5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                chain.block()
                return chain
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.stderr_text()
                    raise RuntimeError(f"node did not start: {err[-2000:]}") from None
                time.sleep(0.1)

    def stderr_text(self) -> str:
        """What the node wrote to stderr so far (its log)."""
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
