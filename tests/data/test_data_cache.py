"""ImageCache: content-addressed hits, atomic layout, whole-array entries."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import medtransfer.data.cache as cache_module
from medtransfer.data import (
    DataConfig,
    ImageCache,
    PreprocessConfig,
    decode_image,
    default_cache_root,
    load_dataset,
)

PRE = PreprocessConfig(size=8)


@pytest.fixture
def decode_calls(monkeypatch):
    calls = []

    def counting(path, cfg):
        calls.append(path)
        return decode_image(path, cfg)

    monkeypatch.setattr(cache_module, "decode_image", counting)
    return calls


def test_second_lookup_of_same_content_never_decodes(tmp_path, make_image_folder, decode_calls):
    root = make_image_folder({"a": 1, "b": 1})
    image = root / "a" / "img000.png"
    cache = ImageCache(tmp_path / "cache")
    first = cache.get_or_decode(image, PRE)
    second = cache.get_or_decode(image, PRE)
    copy = tmp_path / "renamed.png"
    shutil.copy(image, copy)
    third = cache.get_or_decode(copy, PRE)  # same bytes under another name: still a hit
    assert len(decode_calls) == 1
    assert (cache.hits, cache.misses) == (2, 1)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)


def test_changed_content_or_settings_miss(tmp_path, make_image_folder, decode_calls):
    root = make_image_folder({"a": 2, "b": 1})
    cache = ImageCache(tmp_path / "cache")
    image = root / "a" / "img000.png"
    cache.get_or_decode(image, PRE)
    cache.get_or_decode(image, PreprocessConfig(size=9))
    shutil.copy(root / "a" / "img001.png", image)
    cache.get_or_decode(image, PRE)
    assert len(decode_calls) == 3 and cache.hits == 0


def test_entry_layout_and_no_temp_files(tmp_path, make_image_folder):
    root = make_image_folder({"a": 1, "b": 1})
    cache = ImageCache(tmp_path / "cache")
    cache.get_or_decode(root / "a" / "img000.png", PRE)
    digest = cache_module.file_sha256(root / "a" / "img000.png")
    entry = tmp_path / "cache" / "images" / PRE.key() / digest[:2] / f"{digest}.npy"
    assert entry.is_file()
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


def test_get_or_compute_array_computes_once(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.uint16).reshape(2, 3)

    a = cache.get_or_compute_array("npz:abc:train:k", compute)
    b = ImageCache(tmp_path / "cache").get_or_compute_array("npz:abc:train:k", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)
    assert b.dtype == np.uint16


def test_damaged_entry_is_recomputed_with_a_warning(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    cache.get_or_compute_array("k", lambda: np.ones(3))
    entry = next((tmp_path / "cache" / "arrays").rglob("*.npy"))
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"cache entry .*discarded and recomputed"):
        out = cache.get_or_compute_array("k", lambda: np.zeros(3))
    assert (out == 0).all()
    assert (cache.get_or_compute_array("k", lambda: np.ones(3)) == 0).all()


def test_disabled_cache_writes_nothing(tmp_path, make_image_folder, decode_calls):
    root = make_image_folder({"a": 1, "b": 1})
    cache = ImageCache.disabled()
    cache.get_or_decode(root / "a" / "img000.png", PRE)
    cache.get_or_decode(root / "a" / "img000.png", PRE)
    assert len(decode_calls) == 2 and cache.misses == 2
    assert not (tmp_path / "default-cache").exists()


def test_default_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_root() == tmp_path / "elsewhere"
    assert ImageCache().root == tmp_path / "elsewhere"
    monkeypatch.delenv("MEDTRANSFER_CACHE")
    assert default_cache_root().parts[-2:] == (".cache", "medtransfer")


def test_unwritable_cache_warns_once_and_still_decodes(tmp_path, make_image_folder):
    root = make_image_folder({"a": 2, "b": 1})
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    cache = ImageCache(blocker)
    with pytest.warns(UserWarning, match=r"cannot write to image cache") as record:
        cache.get_or_decode(root / "a" / "img000.png", PRE)
        out = cache.get_or_decode(root / "a" / "img001.png", PRE)
    assert out.shape == (1, 8, 8) and len(record) == 1


def test_second_dataset_load_is_all_hits(tmp_path, make_image_folder, decode_calls):
    root = make_image_folder({"a": 3, "b": 4})
    cache = ImageCache(tmp_path / "cache")
    first = load_dataset(DataConfig(path=root), PRE, cache)
    second = load_dataset(DataConfig(path=root), PRE, cache)
    assert len(decode_calls) == 7 and (cache.hits, cache.misses) == (7, 7)
    np.testing.assert_array_equal(first.images, second.images)


def test_usage_per_section_and_clearing_one_or_all(tmp_path, make_image_folder, capsys):
    from medtransfer.cli import main

    root = make_image_folder({"a": 2})
    (tmp_path / "cache").mkdir()
    keep = tmp_path / "cache" / "notes.txt"  # the user's own file in the cache folder
    keep.write_text("mine")
    cache = ImageCache(tmp_path / "cache")
    for path in sorted((root / "a").iterdir()):
        cache.get_or_decode(path, PRE)
    cache.get_or_compute_array("features:x", lambda: np.zeros(100, np.float32))
    cache.get_or_compute_array("prefix:y", lambda: np.zeros(1000, np.float32))
    cache.get_or_compute_array("prefix:z", lambda: np.zeros(10, np.float32))
    usage = cache.usage()
    assert {k: n for k, (n, _) in usage.items()} == {"images": 2, "features": 1, "prefix": 2}
    assert usage["prefix"][1] > 4000
    assert main(["cache", "--dir", str(tmp_path / "cache")]) == 0
    assert re.search(r"prefix\s+2 entries", capsys.readouterr().out)
    assert main(["cache", "--dir", str(tmp_path / "cache"), "--clear", "prefix"]) == 0
    assert "prefix" not in cache.usage() and cache.usage()["features"][0] == 1
    assert main(["cache", "--dir", str(tmp_path / "cache"), "--clear", "prefx"]) == 2
    assert "allowed: images, features" in capsys.readouterr().err
    cache.clear()
    assert cache.usage() == {"images": (0, 0)} and keep.read_text() == "mine"

