"""Bounded, verified inputs (issue 13): the DICOM pixel limit, decoding without float64 copies of
the image, MemoryError never hidden as "unreadable", cache entries that must prove themselves,
.npz object arrays and NaN labels, unsafe study names, and how output files are written."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from medtransfer import fileio
from medtransfer.audit import AuditConfig, run_audit
from medtransfer.data import DataConfig, ImageCache, PreprocessConfig, decode_image, load_dataset
from medtransfer.data import images as images_module
from medtransfer.errors import ConfigError, DataError, ImageDecodeError

GRAY = PreprocessConfig(size=8)


@pytest.mark.parametrize("shape", [(10_000, 10_000, 1), (8_000, 8_000, 2)])
def test_dicom_over_the_pixel_limit_is_refused_before_decoding(tmp_path, shape, dicom_file):
    rows, cols, frames = shape
    path = dicom_file(tmp_path / "bomb.dcm", rows, cols, b"\0\0" * 64, frames=frames)  # declares far more
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageDecodeError, match=r"bomb\.dcm.*over the limit.*MAX_IMAGE_PIXELS"):
            decode_image(path, GRAY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5 and peak < 50 * 2**20


def test_dicom_stretch_works_in_bounded_chunks_with_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (37, 23), dtype=np.uint16)
    monkeypatch.setattr(images_module, "_CHUNK_ROWS_PIXELS", 50)  # several chunks
    for invert in (False, True):
        data = pixels.astype(np.float64) * 2.5 + -1024.0
        if invert:
            data = data.max() + data.min() - data
        lo, hi = float(data.min()), float(data.max())
        want = np.rint((data - lo) * (65535.0 / (hi - lo))).astype(np.uint16)
        got = images_module._stretch16(pixels, 2.5, -1024.0, invert)
        assert got.dtype == np.uint16 and np.array_equal(got, want)


def test_memory_error_while_decoding_propagates(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(b"not read")

    def boom(_: Path) -> np.ndarray:
        raise MemoryError("out of memory")

    monkeypatch.setattr(images_module, "_read_pil", boom)
    with pytest.raises(MemoryError):
        decode_image(path, GRAY)


# -- the cache --------------------------------------------------------------------------------
def _entry(root: Path) -> Path:
    return next((root / "images").rglob("*.npy"))


@pytest.mark.parametrize("fault", ["foreign", "wrong_shape", "float64", "truncated", "edited"])
def test_bad_cache_entry_is_discarded_and_recomputed_with_a_warning(tmp_path, make_image_folder, fault):
    root = make_image_folder({"a": 1})
    image = root / "a" / "img000.png"
    cache = ImageCache(tmp_path / "cache")
    good = cache.get_or_decode(image, GRAY)
    entry = _entry(tmp_path / "cache")
    key = f"image:{entry.stem}:{GRAY.key()}"
    if fault == "foreign":
        np.save(entry, np.full_like(good, 7))  # a valid .npy, not ours
    elif fault == "wrong_shape":
        cache._store(entry, key, np.zeros((1, 3, 3), np.uint8))
    elif fault == "float64":
        cache._store(entry, key, good.astype(np.float64))
    elif fault == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    else:  # same size, one pixel changed: the checksum no longer matches
        raw = bytearray(entry.read_bytes())
        raw[130] ^= 0xFF
        entry.write_bytes(bytes(raw))
    fresh = ImageCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"cache entry .*discarded and recomputed"):
        out = fresh.get_or_decode(image, GRAY)
    assert np.array_equal(out, good) and out.dtype == good.dtype and fresh.misses == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ImageCache(tmp_path / "cache")
        assert np.array_equal(again.get_or_decode(image, GRAY), good) and again.hits == 1


def test_array_entry_of_another_key_is_not_used(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    cache.get_or_compute_array("npz:a", lambda: np.arange(4))
    cache.get_or_compute_array("npz:b", lambda: np.arange(4) * 10)
    entry = {k: next((tmp_path / "cache" / "arrays").rglob(f"{hashlib.sha256(k.encode()).hexdigest()}.npy"))
             for k in ("npz:a", "npz:b")}
    entry["npz:b"].write_bytes(entry["npz:a"].read_bytes())  # the other key's sound entry in its place
    with pytest.warns(UserWarning, match=r"another key"):
        got = ImageCache(tmp_path / "cache").get_or_compute_array("npz:b", lambda: np.arange(4) * 10)
    assert np.array_equal(got, np.arange(4) * 10)


# -- .npz -------------------------------------------------------------------------------------
def _npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(path, train_images=images, train_labels=labels)
    return path


@pytest.mark.parametrize("what", ["object_images", "object_labels", "nan_labels"])
def test_bad_npz_arrays_are_a_data_error_naming_file_and_key(tmp_path, what):
    images = np.zeros((4, 8, 8), np.uint8)
    labels = np.array([0, 1, 0, 1])
    if what == "object_images":
        images = np.array([np.zeros((8, 8)), np.zeros((4, 4)), None, None], dtype=object)
    elif what == "object_labels":
        labels = np.array([0, "x", None, 1], dtype=object)
    else:
        labels = np.array([0.0, np.nan, 1.0, 0.0])
    path = _npz(tmp_path / "bad.npz", images, labels)
    key = "train_images" if what == "object_images" else "train_labels"
    data = DataConfig(path=path, npz_splits=["train"])
    with pytest.raises(DataError, match=rf"bad\.npz.*'{key}'"):
        load_dataset(data, GRAY, ImageCache(tmp_path / "cache"))
    with pytest.raises(DataError, match=rf"bad\.npz.*'{key}'"):
        run_audit(data, cfg=AuditConfig(probe=False))


# -- names and output files -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../outside", "a/b", "..", ".hidden", ""])
def test_unsafe_study_name_is_a_config_error(name, tmp_path):
    from medtransfer.study import study_from_dict

    raw = {"name": name, "source": {"data": {"path": str(tmp_path)}},
           "target": {"data": {"path": str(tmp_path)}}, "model": {"name": "alexnet_small"},
           "variants": [{"name": "v"}]}
    with pytest.raises(ConfigError, match=r"'name'"):
        study_from_dict(raw)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask_and_fsync(tmp_path, monkeypatch, umask):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    old = os.umask(umask)
    try:
        fileio.write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~umask
    assert len(synced) >= 2  # the file, then its folder
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_csv_cells_escape_formulas_and_round_trip():
    for text in ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "'quoted", "plain", "a,=b", ""]:
        out = fileio.cell_out(text)
        assert not out.startswith(("=", "+", "-", "@")) and fileio.cell_in(out) == text
