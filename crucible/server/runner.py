"""Running an ASGI app with uvicorn: in a background thread on a free loopback port (tests, demo)
or in the foreground (neurons)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from crucible.protocol.errors import ConfigError

__all__ = ["RunningServer", "run_in_thread", "serve"]


def _config(app: Any, log_level: str, loop: str, http: str) -> uvicorn.Config:
    # access_log off: one log line per request costs more than the request itself at 1k req/s.
    # loop/http "auto" picks uvloop and httptools when installed (uvicorn[standard]).
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        log_config=None,  # uvicorn's lines go through the entry point's handler (observe.logs)
        lifespan="on",
        timeout_graceful_shutdown=2,
        loop=loop,
        http=http,
    )


@dataclass
class RunningServer:
    """A uvicorn server running in a daemon thread; ``stop()`` shuts it down and joins."""

    host: str
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # a handler is stuck past the graceful window
            self._server.force_exit = True
            self._thread.join(timeout_s)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout_s: float = 15.0,
    loop: str = "auto",
    http: str = "auto",
) -> RunningServer:
    """Start ``app`` on ``host:port`` (0 = a free port) and return once it accepts connections."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, log_level, loop, http))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise ConfigError(f"server on {host}:{bound_port} did not start")
        time.sleep(0.01)
    return RunningServer(host=host, port=bound_port, _server=server, _thread=thread)


class _AnnouncingServer(uvicorn.Server):
    """Calls ``on_started`` once the sockets are bound (not before: a caller told "ready" must be
    able to connect at once)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def serve(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` in the foreground until SIGINT/SIGTERM (what a neuron's ``serve`` runs)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, log_config=None
    )
    _AnnouncingServer(config, on_started).run()
