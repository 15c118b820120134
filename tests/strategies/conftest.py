"""Every test here runs single-threaded (see the ``one_thread`` fixture in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    return None
