"""The validator: the round loop, probe, state, score bundles, verify and explain."""
