"""The bundled demo data: present, small, licensed, loadable."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.data import (
    DEMO_CLASSES,
    DataConfig,
    PreprocessConfig,
    SplitConfig,
    demo_path,
    load_dataset,
    make_split,
)
from medtransfer.errors import DataError


def test_demo_files_exist_and_are_small():
    paths = [demo_path(name) for name in DEMO_CLASSES]
    attribution = paths[0].parent / "ATTRIBUTION.md"
    assert all(p.is_file() for p in paths) and attribution.is_file()
    assert sum(p.stat().st_size for p in [*paths, attribution]) < 10 * 1024 * 1024
    text = attribution.read_text(encoding="utf-8")
    for needle in ("CC BY 4.0", "Scientific Data", "Kermany", "Al-Dhabyani", "make_demo_data.py"):
        assert needle in text


@pytest.mark.parametrize("name", sorted(DEMO_CLASSES))
def test_demo_sets_load_with_their_class_names(name):
    data = load_dataset(DataConfig(path=f"demo:{name}"), PreprocessConfig(size=28))
    assert list(data.classes) == DEMO_CLASSES[name]
    assert data.images.shape[1:] == (1, 28, 28) and data.images.dtype == np.uint8
    assert set(data.origin or []) == {"train", "val", "test"}
    same = load_dataset(DataConfig(path=demo_path(name)), PreprocessConfig(size=28))
    np.testing.assert_array_equal(data.images, same.images)
    split = make_split(data.labels, SplitConfig(use_official=True), 0, origin=data.origin)
    assert len(split.train) > len(split.tests["test"]) > 0


def test_demo_source_is_balanced_and_target_complete():
    source = load_dataset(DataConfig(path="demo:demo_source"), PreprocessConfig(size=28))
    target = load_dataset(DataConfig(path="demo:demo_target"), PreprocessConfig(size=28))
    assert source.class_counts() == {"normal": 800, "pneumonia": 800}
    assert len(target) == 780


def test_unknown_demo_name_lists_valid_ones():
    with pytest.raises(DataError, match=r"did you mean 'demo_source'.*demo_source, demo_target"):
        demo_path("demo_sourc")
    with pytest.raises(DataError, match=r"demo_source, demo_target"):
        load_dataset(DataConfig(path="demo:pneumonia"), PreprocessConfig(size=28))
