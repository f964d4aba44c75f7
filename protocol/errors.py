"""One error root for the whole project.

Every expected failure raises a subclass of ``CrucibleError`` carrying a stable machine ``code``
and a ``fix`` for people. Edges (HTTP servers, CLIs, the chain node) map them once to a status
or exit code; nothing in between swallows them.

    CrucibleError
    ├── ConfigError            bad settings, files or flags
    ├── ChainError             anything the chain refused or could not do
    │   ├── ChainUnavailable   node unreachable / timed out
    │   └── ExtrinsicRejected  a signed call refused by the chain (code says why)
    ├── AuthError              request signing / verification (401/403 at the HTTP edge)
    ├── RequestError           malformed or oversized input (400/413)
    ├── CommitmentError        a model commitment that cannot be parsed or built
    ├── ModelRejected          a model that fails a competition's constraints
    ├── StoreError             the model store failed or holds something else
    │   └── ModelUnavailable   the store could not be reached now (transient: retry later)
    ├── ResourceExhausted      this machine ran out of memory: the validator's problem, not the model's
    └── DataError              corpus / tokenizer problems

``transient`` is True on errors that say nothing about the input (retry later; never record them
as a miner's rejection).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ChainError",
    "ChainUnavailable",
    "CommitmentError",
    "ConfigError",
    "CrucibleError",
    "DataError",
    "ExtrinsicRejected",
    "ModelRejected",
    "ModelUnavailable",
    "PayloadRejected",
    "RequestError",
    "ResourceExhausted",
    "StoreError",
]


class CrucibleError(Exception):
    """Root of every error Crucible raises on purpose."""

    code: str = "crucible_error"
    exit_code: int = 1
    transient: bool = False  # True: nothing wrong with the input, the same call may succeed later

    def __init__(self, message: str, *, code: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.fix:
            out["fix"] = self.fix
        return out


class ConfigError(CrucibleError):
    code = "config_error"
    exit_code = 2


class ChainError(CrucibleError):
    code = "chain_error"


class ChainUnavailable(ChainError):
    code = "chain_unavailable"
    transient = True  # the node is unreachable now; the same call may succeed later


class ExtrinsicRejected(ChainError):
    """A signed call the chain refused; ``code`` names the rule (e.g. ``not_registered``)."""

    code = "extrinsic_rejected"


class AuthError(CrucibleError):
    code = "auth_error"


class RequestError(CrucibleError):
    code = "bad_request"


class CommitmentError(CrucibleError):
    code = "bad_commitment"


class ModelRejected(CrucibleError):
    code = "model_rejected"

    def __init__(self, reason: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, code=reason, fix=fix)
        self.reason = reason


class StoreError(CrucibleError):
    code = "store_error"


class ModelUnavailable(StoreError):
    """The store is unreachable, timed out, answered 5xx or is disabled here: not the miner's fault."""

    code = "store_unavailable"
    transient = True


class ResourceExhausted(CrucibleError):
    """This machine ran out of (GPU or host) memory; the model being evaluated is not to blame."""

    code = "validator_out_of_memory"
    transient = True


class DataError(CrucibleError):
    code = "data_error"


class PayloadRejected(CrucibleError):
    """A collaborative-training payload (a compressed pseudo-gradient) is malformed: its sender's
    problem, scored 0 for that round; ``code`` says what was wrong."""

    code = "bad_payload"
