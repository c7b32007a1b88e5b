"""The ``member`` fixture: every zoo test runs once per architecture in the registry."""

from __future__ import annotations

import pytest

from tests.zoo._registry import ZOO, ZooMember


@pytest.fixture(params=ZOO, ids=[m.name for m in ZOO])
def member(request: pytest.FixtureRequest) -> ZooMember:
    return request.param
