"""docs/operations.md, its systemd units and its pm2 file: every command works as written.

Our commands are parsed by the programs' own parsers (``tests.docs.flags``); other tools are
limited to a known set whose arguments are checked against the repository (the unit files
exist, ``cp`` copies files that are there); the ``jq`` filters run on real log lines from our
JSON formatter; the backup commands run on a real chain database and a validator work dir.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import json
import logging
import re
import shlex
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from crucible.chain.local.node import LocalNode, NodeConfig
from crucible.observe.logs import JsonFormatter, log_event
from crucible.observe.metrics import HttpMetrics, NodeMetrics, ValidatorMetrics
from tests.conftest import TEST_HYPERPARAMETERS, keypair
from tests.docs.flags import check_command

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
UNITS = sorted((ROOT / "docs" / "systemd").glob("*.service"))
OURS = ("crucible", "crucible-miner", "crucible-validator", "crucible-client")
OTHER_TOOLS = {"systemctl", "journalctl", "jq", "pm2", "cp", "curl", "sqlite3", "tar", "pip"}


def _shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def _segments(line: str) -> list[list[str]]:
    """A pipeline's commands (the doc separates ``|`` by spaces; quoted ``|`` stays inside)."""
    out: list[list[str]] = [[]]
    for word in shlex.split(line):
        if word == "|":
            out.append([])
        else:
            out[-1].append(word)
    return out


def check_ours(words: list[str]) -> str | None:
    """Our console scripts, by their own parsers (``crucible dashboard`` included)."""
    program = Path(words[0]).name
    if program == "crucible" and words[1:2] == ["dashboard"]:
        from crucible.neurons.dashboard import build_parser

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                build_parser().parse_args(words[2:])
        except SystemExit:
            return f"crucible dashboard {' '.join(words[2:])}: {err.getvalue().strip()}"
        return None
    return check_command(shlex.join([program, *words[1:]]))


def _unit_names(words: list[str]) -> list[str]:
    return [w for w in words if w.startswith("crucible-")]


def _check_other(words: list[str]) -> str | None:
    tool = Path(words[0]).name
    if tool not in OTHER_TOOLS:
        return f"{tool}: not a command the docs should show"
    known = {u.stem for u in UNITS}
    if tool in ("systemctl", "journalctl", "pm2"):
        missing = [u for u in _unit_names(words) if u.removesuffix(".service") not in known]
        files = [w for w in words[1:] if w.startswith("docs/")]
        missing += [f for f in files if not (ROOT / f).is_file()]
        return f"{' '.join(words)}: no {missing}" if missing else None
    if tool == "cp":
        missing = [w for w in words[1:-1] if not (ROOT / w).is_file()]
        return f"cp: no {missing}" if missing else None
    return None


def test_every_command_in_the_operations_doc_parses() -> None:
    problems = []
    lines = _shell_lines()
    assert len(lines) > 20
    for line in lines:
        for words in _segments(line):
            if Path(words[0]).name in OURS:
                problems.append(check_ours(words))
            else:
                problems.append(_check_other(words))
    assert [p for p in problems if p] == []


def test_the_command_check_can_fail() -> None:
    assert check_ours(["crucible-validator", "run", "--log-format", "xml"])
    assert check_ours(["crucible", "dashboard", "--no-such-flag"])
    assert _check_other(["systemctl", "start", "crucible-nonexistent"])
    assert _check_other(["rm", "-rf", "/"])


def _unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


@pytest.mark.parametrize("path", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit_exec_start_parses_with_our_parsers(path: Path) -> None:
    unit = _unit(path)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    words = shlex.split(unit["Service"]["ExecStart"])
    assert words[0].startswith("/opt/crucible/.venv/bin/")
    assert check_ours(words) is None
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert path.stem in DOC.read_text()  # the doc names every unit it ships


def test_the_doc_shows_each_unit_command_in_the_foreground() -> None:
    shown = {shlex.join(w) for line in _shell_lines() for w in _segments(line)}
    for path in UNITS:
        words = shlex.split(_unit(path)["Service"]["ExecStart"])
        foreground = shlex.join([Path(words[0]).name, *words[1:]])
        if path.stem != "crucible-gateway":  # the doc's gateway line leaves out --usage-log
            assert foreground in shown, foreground


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js is not installed")
def test_pm2_ecosystem_apps_parse_with_our_parsers() -> None:
    script = "console.log(JSON.stringify(require(process.argv[1]).apps))"
    out = subprocess.run(
        ["node", "-e", script, str(ROOT / "docs" / "pm2" / "ecosystem.config.js")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    apps = json.loads(out.stdout)
    assert {a["name"] for a in apps} == {u.stem for u in UNITS}
    for app in apps:
        assert app["interpreter"] == "none"
        assert check_ours([app["script"], *shlex.split(app["args"])]) is None, app["name"]


def _log_lines() -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("crucible-validator"))
    logger = logging.getLogger("tests.docs.operations")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        log_event(logger, "round_started", block=40, netuid=1, neurons=8)
        log_event(logger, "model_rejected", level=logging.WARNING, uid=3, reason="bad_config",
                  message="config sets return_dict\nfalse")  # fmt: skip
        log_event(logger, "extrinsic_refused", call="set_weights", code="bad_nonce", block=41,
                  message="nonce 3 was already used")  # fmt: skip
        log_event(logger, "epoch", netuid=1, block=50, neurons=8, total_emission_rao=10**9,
                  top_incentive_uid=2)  # fmt: skip
        log_event(logger, "round_finished", block=40, scored=True, models_evaluated=4)
        logger.error("something failed")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_docs_jq_filters_select_from_real_log_lines() -> None:
    lines = _log_lines()
    filters = [w for line in _shell_lines() for w in _segments(line) if w[0] == "jq"]
    assert len(filters) >= 5
    for words in filters:
        out = subprocess.run(words, input=lines, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, (words, out.stderr)
        assert out.stdout.strip(), words  # each filter finds its event in real lines


def _doc_command(tool: str, tmp: Path) -> list[str]:
    (line,) = [line for line in _shell_lines() if line.startswith(tool + " ")]
    line = line.replace("/var/lib/crucible", str(tmp / "lib"))
    return shlex.split(line.replace("/var/backups/crucible", str(tmp / "backups")))


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="sqlite3 is not installed")
def test_the_online_backup_command_copies_a_running_chain(tmp_path: Path) -> None:
    config = NodeConfig(
        owner_coldkey=keypair("owner-coldkey").ss58_address, hyperparameters=TEST_HYPERPARAMETERS
    )
    node = LocalNode(tmp_path / "lib" / "localnet", config)
    (tmp_path / "backups").mkdir()
    try:
        head = node.step(3)
        out = subprocess.run(_doc_command("sqlite3", tmp_path), capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        node.step(1)  # the node keeps writing; the copy is the state at the backup
    finally:
        node.close()
    copy = sqlite3.connect(tmp_path / "backups" / "chain.sqlite")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT MAX(number) FROM blocks").fetchone() == (head,)
    finally:
        copy.close()


def test_the_validator_backup_command_archives_state_and_bundles(tmp_path: Path) -> None:
    work = tmp_path / "lib" / "validator"
    (work / "bundles").mkdir(parents=True)
    (work / "models").mkdir()
    (work / "state.json").write_text("{}")
    (work / "bundles" / "a.json").write_text("{}")
    (tmp_path / "backups").mkdir()
    out = subprocess.run(_doc_command("tar", tmp_path), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with tarfile.open(tmp_path / "backups" / "validator.tgz") as archive:
        names = set(archive.getnames())
    assert {"validator/state.json", "validator/bundles/a.json"} <= names
    assert not any(n.startswith("validator/models") for n in names)  # the cache is re-fetched


def test_the_metrics_table_lists_every_metric_and_only_those() -> None:
    registry = CollectorRegistry()
    HttpMetrics(registry), NodeMetrics(registry), ValidatorMetrics(registry)
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }
    table = set(re.findall(r"^\| `(crucible_[a-z_]+)` \|", DOC.read_text(), flags=re.M))
    assert table == exported
