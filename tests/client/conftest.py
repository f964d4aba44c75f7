"""The client tests' subnet (``tests.client.world``), built once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.world import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("client-world"))
    yield built
    built.close()
