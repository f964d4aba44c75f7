"""A real local chain with a server, a validator, a miner and a stranger (``tests.server``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Net, open_net


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with open_net(Path(tmp_path_factory.mktemp("observe-chain"))) as opened:
        yield opened
