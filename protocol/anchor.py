"""A validator's bundle anchored on chain: its commitment names its latest bundle.

``crucible-bundle@1:<bundle_id>`` (80 bytes, within the chain's 128): a validator commits no
model, so its commitment slot holds the id of the latest bundle it published; an auditor who
fetches a bundle from anywhere checks it against that id. The commitment rate limit decides how
often the anchor can move: a validator anchors its newest bundle whenever the chain allows.
"""

from __future__ import annotations

import re

__all__ = ["ANCHOR_PREFIX", "anchor_text", "parse_anchor"]

ANCHOR_PREFIX = "crucible-bundle@1:"
_ID = re.compile(r"^[0-9a-f]{64}$")


def anchor_text(bundle_id: str) -> str:
    if not _ID.match(bundle_id):
        raise ValueError(f"{bundle_id!r} is not a bundle id")
    return ANCHOR_PREFIX + bundle_id


def parse_anchor(commitment: str | None) -> str | None:
    """The bundle id a commitment anchors, or None if it is not a bundle anchor."""
    if commitment is None or not commitment.startswith(ANCHOR_PREFIX):
        return None
    bundle_id = commitment[len(ANCHOR_PREFIX) :]
    return bundle_id if _ID.match(bundle_id) else None
