"""The chain: one ``Chain`` interface (``chain.interface``), the embedded local chain
(``chain.local``), exact Yuma consensus (``chain.yuma``) and the bittensor 11 backend."""
