"""Crucible: an open, incentivized model-competition subnet in the Bittensor style.

One import root. The design card's folders at the repository's top level are its role packages
(``neurons/`` → ``crucible.neurons``, ``validator/``, ``miner/``, ``protocol/``, mapped by
``pyproject.toml``); the shared layers live in this folder. Dependencies point one way:

    neurons → {miner, validator} → {client, scoring, server} → {models, corpus}
            → {chain, store, competitions} → protocol

(``tests/test_layering.py`` enforces it.)
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
