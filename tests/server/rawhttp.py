"""Exactly these bytes over HTTP, signed or not: what the fuzz tests send to a real server.

The stdlib ``http.client`` on one keep-alive connection (reopened if the server closes it), so
hundreds of fuzzed requests cost one connection each, not one event loop each.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from bittensor_core import Keypair

from crucible.protocol.auth import sign_request

__all__ = ["RawHttp", "signed_headers"]


def signed_headers(
    keypair: Keypair, receiver_ss58: str, method: str, target: str, body: bytes
) -> dict[str, str]:
    """btauth/1 headers for ``method target`` with ``body``, as a client would send them."""
    headers = sign_request(
        keypair, method=method, path=target, body=body, receiver_ss58=receiver_ss58
    )
    if body:
        headers["Content-Type"] = "application/json"
    return headers


class RawHttp:
    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        self._host, self._port, self._timeout_s = parts.hostname, parts.port, timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def send(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """(status, body); reconnects once if the kept-alive connection was closed."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout_s
                )
            try:
                self._conn.request(method, target, body=body, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RawHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
