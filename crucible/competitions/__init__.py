"""The competitions this release ships: TOML specs and their tokenizers, as package data.

Read through ``importlib.resources`` so an installed wheel finds them exactly as a checkout does.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from crucible.protocol.errors import ConfigError

__all__ = ["specs_dir"]


def specs_dir() -> Path:
    """The folder holding ``*.toml`` specs and ``tokenizers/`` (a real folder: wheels install
    package data as files)."""
    root = files(__name__)
    if not isinstance(root, Path) or not root.is_dir():
        raise ConfigError(
            f"the bundled competition specs are not a folder on disk ({root!r})",
            fix="install crucible unzipped, or pass --specs FOLDER",
        )
    return root
