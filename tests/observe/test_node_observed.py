"""A real ``crucible localnet`` process: its ``/metrics`` and its JSON log lines."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crucible.chain.interface import DevFaucet, Transfer
from tests.chain.nodeproc import NodeProcess
from tests.conftest import keypair


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_node_metrics_and_json_logs_show_blocks_extrinsics_and_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRUCIBLE_LOG_LEVEL", "debug")  # the process inherits it: request events
    owner, alice = keypair("observe-owner"), keypair("observe-alice")
    proc = NodeProcess(tmp_path / "chain", owner.ss58_address, "--log-format", "json")
    chain = proc.start()
    try:
        assert chain.submit(DevFaucet(amount_rao=5_000), alice).ok
        refused = chain.submit(Transfer(dest=owner.ss58_address, amount_rao=10**12), alice)
        assert refused.code == "insufficient_balance"
        head = chain.step(12)  # tempo 10: at least one epoch
        samples = _samples(proc.url)
    finally:
        chain.close()
        proc.stop()
    assert samples[("crucible_chain_block_height", ())] == head
    assert samples[("crucible_chain_blocks_produced_total", ())] == 12
    assert samples[("crucible_chain_epochs_total", ())] >= 1
    accepted = (("call", "faucet"), ("code", ""), ("outcome", "accepted"))
    bad = (("call", "transfer"), ("code", "insufficient_balance"), ("outcome", "refused"))
    assert samples[("crucible_chain_extrinsics_total", accepted)] == 1
    assert samples[("crucible_chain_extrinsics_total", bad)] == 1
    ok_posts = (("method", "POST"), ("route", "/extrinsic"), ("status", "200"))
    assert samples[("crucible_http_requests_total", ok_posts)] == 2
    assert samples[("crucible_http_request_duration_seconds_count",
                    (("method", "POST"), ("route", "/extrinsic")))] == 2  # fmt: skip

    lines = proc.stderr_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert events, lines[-20:]
    by_name: dict[str, list[dict]] = {}
    for event in events:
        assert event["neuron"] == "crucible-localnet"
        by_name.setdefault(event["event"], []).append(event)
    assert [e["block"] for e in by_name["block"]] == list(range(head - 11, head + 1))
    (refusal,) = by_name["extrinsic_refused"]
    assert refusal["call"] == "transfer" and refusal["code"] == "insufficient_balance"
    assert by_name["extrinsic_accepted"][0]["call"] == "faucet"
    epoch = by_name["epoch"][0]
    assert {"block", "total_emission_rao", "top_incentive_uid"} <= set(epoch)
    assert any(e["route"] == "/extrinsic" and e["status"] == 200 for e in by_name["request"])
