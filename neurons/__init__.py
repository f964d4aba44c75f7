"""Entry points: the console scripts crucible, crucible-miner, crucible-validator, crucible-client
and the demo. Thin: they parse options and call into the role packages."""
