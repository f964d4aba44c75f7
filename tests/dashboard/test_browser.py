"""The dashboard in a real browser: a real local chain, a validator round over real tiny models,
the dashboard app on loopback, headless Debian chromium driven by Playwright.

What the page shows is checked against the chain and the bundle; then the chain moves on (a new
round, two epochs) and the page must change by itself (the live refresh) with one more point per
model on the loss plot; a screenshot of that plot is decoded and must hold both series' colours.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from crucible.chain.interface import SetCommitment
from crucible.competitions import specs_dir
from crucible.corpus.tokenizer import load_tokenizer
from crucible.dashboard import Dashboard, DashboardConfig, build_app
from crucible.dashboard.svg import PALETTE
from crucible.miner.publish import publish
from crucible.models.build import ModelShape, build_config, build_model
from crucible.models.io import save_model_dir
from crucible.protocol.competition import load_competitions
from crucible.scoring.windows import load_eval_pool
from crucible.server import run_in_thread
from crucible.store.documents import DocumentStore
from crucible.store.local import LocalStore
from crucible.store.resolve import model_store_resolver
from crucible.validator.bundle import load_bundle
from crucible.validator.bundle_fetch import first_of, http_source, store_source
from crucible.validator.loop import ValidatorConfig, ValidatorRuntime, run_round
from crucible.validator.state import ValidatorState
from tests.conftest import TEST_HYPERPARAMETERS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SPECS = load_competitions(specs_dir())
SPEC = SPECS["tiny"]
ATTACK = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def png_pixels(raw: bytes) -> tuple[int, int, list[bytes]]:
    """A tiny PNG reader (8-bit RGB/RGBA, no interlace): width, height and unfiltered rows."""
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, header, data = 8, b"", b""
    while pos < len(raw):
        (length,), kind = struct.unpack(">I", raw[pos : pos + 4]), raw[pos + 4 : pos + 8]
        body, pos = raw[pos + 8 : pos + 8 + length], pos + 12 + length
        header = body if kind == b"IHDR" else header
        data += body if kind == b"IDAT" else b""
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp, stream = 3 if color == 2 else 4, zlib.decompress(data)
    stride, rows, prev = width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = (
            stream[y * (stride + 1)],
            bytearray(stream[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a, b = line[i - bpp] if i >= bpp else 0, prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    rgb = [b"".join(r[i : i + 3] for i in range(0, stride, bpp)) for r in rows]
    return width, height, rgb


def _colour_count(rows: list[bytes], hex_colour: str) -> int:
    rgb = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(row[i : i + 3] == rgb for row in rows for i in range(0, len(row), 3))


def _subnet(node_factory, neuron_factory, tmp: Path):
    node = node_factory(dataclasses.replace(TEST_HYPERPARAMETERS, commitment_rate_limit=1))
    tok = load_tokenizer(specs_dir() / SPEC.model.tokenizer)
    store, documents = LocalStore(tmp / "store"), DocumentStore(tmp / "documents")
    validator = neuron_factory("dash-validator", 100, chain=node)
    miners = {}
    for seed, name in enumerate(("first", "second"), start=1):
        miners[name] = neuron_factory(f"dash-{name}", chain=node)
        model = build_model(
            build_config(ModelShape(layers=1, hidden=32, heads=2, ffn=64)), seed=seed
        )
        if name == "second":  # confidently wrong: a far higher loss than the first's
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(8.0)
        publish(save_model_dir(model, tmp / name), SPEC, store, node, 1, miners[name].hotkey)
        node.step(1)
    attacker = neuron_factory("dash-attacker", chain=node)
    node.submit(SetCommitment(netuid=1, data=ATTACK), attacker.hotkey).raise_for_failure()
    node.step(25)  # an epoch for the validator permit; past the eval delay into round block 20
    runtime = ValidatorRuntime(
        node, validator.hotkey, ValidatorConfig(1, tmp / "validator"), {"tiny": SPEC}, {"tiny": tok},
        {"tiny": load_eval_pool(FIXTURE, tok)}, model_store_resolver(store), documents=documents,
    )  # fmt: skip
    return node, runtime, documents, miners


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


@pytest.mark.timeout(240)
def test_the_page_shows_the_chain_and_the_bundle_and_follows_them_live(
    node_factory, neuron_factory, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it with apt-get"
    node, runtime, documents, miners = _subnet(node_factory, neuron_factory, tmp_path)
    state = ValidatorState()
    first = run_round(runtime, state)
    assert first.set_weights.startswith("set"), first.set_weights
    bundle = load_bundle(first.bundle_path)
    leader = max(bundle.weights, key=bundle.weights.get)
    assert leader == miners["first"].uid
    source = first_of(http_source(2.0), store_source(documents))
    dashboard = Dashboard(DashboardConfig(netuid=1, refresh_s=0.3), node, source, SPECS)
    board = f'svg[id="loss-{SPEC.key}"]'
    with run_in_thread(build_app(dashboard)) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server.url + "/")
            mg = node.metagraph(1)
            assert int(_text(page, "#block")) == mg.block
            assert int(_text(page, ".leader")) == leader
            cells = page.locator("#metagraph tbody tr").nth(leader).locator("td")
            assert cells.nth(4).inner_text() == f"{mg.neurons[leader].incentive:.4f}"
            row = page.locator(f'table[id="board-{SPEC.key}"] tbody tr').first.locator("td")
            losses = bundle.rounds[0].losses[leader]
            assert row.nth(2).inner_text() == f"{sum(losses) / len(losses):.4f}"
            assert row.nth(4).inner_text() == f"{bundle.weights[leader]:.4f}"
            assert page.locator(f"{board} circle.pt").count() == 2  # two models, one round seen
            # the attacker's commitment is text on the page, never markup that ran
            assert ATTACK in page.locator("#metagraph").inner_text()
            assert page.evaluate("window.pwned === undefined && document.scripts.length === 1")
            assert "ok" in _text(page, "#audits td.verdict") or "unverified" in _text(
                page, "#audits td.verdict"
            )

            node.step(20)  # round block 40, epochs at 30 and 40
            second = run_round(runtime, state)
            assert second.set_weights.startswith("set"), second.set_weights
            page.wait_for_function(
                f"() => document.querySelectorAll('{board} circle.pt').length === 4", timeout=30_000
            )
            assert int(_text(page, "#block")) == node.metagraph(1).block
            assert page.evaluate("window.pwned === undefined")
            incentive_points = page.locator("#incentive circle.pt")
            assert incentive_points.count() >= 2  # the leader's incentive: before and after
            shot = page.locator(board).screenshot()
            width, height, rows = png_pixels(shot)
            assert 520 <= width <= 524 and 240 <= height <= 244  # the plot and its 1px border
            assert _colour_count(rows, PALETTE[0]) > 20 and _colour_count(rows, PALETTE[1]) > 20
            full = page.screenshot(path=str(tmp_path / "dashboard.png"))
            assert full[12:16] == b"IHDR" and struct.unpack(">II", full[16:24]) == (1280, 1000)
            if os.environ.get("CRUCIBLE_DASHBOARD_SCREENSHOT"):
                page.screenshot(path=os.environ["CRUCIBLE_DASHBOARD_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
