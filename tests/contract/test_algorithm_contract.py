"""Every registered algorithm, in process, against the shared contract."""

from __future__ import annotations

import pytest

from katib.testing.algorithms import AlgorithmContract
from suggestion_services.registry import ALGORITHMS


@pytest.fixture(params=sorted(ALGORITHMS))
def algorithm_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestAlgorithmContract(AlgorithmContract):
    """Runs AlgorithmContract for each entry of registry.ALGORITHMS."""
