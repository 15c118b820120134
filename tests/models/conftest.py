"""One intra-op thread per test: on a shared 2-core machine OpenMP threads that wait for a busy
core make conv timings erratic (10× and worse); one thread keeps these tests fast and steady."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
