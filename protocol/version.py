"""Version constants both sides agree on."""

from __future__ import annotations

__all__ = ["CODE_VERSION", "SPEC_VERSION"]

CODE_VERSION = "0.1.0"
# The weights version key validators send (major·1000 + minor·10 + patch): a subnet owner raises
# ``weights_version`` to make validators on older code unable to set weights.
SPEC_VERSION = 10
