"""load_dataset for folder, CSV and npz sources, and the errors a user sees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medtransfer.config import from_dict, to_dict
from medtransfer.data import (
    ColorMode,
    DataConfig,
    ImageCache,
    OnError,
    PreprocessConfig,
    SourceKind,
    load_dataset,
)
from medtransfer.errors import ConfigError, DataError, ImageDecodeError

PRE = PreprocessConfig(size=8)
SKIP = PreprocessConfig(size=8, on_error=OnError.SKIP)


def test_folder_order_labels_ids_and_filtering(make_image_folder):
    root = make_image_folder({"pos": 2, "neg": 3})
    (root / "neg" / "deeper").mkdir()
    Image.new("L", (5, 5), 9).save(root / "neg" / "deeper" / "x.PNG")  # recursive, any case
    (root / "neg" / "notes.txt").write_text("not an image")
    (root / "neg" / ".hidden.png").write_bytes(b"ignored")
    (root / ".git").mkdir()
    data = load_dataset(DataConfig(path=root), PRE, workers=2)
    assert data.classes == ("neg", "pos")
    assert data.ids == [
        "neg/deeper/x.PNG",
        "neg/img000.png",
        "neg/img001.png",
        "neg/img002.png",
        "pos/img000.png",
        "pos/img001.png",
    ]
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1] and data.labels.dtype == np.int64
    assert data.images.shape == (6, 1, 8, 8) and data.images.dtype == np.uint8
    assert data.class_counts() == {"neg": 4, "pos": 2}
    assert data.num_classes == 2 and data.channels == 1 and len(data) == 6
    assert data.groups is None and data.origin is None and data.skipped == []


def test_folder_classes_config_picks_and_orders(make_image_folder):
    root = make_image_folder({"a": 1, "b": 2, "c": 1})
    data = load_dataset(DataConfig(path=root, classes=["c", "a"]), PRE)
    assert data.classes == ("c", "a") and data.labels.tolist() == [0, 1]


def test_folder_rgb_and_deterministic_across_workers(make_image_folder):
    root = make_image_folder({"a": 4, "b": 4}, mode="RGB")
    pre = PreprocessConfig(size=6, color=ColorMode.RGB)
    one = load_dataset(DataConfig(path=root), pre, workers=1)
    three = load_dataset(DataConfig(path=root), pre, ImageCache.disabled(), workers=3)
    assert one.images.shape == (8, 3, 6, 6)
    np.testing.assert_array_equal(one.images, three.images)
    assert one.ids == three.ids


def test_mixed_bit_depths_widen_to_uint16(make_image_folder):
    root = make_image_folder({"a": 1}, mode="L")
    make_image_folder({"b": 1}, root=root, mode="I;16")
    Image.new("L", (12, 10), 255).save(root / "a" / "white.png")
    data = load_dataset(DataConfig(path=root), PreprocessConfig(size=(10, 12)))
    assert data.images.dtype == np.uint16
    assert data.images[data.ids.index("a/white.png")].min() == 65535


def test_subset_keeps_metadata_and_skipped(make_image_folder):
    root = make_image_folder({"a": 3, "b": 3})
    (root / "a" / "bad.png").write_bytes(b"junk")
    with pytest.warns(UserWarning):
        data = load_dataset(DataConfig(path=root), SKIP)
    sub = data.subset(np.array([4, 0]))
    assert sub.ids == [data.ids[4], data.ids[0]] and sub.labels.tolist() == [1, 0]
    assert sub.skipped == data.skipped == [("a/bad.png", data.skipped[0][1])]
    mask = data.subset(data.labels == 1)
    assert mask.class_counts() == {"a": 0, "b": 3}


def test_corrupt_image_raises_by_default_naming_it(make_image_folder):
    root = make_image_folder({"a": 3, "b": 3})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageDecodeError, match=r"broken.jpg"):
        load_dataset(DataConfig(path=root), PRE)


def test_corrupt_image_skipped_with_warning(make_image_folder):
    root = make_image_folder({"a": 3, "b": 3})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*broken\.jpg"):
        data = load_dataset(DataConfig(path=root), SKIP)
    assert len(data) == 6 and "b/broken.jpg" not in data.ids
    assert [s[0] for s in data.skipped] == ["b/broken.jpg"]


def test_skipping_every_image_of_a_class_is_an_error(make_image_folder):
    root = make_image_folder({"a": 2})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"class 'b'.*failed to decode"):
        load_dataset(DataConfig(path=root), SKIP)


def test_missing_path_suggests_a_sibling(tmp_path, make_image_folder):
    make_image_folder({"a": 1, "b": 1}, root=tmp_path / "chest_xray")
    with pytest.raises(DataError, match=r"chest_xrays does not exist; did you mean .*chest_xray"):
        load_dataset(DataConfig(path=tmp_path / "chest_xrays"), PRE)


def test_empty_class_folder_is_named(make_image_folder):
    root = make_image_folder({"normal": 2, "covid": 0})
    (root / "covid" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(path=root), PRE)
    msg = str(info.value)
    assert "'covid'" in msg and "no images" in msg and ".png" in msg and "readme.txt" in msg


def test_single_class_is_an_error(make_image_folder):
    root = make_image_folder({"normal": 2})
    with pytest.raises(DataError, match=r"found only class 'normal' in .*needs at least 2"):
        load_dataset(DataConfig(path=root), PRE)


def test_images_without_class_folders(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(DataError, match=r"no class subfolders.*1 image files directly"):
        load_dataset(DataConfig(path=tmp_path), PRE)


def test_configured_class_not_present_suggests_closest(make_image_folder):
    root = make_image_folder({"Normal": 1, "COVID": 1})
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(path=root, classes=["Normal", "covid"]), PRE)
    msg = str(info.value)
    assert "'covid'" in msg and "present: 'COVID', 'Normal'" in msg
    assert "did you mean 'COVID'" in msg


def test_csv_source_with_groups_and_relative_paths(tmp_path, make_image_folder, make_csv):
    root = make_image_folder({"x": 3}, root=tmp_path / "imgs")
    rows = [
        {"file": "imgs/x/img000.png", "diagnosis": "10", "patient": "p1"},
        {"file": str(root / "x" / "img001.png"), "diagnosis": "2", "patient": "p1"},
        {"file": "imgs/x/img002.png", "diagnosis": "2", "patient": "p2"},
    ]
    csv_path = make_csv(rows)
    cfg = DataConfig(
        path=csv_path, path_column="file", label_column="diagnosis", group_column="patient"
    )
    assert cfg.source_kind is SourceKind.CSV
    data = load_dataset(cfg, PRE)
    assert data.classes == ("2", "10")  # numbers sort as numbers
    assert data.labels.tolist() == [1, 0, 0]
    assert data.ids == ["imgs/x/img000.png", "imgs/x/img001.png", "imgs/x/img002.png"]
    assert data.groups == ["p1", "p1", "p2"]


def test_csv_missing_column_lists_columns_found(tmp_path, make_csv):
    csv_path = make_csv([{"filename": "a.png", "label": "x"}])
    expected = r"missing column.*'path'.*columns found: 'filename', 'label'"
    with pytest.raises(DataError, match=expected):
        load_dataset(DataConfig(path=csv_path), PRE)


def test_csv_row_with_missing_file_names_line(tmp_path, make_image_folder, make_csv):
    make_image_folder({"a": 1, "b": 1}, root=tmp_path)
    rows = [
        {"path": "a/img000.png", "label": "a"},
        {"path": "b/img000.png", "label": "b"},
        {"path": "b/gone.png", "label": "b"},
    ]
    with pytest.raises(DataError, match=r"missing files: line 4: .*b/gone\.png"):
        load_dataset(DataConfig(path=make_csv(rows)), PRE)


def test_csv_unknown_label_against_configured_classes(tmp_path, make_image_folder, make_csv):
    make_image_folder({"a": 1}, root=tmp_path)
    rows = [{"path": "a/img000.png", "label": "normall"}]
    cfg = DataConfig(path=make_csv(rows), classes=["normal", "tb"])
    with pytest.raises(DataError, match=r"line 2: label 'normall'.*did you mean 'normal'"):
        load_dataset(cfg, PRE)


def test_npz_pools_splits_resizes_and_records_origin(make_npz):
    path = make_npz({"train": 6, "val": 4, "test": 2}, size=8)
    data = load_dataset(DataConfig(path=path), PreprocessConfig(size=16))
    assert data.images.shape == (12, 1, 16, 16) and data.images.dtype == np.uint8
    assert data.classes == ("0", "1")
    assert data.origin == ["train"] * 6 + ["val"] * 4 + ["test"] * 2
    assert data.ids[:2] == ["train:0", "train:1"] and data.ids[-1] == "test:1"
    assert data.labels.tolist()[:4] == [0, 1, 0, 1]


def test_npz_colour_conversion_and_class_names(make_npz):
    rgb_path = make_npz(rgb=True, size=4)
    raw = np.load(rgb_path)["train_images"]
    pre = PreprocessConfig(size=4, color=ColorMode.GRAYSCALE)
    data = load_dataset(DataConfig(path=rgb_path, classes=["no", "yes"], npz_splits=["train"]), pre)
    luma = np.rint(raw.astype(float) @ [0.299, 0.587, 0.114])
    assert np.abs(data.images[:, 0].astype(float) - luma).max() <= 1
    assert data.classes == ("no", "yes")
    gray = load_dataset(DataConfig(path=make_npz(size=4)), PreprocessConfig(size=4, color="rgb"))
    assert gray.channels == 3 and (gray.images[:, 0] == gray.images[:, 2]).all()


def test_npz_is_cached_as_whole_array(tmp_path, make_npz):
    path = make_npz()
    cache = ImageCache(tmp_path / "cache")
    first = load_dataset(DataConfig(path=path), PRE, cache)
    second = load_dataset(DataConfig(path=path), PRE, cache)
    assert (cache.misses, cache.hits) == (3, 3)
    np.testing.assert_array_equal(first.images, second.images)


def test_npz_missing_keys_lists_keys_found(make_npz):
    path = make_npz({"train": 4, "test": 2})
    with pytest.raises(DataError, match=r"missing key.*val_images.*keys found: test_images"):
        load_dataset(DataConfig(path=path), PRE)
    assert len(load_dataset(DataConfig(path=path, npz_splits=["train", "test"]), PRE)) == 6


def test_npz_labels_outside_classes(make_npz):
    path = make_npz(num_classes=3)
    with pytest.raises(DataError, match=r"label values \[2\] are outside 0\.\.1"):
        load_dataset(DataConfig(path=path, classes=["a", "b"]), PRE)


def test_not_an_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"nope")
    with pytest.raises(DataError, match=r"not a readable .npz"):
        load_dataset(DataConfig(path=path), PRE)


def test_data_config_from_yaml_and_kind_inference(tmp_path):
    cfg = from_dict(DataConfig, {"path": "x/train.CSV", "classes": ["a", "b"]}, "data")
    assert cfg.kind is None and cfg.source_kind is SourceKind.CSV
    assert DataConfig(path=tmp_path / "d.npz").source_kind is SourceKind.NPZ
    assert DataConfig(path=tmp_path).source_kind is SourceKind.FOLDER
    assert DataConfig(path="demo:demo_target").source_kind is SourceKind.NPZ
    assert DataConfig(path=tmp_path / "d.npz", kind="folder").source_kind is SourceKind.FOLDER
    assert to_dict(cfg)["path"] == "x/train.CSV"
    with pytest.raises(ConfigError, match=r"npz_splits"):
        DataConfig(path=tmp_path, npz_splits=["training"])
    with pytest.raises(ConfigError, match=r"classes"):
        DataConfig(path=tmp_path, classes=["a", "a"])
    with pytest.raises(ConfigError, match=r"kind"):
        from_dict(DataConfig, {"path": "x", "kind": "folders"}, "data")


def test_medmnist_files_get_their_official_class_names(tmp_path):
    rng = np.random.default_rng(0)
    parts = ("train", "val", "test")
    arrays = {f"{s}_images": rng.integers(0, 255, (16, 8, 8), dtype=np.uint8) for s in parts}
    arrays.update({f"{s}_labels": (np.arange(16) % 8).reshape(-1, 1) for s in parts})
    path = tmp_path / "bloodmnist_64.npz"
    np.savez(path, **arrays)
    data = load_dataset(DataConfig(path=path), PreprocessConfig(size=8))
    assert data.classes[0] == "basophil" and data.classes[-1] == "platelet" and len(data.classes) == 8
    named = load_dataset(DataConfig(path=path, classes=[f"c{i}" for i in range(8)]), PreprocessConfig(size=8))
    assert named.classes[0] == "c0"  # data.classes still wins
