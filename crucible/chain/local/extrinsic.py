"""The signed extrinsic envelope of the local chain: canonical bytes, signing, verification.

An extrinsic is ``{"call", "params", "signer", "nonce", "genesis"}`` serialised as canonical JSON
(sorted keys, no spaces, UTF-8) and signed with sr25519 by ``signer``. Binding the genesis hash
stops an extrinsic from replaying on another chain; the per-account nonce stops it replaying on
this one. Verification uses ``bittensor_core`` (the same sr25519 as the real chain).

The extrinsic's ``digest`` is the BLAKE2b-256 of the canonical bytes of the whole envelope,
signature included (as a Substrate extrinsic hash covers the signed bytes): the node records it
with the result, so re-sending the same signed envelope after a lost reply is recognised and
answered with that result instead of running twice. ``parse_envelope`` reads untrusted request
bytes with bounded nesting and integer size before anything else looks at them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import bittensor_core

from crucible.chain.interface import Call, Signer
from crucible.protocol.errors import ExtrinsicRejected

__all__ = [
    "DIGEST_PATTERN",
    "MAX_EXTRINSIC_BYTES",
    "MAX_JSON_DEPTH",
    "SignedExtrinsic",
    "canonical_bytes",
    "parse_envelope",
    "sign_call",
]

MAX_EXTRINSIC_BYTES = 256 * 1024
MAX_JSON_DEPTH = 8  # an envelope is 3 deep ({params: {uids: [...]}}); this leaves room, no more
MAX_INT = 2**63 - 1  # what SQLite stores; larger integers are refused before any rule runs
DIGEST_PATTERN = re.compile(r"^0x[0-9a-f]{64}$")


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

    def digest(self) -> str:
        """0x-hex BLAKE2b-256 of the canonical bytes of the signed envelope."""
        body = canonical_bytes(self.to_json())
        return "0x" + hashlib.blake2b(body, digest_size=32).hexdigest()

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


def _json_depth(body: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _bounded_int(text: str) -> int:
    # Refusing long digit strings here also keeps Python's int parser from doing quadratic work.
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) > MAX_INT:
        raise ExtrinsicRejected(
            f"integers in an extrinsic are at most {MAX_INT} in magnitude", code="malformed"
        )
    return value


def parse_envelope(body: bytes) -> SignedExtrinsic:
    """Parse untrusted request bytes into an envelope, or raise ``ExtrinsicRejected``
    (``too_large``, ``malformed``): bounded size, nesting depth and integer magnitude."""
    if len(body) > MAX_EXTRINSIC_BYTES:
        raise ExtrinsicRejected(
            f"an extrinsic is at most {MAX_EXTRINSIC_BYTES} bytes", code="too_large"
        )
    if _json_depth(body) > MAX_JSON_DEPTH:
        raise ExtrinsicRejected(
            f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="malformed"
        )
    try:
        obj = json.loads(body, parse_int=_bounded_int, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ExtrinsicRejected("the body is not JSON", code="malformed") from exc
    return SignedExtrinsic.from_json(obj)


def _no_constant(name: str) -> Any:
    raise ExtrinsicRejected(f"{name} is not JSON", code="malformed")


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
