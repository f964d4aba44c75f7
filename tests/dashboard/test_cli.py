"""``crucible dashboard`` as an operator runs it: a real node process, the command in its own
process through ``--chain-endpoint``, a ``ready:`` line, live JSON, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from crucible.neurons.crucible import main as crucible_main
from tests.chain.nodeproc import NodeProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def _snapshot(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/snapshot", timeout=10) as response:
        return json.loads(response.read())


def test_crucible_lists_the_dashboard(capsys) -> None:
    assert crucible_main([]) == 0
    assert "dashboard" in capsys.readouterr().out


def test_the_command_serves_the_chain_live_and_stops_cleanly(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "chain", ALICE)
    chain = node.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BT_", "CRUCIBLE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crucible.neurons.crucible", "dashboard", "--chain-endpoint", node.url,
         "--port", str(port), "--refresh", "0.3", "--store-dir", str(tmp_path / "store")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = next((line for line in proc.stdout if line.startswith("ready:")), None)
        assert ready is not None and f"http://127.0.0.1:{port}/" in ready, ready
        url = f"http://127.0.0.1:{port}"
        assert _snapshot(url)["chain"]["block"] == chain.block()
        chain.step(3)
        deadline = time.monotonic() + 20
        while _snapshot(url)["chain"]["block"] != chain.block():
            assert time.monotonic() < deadline, "the dashboard did not follow the chain"
            time.sleep(0.2)
        proc.terminate()
        rest = proc.communicate(timeout=20)[0]
        assert proc.returncode == 0, rest
        assert "crucible dashboard: stopped cleanly on SIGTERM" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        chain.close()
        node.stop()


def test_every_option_says_what_it_is_and_shows_its_default() -> None:
    from crucible.neurons.dashboard import build_parser

    parser = build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = formatter._get_help_string(action)
        assert text, action.option_strings
        if action.default not in (None, "==SUPPRESS=="):
            assert "(default" in text, action.option_strings
