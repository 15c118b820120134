"""Per-image metadata, colour classes, hashes, duplicate search and the AUC helper."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from medtransfer.audit import AuditConfig, ColourKind, inspect_arrays, inspect_source
from medtransfer.audit.duplicates import hamming_pairs
from medtransfer.audit.inspect import name_token
from medtransfer.audit.probe import separability
from medtransfer.config import from_dict
from medtransfer.data import DataConfig
from medtransfer.errors import ConfigError

CFG = AuditConfig()


def _records(root):
    inv = inspect_source(DataConfig(path=root), CFG)
    return {r.id: r for r in inv.records}, inv


def test_colour_classes(tmp_path, ph):
    rng = np.random.default_rng(0)
    grey = ph.phantom(rng, 64)
    marks = np.stack([grey] * 3, axis=2)
    marks[2:6, 2:6] = (255, 0, 0)  # a small red marker: 16 of 4096 pixels
    colourful = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    images = {"grey.png": grey, "grey_rgb.png": np.stack([grey] * 3, axis=2),
              "sepia.png": ph.tint(grey), "marks.png": marks, "noise.png": colourful}
    for name, pixels in images.items():
        ph.save(pixels, tmp_path / "d" / "a" / name)
    ph.save(grey, tmp_path / "d" / "b" / "x.png")
    records, _ = _records(tmp_path / "d")
    kinds = {k.split("/")[1]: r.colour for k, r in records.items() if k.startswith("a/")}
    assert kinds == {"grey.png": ColourKind.grayscale, "grey_rgb.png": ColourKind.grayscale_rgb,
                     "sepia.png": ColourKind.tinted, "marks.png": ColourKind.colour_marks,
                     "noise.png": ColourKind.colour}
    assert records["a/marks.png"].colour_fraction == pytest.approx(16 / 4096)


def test_file_metadata_comes_from_the_header(tmp_path, ph):
    grey = ph.phantom(np.random.default_rng(1), 40)
    ph.save(grey, tmp_path / "d" / "a" / "really_png.jpg", fmt="PNG")  # misleading extension
    ph.save(grey, tmp_path / "d" / "a" / "photo.jpg")
    wide = (grey.astype(np.uint16) * 257)[:, :30]
    ph.save(wide, tmp_path / "d" / "b" / "deep.png")
    records, inv = _records(tmp_path / "d")
    png, jpg, deep = records["a/really_png.jpg"], records["a/photo.jpg"], records["b/deep.png"]
    assert (png.format, png.bit_depth, png.mode) == ("PNG", 8, "L")
    assert png.file_bytes == (tmp_path / "d" / "a" / "really_png.jpg").stat().st_size
    assert jpg.format == "JPEG" and jpg.jpeg_quality > 0 and np.isnan(png.jpeg_quality)
    assert (deep.format, deep.bit_depth, deep.width, deep.height) == ("PNG", 16, 30, 40)
    assert png.pixel_sha != jpg.pixel_sha and png.file_sha != jpg.file_sha
    assert 0.1 < png.mean < 0.9 and png.p01 <= png.p50 <= png.p99
    assert inv.classes == ("a", "b") and inv.labels.tolist() == [0, 0, 1]


def test_border_and_corner_markers(tmp_path, ph):
    grey = np.full((100, 100), 128, np.uint8)
    framed = grey.copy()
    framed[:10], framed[-10:], framed[:, :10], framed[:, -10:] = 0, 0, 0, 0
    marked = grey.copy()
    marked[:] = 60
    marked[3:8, 3:8] = 255  # a bright letter-sized blob in the top-left corner
    for name, pixels in {"plain.png": grey, "framed.png": framed, "marked.png": marked}.items():
        ph.save(pixels, tmp_path / "d" / "a" / name)
    ph.save(grey, tmp_path / "d" / "b" / "x.png")
    records, _ = _records(tmp_path / "d")
    assert records["a/plain.png"].dark_border == 0 and records["a/framed.png"].dark_border > 0.9
    assert records["a/plain.png"].corner_text == 0 and records["a/marked.png"].corner_text > 0.05


def test_arrays_and_name_tokens(ph):
    rng = np.random.default_rng(2)
    images = np.stack([ph.phantom(rng, 32)[None] for _ in range(4)])  # (N, 1, H, W)
    inv = inspect_arrays(images, np.array([0, 1, 0, 1]), ["n", "p"], ["i0", "i1", "i2", "i3"], CFG,
                         groups=["g0", "g0", "g1", "g1"])
    assert inv.groups == ["g0", "g0", "g1", "g1"] and inv.records[0].format == "array"
    assert len({r.pixel_sha for r in inv.records}) == 4
    assert [name_token(n) for n in ["Normal-1000.png", "others (12).jpg", "TB.3.jpg",
                                    "x/Tuberculosis-9.png", "0001.png"]] == [
        "Normal", "others", "TB", "Tuberculosis", "(digits)"]


def test_hamming_pairs_match_imagehash(ph):
    rng = np.random.default_rng(3)
    hashes = [imagehash.phash(Image.fromarray(ph.phantom(rng, 48))) for _ in range(12)]
    packed = np.array([int(np.packbits(h.hash.ravel()).view(">u8")[0]) for h in hashes], np.uint64)
    i, j, d = hamming_pairs(packed, None, 64)
    assert len(i) == 12 * 11 // 2 and (i < j).all()
    assert d.tolist() == [hashes[a] - hashes[b] for a, b in zip(i.tolist(), j.tolist(), strict=True)]
    limit = int(np.median(d))
    i2, j2, _ = hamming_pairs(packed, packed[:3], limit)
    expected = {(a, b) for a in range(12) for b in range(3) if hashes[a] - hashes[b] <= limit}
    assert set(zip(i2.tolist(), j2.tolist(), strict=True)) == expected


def test_separability_matches_hanley_mcneil_worked_example():
    # Hanley & McNeil (1982), Radiology 143:29-36, Table 1: 5-point ratings of 58 normal and 51
    # abnormal CT images; the area under the ROC curve is 0.893.
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.concatenate([np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)])
    labels = np.r_[np.zeros(58, int), np.ones(51, int)]
    assert separability(ratings, labels) == pytest.approx(0.893, abs=5e-4)
    assert separability(-ratings, labels) == pytest.approx(0.893, abs=5e-4)  # direction-free
    assert separability(ratings, labels, categorical=True) == pytest.approx(0.893, abs=5e-4)
    assert separability(np.ones(109), labels) == 0.5


@pytest.mark.parametrize(
    ("data", "key"),
    [({"near_hamming": 65}, "near_hamming"), ({"near_similarity": 2}, "near_similarity"),
     ({"probe_model": "forest"}, "probe_model"), ({"probe_folds": 1}, "probe_folds"),
     ({"probe_auc": 0.95, "probe_critical_auc": 0.9}, "probe_critical_auc")],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=f"'{key}': got"):
        from_dict(AuditConfig, data)


def test_config_unknown_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'near_hamming'"):
        from_dict(AuditConfig, {"near_haming": 3})
    assert from_dict(AuditConfig, {"probe_model": "logistic"}).probe_model.value == "logistic"


def test_unchanged_files_are_inspected_once(tmp_path, ph, monkeypatch):
    # A study audits its target twice; the second inspection reuses the first while no file changed.
    rng = np.random.default_rng(0)
    for k in range(2):
        ph.save(ph.phantom(rng, 32), tmp_path / "d" / "a" / f"{k}.png")
        ph.save(ph.phantom(rng, 32), tmp_path / "d" / "b" / f"{k}.png")
    first, inv = _records(tmp_path / "d")
    import medtransfer.audit.inspect as inspect

    def fail(*args, **kwargs):
        raise AssertionError("inspected again")

    with monkeypatch.context() as m:
        m.setattr(inspect, "_inspect_file", fail)
        again, inv2 = _records(tmp_path / "d")
    assert again == first and inv2 is not inv and np.array_equal(inv2.phash, inv.phash)
    ph.save(ph.phantom(rng, 32), tmp_path / "d" / "a" / "0.png")  # new bytes: inspected afresh
    changed, _ = _records(tmp_path / "d")
    assert changed["a/0.png"].pixel_sha != first["a/0.png"].pixel_sha
