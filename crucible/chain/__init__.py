"""The chain: one ``Chain`` interface (``chain.interface``), the embedded local chain
(``chain.local``), exact Yuma consensus (``chain.yuma``), subtensor's hyperparameter rules
(``chain.hyperparameters``: types, bounds, owner vs root) and the bittensor 11 backend."""
