"""Scoring that miner, validator and auditor must compute identically: the round's samples and
windows, per-sample losses and token log-probabilities, and the competition math. Pure functions
(the windows read the corpus through ``crucible.corpus``); no chain, no network."""
