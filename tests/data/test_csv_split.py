"""A fixed split from a CSV column (``data.split_column``), honoured by ``split.use_official``
like MedMNIST's official split."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.data import DataConfig, PreprocessConfig, SplitConfig, load_dataset, make_split
from medtransfer.errors import ConfigError, DataError


def _csv(root, class_folders, parts):
    folder = class_folders(root / "imgs", {"neg": 6, "pos": 6}, seed=1)
    files = sorted(folder.rglob("*.png"))
    lines = ["path,label,part"] + [f"{f.relative_to(root)},{f.parent.name},{parts[k % len(parts)]}"
                                   for k, f in enumerate(files)]
    path = root / "index.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, files


def test_split_column_gives_the_official_parts(tmp_path, class_folders):
    path, files = _csv(tmp_path, class_folders, ["train", "train", "val", "test"])
    images = load_dataset(DataConfig(path=path, split_column="part"), PreprocessConfig(size=8))
    assert images.origin == [["train", "train", "val", "test"][k % 4] for k in range(len(files))]
    split = make_split(images.labels, SplitConfig(use_official=True), seed=0, origin=images.origin)
    where = np.asarray(images.origin)
    assert np.array_equal(np.sort(split.train), np.flatnonzero(where == "train"))
    assert np.array_equal(np.sort(split.val), np.flatnonzero(where == "val"))
    assert np.array_equal(np.sort(split.tests["test"]), np.flatnonzero(where == "test"))


def test_split_column_errors_name_the_line_and_the_value(tmp_path, class_folders):
    path, _ = _csv(tmp_path, class_folders, ["train", "holdout"])
    with pytest.raises(DataError, match=r"index\.csv: line 3: column 'part' is 'holdout'; allowed: train"):
        load_dataset(DataConfig(path=path, split_column="part"), PreprocessConfig(size=8))
    with pytest.raises(DataError, match=r"missing column\(s\) 'fold'"):
        load_dataset(DataConfig(path=path, split_column="fold"), PreprocessConfig(size=8))
    with pytest.raises(ConfigError, match=r"'split_column': got 'part' for .* not a CSV source"):
        DataConfig(path=tmp_path / "imgs", split_column="part")
    folder = load_dataset(DataConfig(path=tmp_path / "imgs"), PreprocessConfig(size=8))
    with pytest.raises(DataError, match=r"or a CSV source with data\.split_column"):
        make_split(folder.labels, SplitConfig(use_official=True), seed=0, origin=folder.origin)
