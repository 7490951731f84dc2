"""The kill -9 test bed (tests/support/faults.py) as a fixture."""

from __future__ import annotations

import pytest

from tests.support.faults import FaultBed


@pytest.fixture
def bed(tmp_path) -> FaultBed:
    return FaultBed(tmp_path)


