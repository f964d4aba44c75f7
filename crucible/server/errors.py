"""Errors only a server raises, and the one table mapping every error code to an HTTP status.

Request-level failures reuse the project tree (``AuthError`` for 401/403, ``RequestError`` for
400/413, ``ChainUnavailable`` for 503); the two that fit no existing branch live here:

    CrucibleError
    ├── RateLimited        429: token bucket empty or concurrency cap reached (hotkey or global)
    ├── Overloaded         503: no room for this request in the serving capacity (capacity.py)
    ├── WorkCancelled      503: model work stopped because nobody waits for it any more
    └── HandlerTimeout     504: the route's handler ran past its timeout
"""

from __future__ import annotations

from crucible.protocol.errors import AuthError, ChainError, CrucibleError, RequestError

__all__ = [
    "STATUS_BY_CODE",
    "HandlerTimeout",
    "Overloaded",
    "RateLimited",
    "WorkCancelled",
    "status_for",
]


class RateLimited(CrucibleError):
    code = "rate_limited"


class Overloaded(CrucibleError):
    code = "server_busy"


class WorkCancelled(CrucibleError):
    code = "work_cancelled"


class HandlerTimeout(CrucibleError):
    code = "handler_timeout"


# Stable wire codes. Clients may switch on these; never renumber or rename one.
STATUS_BY_CODE: dict[str, int] = {
    "malformed": 400,
    "bad_request": 400,
    "malformed_auth": 401,
    "bad_signature": 401,
    "stale_request": 401,
    "replayed_request": 401,
    "wrong_receiver": 401,
    "not_registered": 403,
    "no_validator_permit": 403,
    "insufficient_stake": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "limit_exceeded": 400,
    "body_too_large": 413,
    "rate_limited": 429,
    "too_many_concurrent": 429,
    "public_rate_limited": 429,
    "internal_error": 500,
    "metagraph_unavailable": 503,
    "server_busy": 503,
    "public_queue_full": 503,
    "no_public_capacity": 503,
    "work_cancelled": 503,
    "handler_timeout": 504,
}


def status_for(error: CrucibleError) -> int:
    """HTTP status for ``error``: its code if the table knows it, else its branch of the tree."""
    status = STATUS_BY_CODE.get(error.code)
    if status is not None:
        return status
    if isinstance(error, AuthError):
        return 401
    if isinstance(error, RequestError):
        return 400
    if isinstance(error, RateLimited):
        return 429
    if isinstance(error, (Overloaded, WorkCancelled)):
        return 503
    if isinstance(error, HandlerTimeout):
        return 504
    if isinstance(error, ChainError):
        return 503
    return 500
