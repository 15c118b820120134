"""Real chest X-rays from ../shared/data (skipped where that folder is absent)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from medtransfer.data import (
    DataConfig,
    ImageCache,
    PreprocessConfig,
    SplitConfig,
    load_dataset,
    make_split,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TB = SHARED / "cxr" / "tb"


@pytest.mark.integration
def test_tb_folder_loads_fast_and_caches(tmp_path):
    if not TB.is_dir():
        pytest.skip(f"shared data folder {TB} is absent")
    cache = ImageCache(tmp_path / "cache")
    start = time.perf_counter()
    data = load_dataset(DataConfig(path=TB), PreprocessConfig(size=32), cache, workers=2)
    elapsed = time.perf_counter() - start
    assert data.classes == ("Normal", "TB")
    assert data.class_counts() == {"Normal": 1200, "TB": 1200}
    assert data.images.shape == (2400, 1, 32, 32) and data.images.dtype == np.uint8
    assert data.skipped == [] and elapsed < 30
    assert 40 < data.images.mean() < 215  # real radiographs, not blank
    again = load_dataset(DataConfig(path=TB), PreprocessConfig(size=32), cache)
    assert cache.hits == 2400
    np.testing.assert_array_equal(data.images, again.images)
    split = make_split(
        data.labels, SplitConfig(test_sets=2, test_per_class=100, train_per_class=300), seed=0
    )
    assert split.summary(data.labels, data.classes)["train"]["total"] == 540
