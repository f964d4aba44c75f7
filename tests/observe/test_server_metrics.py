"""The shared server toolkit counts every answer by route and status, and ``/metrics`` is public."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crucible.protocol.auth import sign_request
from crucible.protocol.errors import ConfigError
from crucible.server.runner import RunningServer, run_in_thread
from crucible.server.testing import ECHO_PATH, EchoRequest, build_echo_server
from tests.server.conftest import Net

BODY = EchoRequest(text="hello").model_dump_json().encode()


@pytest.fixture
def echo(net: Net) -> Iterator[RunningServer]:
    server = build_echo_server(net.server_kp, net.chain, net.netuid)
    with run_in_thread(server.app) as running:
        yield running


def _post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=BODY, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _signed(net: Net, kp) -> dict[str, str]:
    headers = sign_request(
        kp, method="POST", path=ECHO_PATH, body=BODY, receiver_ss58=net.server_kp.ss58_address
    )
    return {**headers, "Content-Type": "application/json"}


def test_metrics_count_requests_by_route_and_status_without_a_signature(
    net: Net, echo: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="crucible.server.app"):
        assert _post(echo.url + ECHO_PATH, _signed(net, net.miner_kp)) == 200
        assert _post(echo.url + ECHO_PATH, _signed(net, net.validator_kp)) == 200
        assert _post(echo.url + ECHO_PATH, {"Content-Type": "application/json"}) == 401
        assert _post(echo.url + ECHO_PATH, _signed(net, net.stranger_kp)) == 403
        assert _post(echo.url + "/no/such/route", {}) == 404
        with urllib.request.urlopen(echo.url + "/metrics", timeout=10) as reply:  # unsigned
            assert reply.status == 200
            text = reply.read().decode()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def requests(route: str, status: str) -> float:
        key = (("method", "POST"), ("route", route), ("status", status))
        return samples[("crucible_http_requests_total", key)]

    assert requests(ECHO_PATH, "200") == 2
    assert requests(ECHO_PATH, "401") == 1
    assert requests(ECHO_PATH, "403") == 1
    assert requests("unmatched", "404") == 1  # the raw path never becomes a label
    latency = (("method", "POST"), ("route", ECHO_PATH))
    assert samples[("crucible_http_request_duration_seconds_count", latency)] == 4
    inf = tuple(sorted((*latency, ("le", "+Inf"))))
    assert samples[("crucible_http_request_duration_seconds_bucket", inf)] == 4

    for role in ("server", "validator", "miner"):  # the seeds tests.conftest.keypair used
        seed = hashlib.sha256(f"server-tests-{role}".encode()).hexdigest()
        assert seed not in text
    for kp in (net.server_kp, net.miner_kp, net.validator_kp):
        assert kp.ss58_address not in text
    assert "no/such/route" not in text

    events = [r for r in caplog.records if getattr(r, "crucible_event", None) == "request"]
    roles = sorted((r.crucible_fields["status"], r.crucible_fields["role"]) for r in events)
    assert roles == [
        (200, "registered"),
        (200, "validator"),
        (401, "unauthenticated"),
        (403, "unregistered"),
        (404, "unauthenticated"),
    ]
    for record in events:
        assert not any("signature" in str(v).lower() for v in record.crucible_fields.values())


def test_two_servers_in_one_process_keep_separate_counts(net: Net) -> None:
    first = build_echo_server(net.server_kp, net.chain, net.netuid)
    second = build_echo_server(net.server_kp, net.chain, net.netuid)
    first.http_metrics.observe(ECHO_PATH, "POST", 200, 0.01)
    assert first.registry is not second.registry
    labels = {"route": ECHO_PATH, "method": "POST", "status": "200"}
    assert first.registry.get_sample_value("crucible_http_requests_total", labels) == 1
    assert second.registry.get_sample_value("crucible_http_requests_total", labels) is None


def test_no_route_can_take_over_metrics(net: Net) -> None:
    server = build_echo_server(net.server_kp, net.chain, net.netuid)

    async def echo(request: EchoRequest, _ctx) -> EchoRequest:
        return request

    with pytest.raises(ConfigError, match="already registered"):
        server.route("/metrics", EchoRequest, EchoRequest, echo)
