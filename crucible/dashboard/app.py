"""The dashboard's web app: one owned background task polls the chain, requests read the latest
snapshot.

``/`` is the page, ``/fragment`` its live part, ``/api/snapshot`` the snapshot as JSON (with a
``version`` that changes when the content does: the page's script polls it and swaps in a new
fragment only then), ``/health`` for probes. Read-only: no keys, no writes, GET only. A poll that
fails keeps the previous snapshot and shows the error on the page; the poll goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from crucible.chain.interface import Chain
from crucible.dashboard.collect import History, Snapshot, collect
from crucible.dashboard.page import SCRIPT, STYLE, render_live, render_page
from crucible.protocol.competition import CompetitionSpec
from crucible.protocol.errors import ConfigError, CrucibleError
from crucible.validator.audit import BundleSource

__all__ = ["Dashboard", "DashboardConfig", "build_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DashboardConfig:
    netuid: int = 1
    network: str = "localnet"
    epoch_rule: str = "local"  # "local" (the embedded chain) or "subtensor" (see epoch_blocks)
    refresh_s: float = 3.0  # how often the chain is polled and the page checks for news
    history_points: int = 200  # per series

    def __post_init__(self) -> None:
        if self.epoch_rule not in ("local", "subtensor"):
            raise ConfigError(f"epoch_rule is 'local' or 'subtensor', not {self.epoch_rule!r}")
        if not self.refresh_s > 0 or self.history_points < 1:
            raise ConfigError("the refresh interval must be > 0 s and the history ≥ 1 point")


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; script-src {_sha256_source(SCRIPT)}; style-src {_sha256_source(STYLE)}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Dashboard:
    """The poller's state: the latest snapshot and the history behind its plots (per instance)."""

    def __init__(
        self,
        config: DashboardConfig,
        chain: Chain,
        source: BundleSource,
        specs: Mapping[str, CompetitionSpec],
    ) -> None:
        self.config, self._chain, self._source, self._specs = config, chain, source, specs
        self._history = History(max_points=config.history_points)
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._version = ""
        self._error: str | None = None

    def refresh(self) -> Snapshot | None:
        """Poll once (blocking: run it in a thread from async code)."""
        cfg = self.config
        try:
            snap = collect(
                self._chain, cfg.netuid, self._source, self._specs, self._history,
                network=cfg.network, epoch_rule=cfg.epoch_rule,
            )  # fmt: skip
            error = None
        except CrucibleError as exc:  # the chain is down or refused: say so, keep the last one
            log.warning("dashboard poll failed: %s: %s", exc.code, exc)
            snap, error = None, f"{exc.code}: {exc}"
        with self._lock:
            self._error = error
            if snap is not None:
                self._latest = snap
                self._version = hashlib.sha256(_json(snap).encode()).hexdigest()[:16]
            return self._shown()

    def _shown(self) -> Snapshot | None:
        if self._latest is None:
            return None
        return dataclasses.replace(self._latest, error=self._error)

    def latest(self) -> tuple[Snapshot | None, str, str | None]:
        with self._lock:
            version = self._version + ("-stale" if self._error else "")
            return self._shown(), version, self._error


def _json(snap: Snapshot) -> str:
    return json.dumps(dataclasses.asdict(snap), sort_keys=True, allow_nan=False)


def _poller(dashboard: Dashboard) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(dashboard.config.refresh_s)
                try:
                    await asyncio.to_thread(dashboard.refresh)
                except Exception:  # a bug in one poll: logged with its traceback, the page stays
                    log.exception("dashboard poll crashed")

        await asyncio.to_thread(dashboard.refresh)  # the first page already has data
        task = asyncio.create_task(loop(), name="dashboard-poller")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }


def _unavailable(error: str | None) -> Response:
    body = {"error": {"code": "no_snapshot", "message": error or "the first poll has not finished"}}
    return JSONResponse(body, status_code=503, headers=_headers())


def build_app(dashboard: Dashboard) -> FastAPI:
    app = FastAPI(lifespan=_poller(dashboard), docs_url=None, redoc_url=None, openapi_url=None)
    refresh_s = dashboard.config.refresh_s

    @app.get("/")
    def page() -> Response:
        snap, version, error = dashboard.latest()
        if snap is None:
            return _unavailable(error)
        return HTMLResponse(render_page(snap, version, refresh_s), headers=_headers())

    @app.get("/fragment")
    def fragment() -> Response:
        snap, _, error = dashboard.latest()
        if snap is None:
            return _unavailable(error)
        return HTMLResponse(render_live(snap), headers=_headers())

    @app.get("/api/snapshot")
    def snapshot() -> Response:
        snap, version, error = dashboard.latest()
        if snap is None:
            return _unavailable(error)
        body = json.loads(_json(snap)) | {"version": version}
        return JSONResponse(body, headers=_headers())

    @app.get("/health")
    def health() -> dict[str, object]:
        snap, _, error = dashboard.latest()
        return {
            "ok": snap is not None and error is None,
            "block": snap.chain.block if snap else None,
        }

    return app
