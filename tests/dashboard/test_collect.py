"""The snapshot: epochs from the tempo, a bounded history, an attacker's data kept inert — a bundle
that fails to verify shows its verdict and feeds no leaderboard, a commitment full of markup is
text on the page — and the app's routes, headers and failure answers over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from crucible.chain.interface import Commitment, Hyperparameters, Metagraph, Neuron, SetCommitment
from crucible.chain.local.client import LocalChain
from crucible.competitions import specs_dir
from crucible.dashboard import (
    Dashboard,
    DashboardConfig,
    History,
    build_app,
    collect,
    epoch_blocks,
    render_page,
)
from crucible.dashboard.collect import Leaderboard, LeaderRow
from crucible.protocol.competition import load_competitions
from crucible.server import run_in_thread
from tests.chain.nodeproc import free_port

SPECS = load_competitions(specs_dir())


def _neuron(uid: int, hotkey: str, incentive: float = 0.0, commitment: str | None = None) -> Neuron:
    return Neuron(
        uid=uid, hotkey=hotkey, coldkey="c", stake_rao=0, active=True, validator_permit=False,
        last_update=0, block_at_registration=0, consensus=0.0, incentive=incentive, dividends=0.0,
        validator_trust=0.0, emission_rao=0, endpoint=None,
        commitment=None if commitment is None else Commitment(commitment, 1),
    )  # fmt: skip


def _mg(block: int, *neurons: Neuron) -> Metagraph:
    return Metagraph(1, block, "0x00", None, Hyperparameters(tempo=10), tuple(neurons))


def _board(round_block: int, losses: dict[int, float]) -> Leaderboard:
    rows = tuple(LeaderRow(u, f"h{u}", loss, 0.5, 0.0) for u, loss in losses.items())
    return Leaderboard("tiny@2", round_block, 0, "ab" * 32, rows)


def test_epoch_blocks_follow_each_chains_rule() -> None:
    # local: every tempo blocks since genesis (10, 20, 30, …); block 0 is not an epoch
    assert epoch_blocks(27, 10, 1, "local") == (20, 30)
    assert epoch_blocks(30, 10, 1, "local") == (30, 40)
    assert epoch_blocks(9, 10, 1, "local") == (None, 10)
    # subtensor, tempo 360, netuid 1: the epoch runs where (block + 2) % 361 == 360: 358, 719, …
    assert epoch_blocks(400, 360, 1, "subtensor") == (358, 719)
    assert epoch_blocks(358, 360, 1, "subtensor") == (358, 719)
    assert epoch_blocks(100, 360, 1, "subtensor") == (None, 358)
    assert epoch_blocks(5, 0, 1, "local") == (None, None)


def test_history_keeps_one_point_per_round_and_epoch_bounded_and_forgets_replaced_uids() -> None:
    history = History(max_points=3)
    for i, block in enumerate((20, 20, 40, 60, 80)):  # the same round polled twice: one point
        mg = _mg(block + 5, _neuron(0, "alice", incentive=i / 10), _neuron(1, "bob"))
        history.record(mg, (_board(block, {0: 3.0 - i / 10, 1: 5.0, 7: 1.0}),), block)
    losses = history.loss_points()["tiny@2"]
    assert [b for b, _ in losses[0]] == [40, 60, 80]  # bounded: the newest 3
    assert 7 not in losses  # a uid the chain does not have is not plotted
    assert history.incentive_points()[0] == [(40, 0.2), (60, 0.3), (80, 0.4)]
    history.record(_mg(90, _neuron(0, "mallory"), _neuron(1, "bob")), (), 90)
    assert history.incentive_points()[0] == [(90, 0.0)]  # uid 0 changed hands: a new series
    assert 0 not in history.loss_points()["tiny@2"] and 1 in history.loss_points()["tiny@2"]


def test_a_bundle_that_fails_to_verify_shows_its_verdict_and_feeds_no_leaderboard(
    node, neuron_factory
) -> None:
    validator = neuron_factory("dash-forger", 100)
    node.step(11)  # an epoch: the validator's permit
    forged = json.dumps({"validator_hotkey": validator.hotkey.ss58_address, "rounds": []})
    snap = collect(node, 1, lambda _n, _ref: forged.encode(), SPECS, History())
    (audit,) = [a for a in snap.audits if a.uid == validator.uid]
    assert audit.verdict.startswith("TAMPERED: not a score bundle")
    assert snap.leaderboards == ()
    assert "TAMPERED: not a score bundle" in render_page(snap, "v", 1.0)
    assert snap.chain.block == node.block() and snap.chain.last_epoch_block == 10
    assert [n.role for n in snap.neurons if n.uid == validator.uid] == ["validator"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.append(tag)


def test_a_huge_odd_commitment_is_bounded_inert_text() -> None:
    evil = "<script>window.pwned=1</script>\x07\u202e" + "<img src=x onerror=alert(1)>" * 2000
    mg = _mg(25, _neuron(0, "alice", commitment=evil), _neuron(1, '"><script>x</script>'))
    from crucible.dashboard.collect import ChainView, Snapshot, neuron_rows

    view = ChainView("localnet", 1, 25, "0x00", 10, 20, 30, {"tempo": 10})
    snap = Snapshot(view, neuron_rows(mg), (), (), (), (), {}, {})
    html = render_page(snap, "v1", 2.0)
    parser = _Tags()
    parser.feed(html)
    assert parser.tags.count("script") == 1 and "img" not in parser.tags  # only the page's own
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;\\x07" in html
    assert f"({len(evil)} chars)" in html and len(html) < 20_000  # cut, and says how long it was


def test_a_config_that_cannot_work_is_refused() -> None:
    from crucible.protocol.errors import ConfigError

    with pytest.raises(ConfigError, match="refresh interval must be > 0"):
        DashboardConfig(refresh_s=0)
    with pytest.raises(ConfigError, match="epoch_rule is 'local' or 'subtensor'"):
        DashboardConfig(epoch_rule="finney")


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_app_serves_page_fragment_and_json_read_only(node, neuron_factory) -> None:
    attacker = neuron_factory("dash-markup")
    node.submit(SetCommitment(netuid=1, data="<b>bold</b>"), attacker.hotkey).raise_for_failure()
    dashboard = Dashboard(DashboardConfig(refresh_s=0.2), node, lambda _n, _r: None, SPECS)
    with run_in_thread(build_app(dashboard)) as server:
        status, headers, body = _get(server.url + "/")
        assert status == 200 and "script-src 'sha256-" in headers["content-security-policy"]
        assert b"&lt;b&gt;bold&lt;/b&gt;" in body and b"<b>bold</b>" not in body
        status, _, body = _get(server.url + "/api/snapshot")
        snap = json.loads(body)
        assert status == 200 and snap["chain"]["block"] == node.block() and snap["version"]
        assert [n["commitment"] for n in snap["neurons"]] == ["<b>bold</b>"]  # JSON: data, as is
        assert _get(server.url + "/fragment")[0] == 200
        request = urllib.request.Request(server.url + "/", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 405


def test_an_unreachable_chain_is_a_503_with_the_reason_not_a_crash(tmp_path: Path) -> None:
    chain = LocalChain(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    dashboard = Dashboard(DashboardConfig(refresh_s=0.2), chain, lambda _n, _r: None, SPECS)
    with run_in_thread(build_app(dashboard)) as server:
        status, _, body = _get(server.url + "/api/snapshot")
        assert status == 503
        error = json.loads(body)["error"]
        assert error["code"] == "no_snapshot" and "chain_unavailable" in error["message"]
        assert json.loads(_get(server.url + "/health")[2]) == {"ok": False, "block": None}


def test_releases_are_the_publishers_and_the_rest_are_listed_as_ignored() -> None:
    from crucible.dashboard.collect import release_rows

    assert "owner" in SPECS["tiny"].data.publishers
    release = "crucible-data@1:local:" + "ab" * 32
    mg = Metagraph(
        1, 25, "0x00", "owner-hk", Hyperparameters(tempo=10),
        (_neuron(0, "owner-hk", commitment=release), _neuron(1, "mallory", commitment=release)),
    )  # fmt: skip
    found, ignored = release_rows(SPECS, mg)
    assert [(r.competition, r.release_id, r.publisher) for r in found] == [
        (SPECS["tiny"].key, "ab" * 32, "owner-hk")
    ]
    key = SPECS["tiny"].key
    assert ignored == ((key, "mallory", f"uid 1 is not a data publisher of {key}"),)
