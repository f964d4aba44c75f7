"""The signed extrinsic envelope of the local chain: canonical bytes, signing, verification.

An extrinsic is ``{"call", "params", "signer", "nonce", "genesis"}`` serialised as canonical JSON
(sorted keys, no spaces, UTF-8) and signed with sr25519 by ``signer``. Binding the genesis hash
stops an extrinsic from replaying on another chain; the per-account nonce stops it replaying on
this one. Verification uses ``bittensor_core`` (the same sr25519 as the real chain).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import bittensor_core

from crucible.chain.interface import Call, Signer
from crucible.protocol.errors import ExtrinsicRejected

__all__ = ["SignedExtrinsic", "canonical_bytes", "sign_call"]

MAX_EXTRINSIC_BYTES = 256 * 1024


def canonical_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class SignedExtrinsic:
    call: str
    params: dict[str, Any]
    signer: str
    nonce: int
    genesis: str
    signature: str  # 0x-hex, 64 bytes

    def payload(self) -> bytes:
        return canonical_bytes(
            {
                "call": self.call,
                "params": self.params,
                "signer": self.signer,
                "nonce": self.nonce,
                "genesis": self.genesis,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "call": self.call,
            "params": self.params,
            "signer": self.signer,
            "nonce": self.nonce,
            "genesis": self.genesis,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, obj: Any) -> SignedExtrinsic:
        if not isinstance(obj, dict):
            raise ExtrinsicRejected("an extrinsic must be a JSON object", code="malformed")
        expected = {"call", "params", "signer", "nonce", "genesis", "signature"}
        if set(obj) != expected:
            raise ExtrinsicRejected(
                f"an extrinsic has exactly the keys {sorted(expected)}; got {sorted(obj)}",
                code="malformed",
            )
        kinds = {
            "call": str,
            "params": dict,
            "signer": str,
            "nonce": int,
            "genesis": str,
            "signature": str,
        }
        for key, kind in kinds.items():
            value = obj[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ExtrinsicRejected(
                    f"extrinsic field {key!r} must be {kind.__name__}", code="malformed"
                )
        if obj["nonce"] < 0:
            raise ExtrinsicRejected("nonce must be non-negative", code="malformed")
        return cls(**obj)

    def verify(self) -> None:
        """Raise ``ExtrinsicRejected(code="bad_signature")`` unless ``signer`` signed this."""
        try:
            signature = bytes.fromhex(self.signature.removeprefix("0x"))
            ok = len(signature) == 64 and bittensor_core.verify(
                self.payload(), signature, self.signer
            )
        except (ValueError, TypeError) as exc:
            raise ExtrinsicRejected(
                f"signature or signer is malformed: {exc}", code="bad_signature"
            ) from exc
        except Exception as exc:  # bittensor_core raises its own errors for bad ss58 strings
            raise ExtrinsicRejected(
                f"cannot verify signer {self.signer!r}: {exc}", code="bad_signature"
            ) from exc
        if not ok:
            raise ExtrinsicRejected(
                f"the signature does not match signer {self.signer} for this payload",
                code="bad_signature",
            )


def sign_call(call: Call, signer: Signer, *, nonce: int, genesis: str) -> SignedExtrinsic:
    unsigned = SignedExtrinsic(
        call=call.name,
        params=call.params(),
        signer=signer.ss58_address,
        nonce=nonce,
        genesis=genesis,
        signature="",
    )
    signature = signer.sign(unsigned.payload())
    return SignedExtrinsic(**{**unsigned.to_json(), "signature": "0x" + bytes(signature).hex()})
