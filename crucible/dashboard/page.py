"""A ``Snapshot`` as HTML: the whole page, or just its live part (what the page's script swaps in).

Every string a neuron controls (commitments, hotkeys, verdict notes, bundle contents) goes
through ``text()``: HTML-escaped, control characters shown as ``\\xNN``, cut to a bounded length.
The page's only script is ``SCRIPT``; the app's Content-Security-Policy allows that script (by
its hash) and nothing else, so even markup that slipped through could not run.
"""

from __future__ import annotations

from html import escape

from crucible.dashboard.collect import FAILED, Leaderboard, Snapshot
from crucible.dashboard.svg import line_plot

__all__ = ["SCRIPT", "STYLE", "render_live", "render_page", "text"]

MAX_TEXT = 160

STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:4px 0} td,th{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top} th{background:#eee} td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px;word-break:break-all} .bad{color:#b00;font-weight:600} .ok{color:#070}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start} svg.plot{background:#fff;border:1px solid #ddd}
svg .title{font-size:12px;font-weight:600} svg .tick,svg .legend{font-size:10px}
svg .empty{font-size:12px;fill:#888} #status{color:#666}
"""

SCRIPT = """
(function(){
  var live=document.getElementById('live'), status=document.getElementById('status');
  var every=parseInt(live.getAttribute('data-refresh-ms'),10)||3000;
  function tick(){
    fetch('api/snapshot',{cache:'no-store'}).then(function(r){return r.json();}).then(function(s){
      status.textContent='polled at block '+s.chain.block;
      if(s.version===live.getAttribute('data-version')){return null;}
      return fetch('fragment',{cache:'no-store'}).then(function(r){return r.text();}).then(function(h){
        live.innerHTML=h; live.setAttribute('data-version',s.version);
      });
    }).catch(function(){status.textContent='dashboard unreachable; retrying';})
      .then(function(){setTimeout(tick,every);});
  }
  setTimeout(tick,every);
})();
"""


def text(value: object, limit: int = MAX_TEXT) -> str:
    """Untrusted text as inert, bounded HTML."""
    raw = "" if value is None else str(value)
    shown = "".join(c if c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in raw[: limit + 1])
    if len(raw) > limit:
        shown = shown[:limit] + f"… ({len(raw)} chars)"
    return escape(shown, quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(value: str, numeric: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("n" if numeric else "", cls) if c)
    return f'<td class="{classes}">{value}</td>' if classes else f"<td>{value}</td>"


def _chain(s: Snapshot) -> str:
    c = s.chain
    facts = [
        ("network", text(c.network)), ("netuid", str(c.netuid)), ("block", f'<b id="block">{c.block}</b>'),
        ("block hash", f"<code>{text(c.block_hash)}</code>"), ("tempo", str(c.tempo)),
        ("last epoch", "–" if c.last_epoch_block is None else str(c.last_epoch_block)),
        ("next epoch", f'<span id="next-epoch">{"–" if c.next_epoch_block is None else c.next_epoch_block}</span>'),
    ]  # fmt: skip
    line = " · ".join(f"{k} {v}" for k, v in facts)
    hp = " ".join(
        f"<code>{escape(k)}={escape(str(v))}</code>" for k, v in c.hyperparameters.items()
    )
    return f"<h2>Chain</h2><p>{line}</p><details><summary>hyperparameters</summary><p>{hp}</p></details>"


def _neurons(s: Snapshot) -> str:
    rows = [
        [
            _td(str(n.uid), True),
            _td(n.role),
            _td(f"<code>{text(n.hotkey)}</code>"),
            _td(f"{n.stake_tao:,.3f}", True),
            _td(_num(n.incentive), True),
            _td(_num(n.dividends), True),
            _td(f"{n.emission_tao:,.4f}", True),
            _td(_num(n.vtrust), True),
            _td(text(n.endpoint or "–")),
            _td(f'<code class="commitment">{text(n.commitment or "–")}</code>'),
        ]  # fmt: skip
        for n in s.neurons
    ]
    headers = ["uid", "role", "hotkey", "stake τ", "incentive", "dividends", "emission τ",
               "vtrust", "endpoint", "commitment"]  # fmt: skip
    return "<h2>Metagraph</h2>" + _table(headers, rows, "metagraph")


def _board(board: Leaderboard, s: Snapshot) -> str:
    rows = [
        [
            _td(str(r.uid), True),
            _td(f"<code>{text(r.hotkey[:16])}</code>"),
            _td(_num(r.mean_loss_nats), True),
            _td(_num(r.win_rate, 3), True),
            _td(_num(r.weight), True),
        ]  # fmt: skip
        for r in board.rows
    ]
    leader = board.rows[0].uid if board.rows else None
    series = {f"uid {uid}": pts for uid, pts in s.loss_history.get(board.competition, {}).items()}
    plot = line_plot(
        f"loss-{board.competition}", f"{board.competition}: mean loss per round", series,
        x_label="round block", y_label="loss (nats)",
    )  # fmt: skip
    return (
        f'<h3 class="competition">{text(board.competition)}</h3>'
        f"<p>round block {board.round_block} · leader uid <b class=\"leader\">{leader}</b> · from "
        f"validator uid {board.validator_uid}'s bundle <code>{text(board.bundle_id[:16])}…</code></p>"
        + '<div class="plots">'
        + _table(["uid", "hotkey", "mean loss", "win rate", "weight"], rows, f"board-{board.competition}")
        + f"{plot}</div>"
    )  # fmt: skip


def _leaderboards(s: Snapshot) -> str:
    if not s.leaderboards:
        return "<h2>Leaderboards</h2><p>no audited bundle has scored a round yet</p>"
    incentive = line_plot(
        "incentive", "incentive per epoch",
        {f"uid {uid}": pts for uid, pts in s.incentive_history.items() if any(v for _, v in pts)},
        x_label="epoch block", y_label="incentive",
    )  # fmt: skip
    boards = "".join(_board(b, s) for b in s.leaderboards)
    return f'<h2>Leaderboards</h2>{boards}<div class="plots">{incentive}</div>'


def _audits(s: Snapshot) -> str:
    rows = []
    for a in s.audits:
        cls = "ok" if a.verdict == "ok" else ("bad" if a.verdict.startswith(FAILED) else "")
        notes = "<br>".join(text(n) for n in a.notes[:8])
        rows.append([
            _td(str(a.uid), True), _td(f"<code>{text(a.hotkey[:16])}</code>"), _td(f"{a.stake_tao:,.1f}", True),
            _td(f"<code>{text((a.bundle_id or '–')[:16])}</code>"), _td("–" if a.bundle_block is None else str(a.bundle_block), True),
            _td(text(a.verdict), cls=f"verdict {cls}".strip()), _td(notes),
        ])  # fmt: skip
    headers = ["uid", "hotkey", "stake τ", "bundle", "block", "audit verdict", "notes"]
    return "<h2>Validators' bundles</h2>" + _table(headers, rows, "audits")


def _releases(s: Snapshot) -> str:
    rows = [
        [_td(text(r.competition)), _td(str(r.commit_block), True),
         _td(f"<code>{text(r.release_id[:16])}…</code>"), _td(f"<code>{text(r.publisher[:16])}</code>")]
        for r in s.releases
    ]  # fmt: skip
    ignored = "".join(
        f"<li>{text(c)}: <code>{text(h[:16])}</code>: {text(why)}</li>"
        for c, h, why in s.ignored_releases
    )
    table = (
        _table(["competition", "block", "release", "publisher"], rows, "releases")
        if rows
        else "<p>none on chain</p>"
    )
    return "<h2>Fresh data releases</h2>" + table + (f"<p>ignored:</p><ul>{ignored}</ul>" if ignored else "")  # fmt: skip


def render_live(s: Snapshot) -> str:
    """The part of the page that refreshes."""
    error = (
        f'<p class="bad" id="error">last poll failed: {text(s.error, 400)}</p>' if s.error else ""
    )
    return error + _chain(s) + _neurons(s) + _leaderboards(s) + _audits(s) + _releases(s)


def render_page(s: Snapshot, version: str, refresh_s: float) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>crucible dashboard · netuid {s.chain.netuid}</title><style>{STYLE}</style></head>"
        f"<body><h1>Crucible subnet {s.chain.netuid}</h1>"
        '<p id="status">read-only · refreshes live</p>'
        f'<div id="live" data-version="{escape(version)}" data-refresh-ms="{int(refresh_s * 1000)}">'
        f"{render_live(s)}</div><script>{SCRIPT}</script></body></html>"
    )
