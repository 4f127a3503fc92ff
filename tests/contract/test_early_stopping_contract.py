"""Every registered early-stopping algorithm, in process, against the shared contract."""

from __future__ import annotations

import pytest

from katib.testing.early_stopping import EarlyStoppingContract
from suggestion_services.early_stopping import EARLY_STOPPING


@pytest.fixture(params=sorted(EARLY_STOPPING))
def algorithm_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestEarlyStoppingContract(EarlyStoppingContract):
    """Runs EarlyStoppingContract for each entry of early_stopping.EARLY_STOPPING."""
