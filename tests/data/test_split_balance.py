"""Per-class training counts (train_per_class as a mapping) and the imbalanced data set
(split.imbalance, seed 001's 1:10 COVID set): counts, determinism, grouping, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.config import from_dict
from medtransfer.data import SplitConfig, group_leaks, make_split
from medtransfer.errors import ConfigError, DataError

CLASSES = ["Normal", "COVID"]
LABELS = np.repeat([0, 1], [200, 150])


def _counts(idx: np.ndarray) -> list[int]:
    return np.bincount(LABELS[idx], minlength=2).tolist()


def test_per_class_mapping_draws_each_named_count_and_leaves_the_rest_whole():
    cfg = from_dict(SplitConfig, {"test_sets": 1, "test_per_class": 20,
                                  "train_per_class": {"COVID": 13}, "val_fraction": 0.0}, "split")
    split = make_split(LABELS, cfg, seed=4, classes=CLASSES)
    assert _counts(split.train) == [180, 13]
    assert _counts(split.tests["test_1"]) == [20, 20]
    with_val = make_split(LABELS, SplitConfig(train_per_class={"Normal": 100, "COVID": 10},
                                              val_fraction=0.2), seed=4, classes=CLASSES)
    assert _counts(np.concatenate([with_val.train, with_val.val])) == [100, 10]
    assert _counts(with_val.val) == [20, 2]


def test_imbalance_keeps_a_fraction_of_the_largest_class_before_every_part():
    cfg = SplitConfig(imbalance={"COVID": 0.1}, test_fraction=0.2, val_fraction=0.2)
    split = make_split(LABELS, cfg, seed=7, classes=CLASSES)
    used = np.concatenate([split.train, split.val, *split.tests.values()])
    assert len(set(used.tolist())) == len(used)  # disjoint
    assert _counts(used) == [200, 20]  # 0.1 × 200 COVID, every Normal image
    for part in (split.train, split.val, split.tests["test"]):
        normal, covid = _counts(part)
        assert covid > 0 and 8 <= normal / covid <= 12  # 1:10 in every part (stratified)
    again = make_split(LABELS, cfg, seed=7, classes=CLASSES)
    other = make_split(LABELS, cfg, seed=8, classes=CLASSES)
    np.testing.assert_array_equal(split.train, again.train)
    assert not np.array_equal(np.sort(used), np.sort(np.concatenate(
        [other.train, other.val, *other.tests.values()])))


def test_imbalance_with_groups_keeps_groups_on_one_side():
    groups = np.array([f"p{i // 2}" for i in range(len(LABELS))])
    cfg = SplitConfig(imbalance={"COVID": 0.2}, test_fraction=0.25, val_fraction=0.2)
    split = make_split(LABELS, cfg, seed=1, classes=CLASSES, groups=groups)
    used = np.concatenate([split.train, split.val, *split.tests.values()])
    assert _counts(used)[1] <= 40 and _counts(used)[0] == 200
    assert group_leaks(split, groups) == {}


def test_defaults_leave_existing_splits_unchanged():
    cfg = SplitConfig(test_sets=2, test_per_class=10, train_per_class=50, val_fraction=0.1)
    split = make_split(LABELS, cfg, seed=3, classes=CLASSES)
    as_map = make_split(LABELS, SplitConfig(test_sets=2, test_per_class=10,
                                            train_per_class={"Normal": 50, "COVID": 50},
                                            val_fraction=0.1), seed=3, classes=CLASSES)
    for a, b in zip(split.parts.values(), as_map.parts.values(), strict=True):
        np.testing.assert_array_equal(a, b)  # a mapping of equal counts is the same draw


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (SplitConfig(imbalance={"Covid": 0.1}),
         "'split.imbalance': got class 'Covid'; did you mean 'COVID'? The data set's classes: Normal, COVID"),
        (SplitConfig(train_per_class={"covid": 5}), "did you mean 'COVID'"),
        (SplitConfig(imbalance={"COVID": 0.9}),
         "class 'COVID' at 0.9 × 200 (the largest class, 'Normal') needs 180 images but it has 150"),
        (SplitConfig(test_sets=1, test_per_class=100, train_per_class={"COVID": 60}),
         "'split.train_per_class': class 'COVID' needs 60 training-pool images but 50 are left"),
    ],
)
def test_too_few_images_or_unknown_class_is_named(cfg, message):
    with pytest.raises(DataError) as info:
        make_split(LABELS, cfg, seed=0, classes=CLASSES)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"imbalance": {"COVID": 0.0}}, "imbalance"),
        ({"imbalance": {"COVID": 1.5}}, "imbalance"),
        ({"imbalance": {}}, "imbalance"),
        ({"train_per_class": {"COVID": 0}}, "train_per_class"),
        ({"train_per_class": {"COVID": "many"}}, "train_per_class"),
        ({"folds": 3, "imbalance": {"COVID": 0.1}}, "folds"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(SplitConfig, data, "split")
