"""make_split: determinism, disjointness, balance, caps and the errors for small pools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtransfer.config import from_dict
from medtransfer.data import Split, SplitConfig, make_split
from medtransfer.errors import ConfigError, DataError

LABELS = np.repeat([0, 1, 2], [60, 50, 40])
CLASSES = ["normal", "covid", "tb"]


def _all_parts(split: Split) -> list[np.ndarray]:
    return [split.train, split.val, *split.tests.values()]


def test_same_seed_same_split_other_seed_differs():
    cfg = SplitConfig(test_sets=2, test_per_class=5, train_per_class=30, val_fraction=0.2)
    a = make_split(LABELS, cfg, seed=7)
    b = make_split(LABELS, cfg, seed=7)
    c = make_split(LABELS, cfg, seed=8)
    for x, y in zip(_all_parts(a), _all_parts(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train, c.train)
    assert not np.array_equal(a.tests["test_1"], c.tests["test_1"])


def test_test_sets_are_balanced_and_everything_disjoint():
    cfg = SplitConfig(test_sets=3, test_per_class=8, val_fraction=0.1)
    split = make_split(LABELS, cfg, seed=0)
    assert list(split.tests) == ["test_1", "test_2", "test_3"]
    for idx in split.tests.values():
        assert np.bincount(LABELS[idx]).tolist() == [8, 8, 8]
    parts = _all_parts(split)
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == len(LABELS)  # disjoint, nothing lost
    assert all(p.dtype.kind == "i" and (np.diff(p) > 0).all() for p in parts)


def test_train_cap_then_stratified_val():
    cfg = SplitConfig(test_sets=1, test_per_class=10, train_per_class=20, val_fraction=0.25)
    split = make_split(LABELS, cfg, seed=1)
    pool = np.concatenate([split.train, split.val])
    assert np.bincount(LABELS[pool]).tolist() == [20, 20, 20]
    assert np.bincount(LABELS[split.val]).tolist() == [5, 5, 5]


def test_too_small_pool_names_the_class():
    labels = np.repeat([0, 1], [700, 512])
    cfg = SplitConfig(test_sets=4, test_per_class=150)
    with pytest.raises(DataError) as info:
        make_split(labels, cfg, seed=0, classes=["Normal", "COVID"])
    assert str(info.value) == (
        "test_sets=4 × test_per_class=150 needs 600 images of class 'COVID' but it has 512"
    )


def test_test_fraction_is_stratified():
    split = make_split(LABELS, SplitConfig(test_fraction=0.2, val_fraction=0.1), seed=3)
    assert list(split.tests) == ["test"]
    assert np.bincount(LABELS[split.tests["test"]]).tolist() == [12, 10, 8]


def test_class_missing_from_val_is_an_error():
    labels = np.repeat([0, 1], [300, 3])
    with pytest.raises(DataError, match=r"val part would get 0 images of class.*'rare'"):
        make_split(labels, SplitConfig(val_fraction=0.1), seed=0, classes=["common", "rare"])


def test_test_sets_consuming_a_class_leave_training_empty():
    labels = np.repeat([0, 1], [20, 10])
    cfg = SplitConfig(test_sets=2, test_per_class=5, val_fraction=0.0)
    with pytest.raises(DataError, match=r"train part would get 0 images of class.*'b'"):
        make_split(labels, cfg, seed=0, classes=["a", "b"])


def test_no_validation_part_when_fraction_is_zero():
    split = make_split(LABELS, SplitConfig(val_fraction=0.0), seed=0)
    assert len(split.val) == 0 and len(split.train) == len(LABELS)


def test_official_splits_from_origin():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    origin = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    split = make_split(labels, SplitConfig(use_official=True), seed=0, origin=origin)
    assert split.train.tolist() == [0, 1, 2, 3]
    assert split.val.tolist() == [4, 5] and split.tests["test"].tolist() == [6, 7]
    with pytest.raises(DataError, match=r"a MedMNIST .npz, or a CSV source with data.split_column"):
        make_split(labels, SplitConfig(use_official=True), seed=0)


def test_summary_is_json_able():
    cfg = SplitConfig(test_sets=1, test_per_class=5)
    split = make_split(LABELS, cfg, seed=0)
    summary = split.summary(LABELS, CLASSES)
    json.dumps(summary)
    assert summary["test_1"] == {"normal": 5, "covid": 5, "tb": 5, "total": 15}
    assert sum(part["total"] for part in summary.values()) == len(LABELS)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"test_sets": 2}, "test_per_class"),
        ({"test_per_class": 5}, "test_per_class"),
        ({"test_sets": 1, "test_per_class": 5, "test_fraction": 0.2}, "test_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"train_per_class": 0}, "train_per_class"),
        ({"use_official": True, "test_fraction": 0.2}, "use_official"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(SplitConfig, data, "split")
