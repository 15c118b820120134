"""Patient groups: from a CSV column or a file-name pattern; grouped splits and k-fold CV."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medtransfer.config import from_dict
from medtransfer.data import DataConfig, PreprocessConfig, SplitConfig, load_dataset, make_split
from medtransfer.data.folds import make_folds
from medtransfer.data.sources import list_files
from medtransfer.data.splits import group_leaks
from medtransfer.errors import ConfigError, DataError

PRE = PreprocessConfig(size=8)


def _patients(n_groups: int, seed: int, max_size: int = 4, p_pos: float = 0.4):
    """Labels and patient ids: each patient has 1..max_size images, all of one class."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, n_groups)
    classes = (rng.random(n_groups) < p_pos).astype(np.int64)
    labels = np.repeat(classes, sizes)
    groups = np.repeat([f"p{g:03d}" for g in range(n_groups)], sizes)
    return labels, groups


# -- group ids -------------------------------------------------------------------------------
def test_group_pattern_on_folder_names(make_image_folder):
    root = make_image_folder({"neg": 2, "pos": 2})
    for cls in ("neg", "pos"):
        for i, old in enumerate(sorted((root / cls).iterdir())):
            old.rename(old.with_name(f"P{i % 2}{cls[0]}_view{i}.png"))
    data = load_dataset(DataConfig(path=root, group_pattern=r"^(P\d)"), PRE)
    assert data.ids == ["neg/P0n_view0.png", "neg/P1n_view1.png", "pos/P0p_view0.png", "pos/P1p_view1.png"]
    assert data.groups == ["P0", "P1", "P0", "P1"]  # the same patient may carry both labels
    whole = load_dataset(DataConfig(path=root, group_pattern=r"P\d\w"), PRE)  # no capture group
    assert whole.groups == ["P0n", "P1n", "P0p", "P1p"]
    listed = list_files(DataConfig(path=root, group_pattern=r"^(P\d)"))
    assert listed.ids == data.ids and listed.groups == data.groups
    assert listed.labels.tolist() == data.labels.tolist() and listed.classes == data.classes


def test_group_pattern_on_csv_paths(tmp_path, make_image_folder, make_csv):
    make_image_folder({"x": 3}, root=tmp_path / "img")
    rows = [{"path": f"img/x/img{i:03d}.png", "label": "ab"[i % 2]} for i in range(3)]
    data = load_dataset(DataConfig(path=make_csv(rows), group_pattern=r"img(\d\d)"), PRE)
    assert data.groups == ["00", "00", "00"]


def test_group_pattern_that_does_not_match_names_the_file(make_image_folder):
    root = make_image_folder({"a": 2, "b": 1})
    (root / "b" / "img000.png").rename(root / "b" / "scan.png")
    with pytest.raises(DataError, match=r"finds no group id in file 'b/scan.png'"):
        load_dataset(DataConfig(path=root, group_pattern=r"img(\d+)"), PRE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"group_pattern": "P(\\d"}, re.escape("'group_pattern': got 'P(\\\\d', which is not a valid regular")),
     ({"group_pattern": "x", "group_column": "patient"}, "take group ids from one of them"),
     ({"group_pattern": "x", "path": "m.npz"}, "npz images have no file names")],
)
def test_group_pattern_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(DataConfig, {"path": "data", **kwargs})


def test_list_files_rejects_npz(make_npz):
    with pytest.raises(DataError, match="holds arrays, not image files"):
        list_files(DataConfig(path=make_npz()))


# -- grouped splits --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [SplitConfig(test_sets=3, test_per_class=10, val_fraction=0.1),
     SplitConfig(test_fraction=0.2, val_fraction=0.15),
     SplitConfig(train_per_class=30, val_fraction=0.2),
     SplitConfig(test_sets=1, test_per_class=8, train_per_class=25, val_fraction=0.0)],
)
def test_grouped_split_keeps_groups_whole(cfg):
    for seed in range(4):
        labels, groups = _patients(120, seed)
        split = make_split(labels, cfg, seed, groups=groups)
        assert group_leaks(split, groups) == {}
        joined = np.concatenate(list(split.parts.values()))
        assert len(joined) == len(set(joined.tolist()))  # disjoint
        if cfg.train_per_class is None:
            assert len(joined) == len(labels)  # nothing lost
        else:
            pool = np.concatenate([split.train, split.val])
            assert (np.bincount(labels[pool]) <= cfg.train_per_class).all()
        for name, idx in split.tests.items():
            counts = np.bincount(labels[idx], minlength=2)
            if cfg.test_sets:  # many small groups: first-fit reaches the target exactly
                assert counts.tolist() == [cfg.test_per_class] * 2, name
        again = make_split(labels, cfg, seed, groups=groups)
        assert all(np.array_equal(a, b) for a, b in zip(split.parts.values(), again.parts.values(),
                                                         strict=True))


def test_large_groups_overshoot_the_target_by_less_than_a_group():
    labels = np.repeat([0, 1], 60)
    groups = np.repeat([f"g{i}" for i in range(12)], 10)  # 6 groups of 10 per class
    split = make_split(labels, SplitConfig(test_sets=2, test_per_class=15, val_fraction=0.0), 0,
                       groups=groups)
    for idx in split.tests.values():
        assert np.bincount(labels[idx]).tolist() == [20, 20]  # 15 is not reachable: 2 whole groups
    assert group_leaks(split, groups) == {}


def test_grouped_split_errors_name_the_class():
    labels = np.repeat([0, 1], [40, 40])
    groups = np.repeat(["a", "b", "c", "d", "z"], [10, 10, 10, 10, 40])  # one 'pos' patient
    with pytest.raises(DataError, match=r"test_2: the whole groups left give only 0 images of class 'pos'"):
        make_split(labels, SplitConfig(test_sets=2, test_per_class=15), 0, groups=groups,
                   classes=["neg", "pos"])
    with pytest.raises(DataError, match="groups has 3 entries for 80 labels"):
        make_split(labels, SplitConfig(), 0, groups=["a", "b", "c"])


def test_without_groups_nothing_changes():
    labels, _ = _patients(80, 1)
    cfg = SplitConfig(test_sets=2, test_per_class=6, train_per_class=40, val_fraction=0.2)
    a, b = make_split(labels, cfg, 5), make_split(labels, cfg, 5, groups=None)
    assert all(np.array_equal(x, y) for x, y in zip(a.parts.values(), b.parts.values(), strict=True))


# -- cross-validation folds ------------------------------------------------------------------
def test_folds_cover_every_index_once_and_stratify():
    labels = np.repeat([0, 1, 2], [30, 21, 12])
    folds = make_folds(labels, 3, seed=0)
    tests = np.concatenate([f.tests["test"] for f in folds])
    assert sorted(tests.tolist()) == list(range(len(labels)))
    for f in folds:
        assert len(np.intersect1d(f.train, f.tests["test"])) == 0 and len(f.val) == 0
        assert len(f.train) + len(f.tests["test"]) == len(labels)
        assert np.bincount(labels[f.tests["test"]]).tolist() == [10, 7, 4]
    again = make_folds(labels, 3, seed=0)
    assert all(np.array_equal(x.train, y.train) for x, y in zip(folds, again, strict=True))
    assert not np.array_equal(make_folds(labels, 3, seed=1)[0].train, folds[0].train)


def test_grouped_folds_never_split_a_group():
    labels, groups = _patients(60, 2)
    plain = make_folds(labels, 5, seed=0)
    assert any(group_leaks(f, groups) for f in plain)  # without groups, patients do get split
    folds = make_folds(labels, 5, seed=0, groups=groups, val_fraction=0.2)
    tests = np.concatenate([f.tests["test"] for f in folds])
    assert sorted(tests.tolist()) == list(range(len(labels)))
    for f in folds:
        assert group_leaks(f, groups) == {}
        assert len(f.val) > 0 and set(np.unique(labels[f.val]).tolist()) == {0, 1}
        joined = np.concatenate(list(f.parts.values()))
        assert sorted(joined.tolist()) == list(range(len(labels)))


def test_fold_errors():
    labels = np.repeat([0, 1], [10, 3])
    with pytest.raises(ConfigError, match="'folds': got 1; expected an integer >= 2"):
        make_folds(labels, 1, seed=0)
    with pytest.raises(DataError, match="class 'rare' has 3 image\\(s\\), fewer than folds=4"):
        make_folds(labels, 4, seed=0, classes=["common", "rare"])
    groups = [f"g{i}" for i in range(10)] + ["g10", "g10", "g11"]
    with pytest.raises(DataError, match="class '1' occurs in 2 group\\(s\\), fewer than folds=3"):
        make_folds(labels, 3, seed=0, groups=groups)
