"""decode_image: formats, modes, bit depths, EXIF, colour policy and failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.config import from_dict
from medtransfer.data import ColorMode, OnError, PreprocessConfig, decode_image
from medtransfer.errors import ConfigError, ImageDecodeError

GRAY = PreprocessConfig(size=(10, 12), color=ColorMode.GRAYSCALE)
RGB = PreprocessConfig(size=(10, 12), color=ColorMode.RGB)


def _save(path: Path, img: Image.Image, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("name", "mode", "dtype"),
    [
        ("l.png", "L", np.uint8),
        ("rgb.png", "RGB", np.uint8),
        ("rgba.png", "RGBA", np.uint8),
        ("p.png", "P", np.uint8),
        ("la.png", "LA", np.uint8),
        ("one.png", "1", np.uint8),
        ("i16.png", "I;16", np.uint16),
        ("l.jpg", "L", np.uint8),
        ("rgb.jpeg", "RGB", np.uint8),
        ("rgb.bmp", "RGB", np.uint8),
        ("l.tif", "L", np.uint8),
        ("i16.tiff", "I;16", np.uint16),
        ("rgb.TIF", "RGB", np.uint8),
    ],
)
def test_every_format_and_mode_decodes_to_shape_and_dtype(tmp_path, name, mode, dtype):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (20, 24), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).convert(mode)
    path = _save(tmp_path / name, img)
    gray = decode_image(path, GRAY)
    rgb = decode_image(path, RGB)
    assert gray.shape == (1, 10, 12) and rgb.shape == (3, 10, 12)
    assert gray.dtype == dtype and rgb.dtype == dtype
    assert gray.flags["C_CONTIGUOUS"]
    assert 0 < gray.mean() < np.iinfo(dtype).max  # not blank, not saturated


def test_values_survive_without_resize(tmp_path):
    data = np.arange(120, dtype=np.uint8).reshape(10, 12)
    path = _save(tmp_path / "a.png", Image.fromarray(data))
    np.testing.assert_array_equal(decode_image(path, GRAY)[0], data)
    np.testing.assert_array_equal(decode_image(path, RGB), np.stack([data] * 3))


def test_sixteen_bit_keeps_its_range(tmp_path):
    data = np.full((20, 24), 40000, dtype=np.uint16)
    data[:, :12] = 1000
    path = _save(tmp_path / "a.png", Image.fromarray(data))
    out = decode_image(path, GRAY)
    assert out.dtype == np.uint16
    assert out.min() == 1000 and out.max() == 40000  # resized, but never 8-bit-squashed
    assert (decode_image(path, RGB)[0] == out[0]).all()


def test_float_tiff_is_scaled_to_uint16(tmp_path):
    data = np.linspace(-1.0, 3.0, 120, dtype=np.float32).reshape(10, 12)
    path = _save(tmp_path / "f.tif", Image.fromarray(data, mode="F"))
    out = decode_image(path, GRAY)
    assert out.dtype == np.uint16 and out.min() == 0 and out.max() == 65535
    assert (np.diff(out[0].astype(np.int64).ravel()) >= 0).all()


def test_rgb_to_gray_uses_itu601_luma(tmp_path):
    data = np.zeros((10, 12, 3), dtype=np.uint8)
    data[..., 0] = 255  # pure red → L = 0.299 * 255
    path = _save(tmp_path / "red.png", Image.fromarray(data))
    assert (decode_image(path, GRAY) == 76).all()
    rgb = decode_image(path, RGB)
    assert (rgb[0] == 255).all() and (rgb[1:] == 0).all()


def test_alpha_is_dropped_not_composited(tmp_path):
    data = np.zeros((10, 12, 4), dtype=np.uint8)
    data[..., :3] = (10, 20, 30)  # fully transparent, colour kept
    path = _save(tmp_path / "a.png", Image.fromarray(data, mode="RGBA"))
    rgb = decode_image(path, RGB)
    assert (rgb[0] == 10).all() and (rgb[1] == 20).all() and (rgb[2] == 30).all()


def test_palette_is_expanded(tmp_path):
    img = Image.new("P", (12, 10), 0)
    img.putpalette([200, 100, 50] + [0] * 765)
    path = _save(tmp_path / "p.png", img)
    rgb = decode_image(path, RGB)
    assert tuple(rgb[:, 0, 0]) == (200, 100, 50)


def test_resize_ignores_aspect_and_antialiases(tmp_path):
    data = np.zeros((40, 80), dtype=np.uint8)
    data[:, 1::2] = 255  # one-pixel stripes: averaging gives grey, point sampling would not
    path = _save(tmp_path / "stripes.png", Image.fromarray(data))
    out = decode_image(path, PreprocessConfig(size=8))
    assert out.shape == (1, 8, 8)
    assert out.min() > 100 and out.max() < 155


def test_exif_orientation_is_applied(tmp_path):
    data = np.full((10, 20), 255, dtype=np.uint8)  # stored 20 wide, 10 high
    data[:5] = 0  # dark top half
    img = Image.fromarray(data)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = _save(tmp_path / "rot.jpg", img, exif=exif.tobytes(), quality=95)
    out = decode_image(path, PreprocessConfig(size=(20, 10)))[0].astype(float)
    # Displayed 10 wide, 20 high; the stored top (dark) is now on the right.
    assert out[:, 7:].mean() < 40 and out[:, :3].mean() > 215


def test_truncated_png_raises_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    path = _save(tmp_path / "cut.png", Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageDecodeError, match=r"cut.png") as info:
        decode_image(path, GRAY)
    assert info.value.path == str(path)


def test_truncated_jpeg_raises(tmp_path):
    rng = np.random.default_rng(0)
    path = _save(tmp_path / "cut.jpg", Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageDecodeError, match=r"cut.jpg"):
        decode_image(path, GRAY)


@pytest.mark.parametrize("content", [b"", b"this is not a jpeg at all" * 10])
def test_garbage_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=r"cannot read image .*garbage\.jpg"):
        decode_image(path, GRAY)


def test_missing_file_raises_image_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match=r"nope.png"):
        decode_image(tmp_path / "nope.png", GRAY)


def _write_dicom(dicom_file, path: Path, data: np.ndarray, photometric: str, slope: float = 1.0) -> Path:
    return dicom_file(path, *data.shape, data.astype(np.uint16).tobytes(), photometric=photometric,
                      rescale=(slope, -1024))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_rescales_and_inverts_monochrome1(tmp_path, photometric, dicom_file):
    data = np.tile(np.arange(12, dtype=np.uint16) * 100, (10, 1))  # brighter to the right
    path = _write_dicom(dicom_file, tmp_path / "x.dcm", data, photometric, slope=2.0)
    decoded = decode_image(path, GRAY)
    assert decoded.dtype == np.uint16 and decoded.min() == 0 and decoded.max() == 65535
    row = decoded[0, 0].astype(np.int64)
    increasing = (np.diff(row) > 0).all()
    assert increasing if photometric == "MONOCHROME2" else (np.diff(row) < 0).all()


def test_preprocess_key_tracks_pixels_only():
    base = PreprocessConfig(size=32)
    assert base.key() == PreprocessConfig(size=(32, 32)).key()
    assert base.key() == PreprocessConfig(size=32, on_error=OnError.SKIP).key()
    assert base.key() != PreprocessConfig(size=33).key()
    assert base.key() != PreprocessConfig(size=32, color=ColorMode.RGB).key()
    assert len(base.key()) == 16


def test_preprocess_config_from_yaml_data():
    cfg = from_dict(PreprocessConfig, {"size": [32, 24], "color": "rgb", "on_error": "skip"})
    assert cfg.hw == (32, 24) and cfg.color is ColorMode.RGB and cfg.on_error is OnError.SKIP
    assert cfg.channels == 3
    with pytest.raises(ConfigError, match=r"size"):
        PreprocessConfig(size=0)
    with pytest.raises(ConfigError, match=r"color"):
        from_dict(PreprocessConfig, {"color": "grey"})


def test_dicom_window_from_the_file_from_the_config_and_monochrome1_after_it(tmp_path, dicom_file):
    pydicom = pytest.importorskip("pydicom")
    data = np.tile(np.arange(0, 2400, 200, dtype=np.uint16), (10, 1))  # HU -1024 … 1176 (intercept)
    path = _write_dicom(dicom_file, tmp_path / "w.dcm", data, "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window: -160 … 240 HU
    ds.save_as(path)
    row = decode_image(path, GRAY)[0, 0].astype(np.int64)
    hu = data[0].astype(np.float64) - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 65535
    np.testing.assert_allclose(row, np.rint(expected), atol=1)
    assert row[0] == 0 and row[-1] == 65535  # outside the window: clipped, not stretched
    # The config's window overrides the file's; MONOCHROME1 is inverted after windowing.
    wide = PreprocessConfig(size=GRAY.size, dicom_window=(0, 4000))
    np.testing.assert_allclose(decode_image(path, wide)[0, 0], np.rint(np.clip((hu + 0.5) / 3999 + 0.5, 0, 1)
                                                                         * 65535), atol=1)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    np.testing.assert_allclose(decode_image(path, GRAY)[0, 0], 65535 - np.rint(expected), atol=1)
    assert PreprocessConfig(size=8).key() != PreprocessConfig(size=8, dicom_window=(40, 400)).key()
    with pytest.raises(ConfigError, match=r"'dicom_window'"):
        PreprocessConfig(dicom_window=(40, 0))


def _deflate(dicom_file, path: Path, rows: int, cols: int, pixel_bytes: bytes, **kw: object) -> Path:
    """A deflated-transfer-syntax DICOM (the whole data set zlib-compressed) of a plain one."""
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(dicom_file(path, rows, cols, pixel_bytes, **kw))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("big_header", [False, True])
def test_deflated_dicom_decodes_like_the_plain_one(tmp_path, dicom_file, big_header):
    pydicom = pytest.importorskip("pydicom")
    data = np.tile(np.arange(12, dtype=np.uint16) * 100, (10, 1))
    plain = _write_dicom(dicom_file, tmp_path / "plain.dcm", data, "MONOCHROME2")
    deflated = _deflate(dicom_file, tmp_path / "deflated.dcm", *data.shape, data.tobytes(),
                        rescale=(1.0, -1024))
    if big_header:  # 300 kB of elements before the pixel data: inflated in several steps
        ds = pydicom.dcmread(deflated)
        ds.add_new(0x00091010, "OB", bytes(range(256)) * 1200)
        ds.save_as(deflated, enforce_file_format=True)
    assert np.array_equal(decode_image(deflated, GRAY), decode_image(plain, GRAY))


@pytest.mark.parametrize("bomb", ["declares_too_many_pixels", "inflates_past_what_it_declares"])
def test_deflated_dicom_bomb_is_refused_before_it_is_inflated(tmp_path, dicom_file, monkeypatch, bomb):
    import tracemalloc

    from medtransfer.data import images

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # a small limit keeps the test small
    monkeypatch.setattr(images, "_HEADER_LIMIT", 1 << 20)
    shape, size = ((2_000, 2_000), 8_000_000) if bomb == "declares_too_many_pixels" else ((10, 10), 8_000_000)
    path = _deflate(dicom_file, tmp_path / "bomb.dcm", *shape, bytes(size))  # 8 MB of zeros
    assert path.stat().st_size < 50_000
    message = r"over the limit of 1,000,000" if shape[0] > 10 else r"inflates to over .* far more than"
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match=rf"bomb\.dcm.*{message}"):
            decode_image(path, GRAY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # pydicom alone inflates all 8 MB at once
