"""Decode one image file into a (C, H, W) array at the configured size and colour mode.

Policy, chosen once so every loader agrees:

* **Bit depth is kept.** 8-bit sources give ``uint8``; 16-bit and higher-depth sources (PNG/TIFF
  ``I;16``, PIL ``I``/``F`` modes, DICOM) give ``uint16``. Mode ``I`` values already in
  0..65535 are kept as they are, anything else (``F``, wider ``I``) is min-max scaled to 0..65535.
* **Colour.** ``grayscale`` gives C=1, RGB sources are reduced by ITU-R 601-2 luma (PIL's
  ``convert("L")``). ``rgb`` gives C=3; grey sources are replicated into three channels.
* **Alpha is dropped**, not composited: medical exports with an alpha channel almost always
  have it fully opaque, and dropping it is what Keras' ``load_img`` does. Palette images are
  expanded to RGB first.
* **EXIF orientation** is applied (``ImageOps.exif_transpose``).
* **Resize** to ``size`` (``resize``): antialiased bilinear filtering (default), nearest
  neighbour (PIL's, as Keras' ``load_img`` / ``flow_from_directory`` by default), or bilinear
  without antialiasing (``tf.image.resize``, OpenCV's ``INTER_LINEAR``); the aspect ratio is *not*
  kept (like Keras' ``flow_from_directory(target_size=...)``), so pre-crop elongated images yourself.
* **Truncated files fail.** We force a full ``load()`` and rely on Pillow's default
  ``ImageFile.LOAD_TRUNCATED_IMAGES = False``; do not switch that global on.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from medtransfer.data.entries import REFUSED_ALWAYS, not_regular
from medtransfer.data.intensity import check_percentiles, parse_rescale, stretch_percentiles
from medtransfer.data.limits import LIMIT_HINT, MAX_SIZE, open_image, pixel_limit
from medtransfer.data.resize import RESIZE_METHODS, resize8, resize16
from medtransfer.errors import ConfigError, ImageDecodeError

# Bump when the decode/resize code changes the pixels it produces: old cache entries become stale.
PIPELINE_VERSION = 1

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"}
)

_RGB_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
_WIDE_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


class ColorMode(StrEnum):
    """Channel layout of decoded images."""

    GRAYSCALE = "grayscale"
    RGB = "rgb"


class OnError(StrEnum):
    """What to do with an image that cannot be decoded."""

    RAISE = "raise"
    SKIP = "skip"


@dataclass(frozen=True)
class PreprocessConfig:
    """How files become arrays: size (int, or [height, width]), colour mode, error policy."""

    size: int | tuple[int, int] = 224  # resize to size × size, or [height, width]; sides 1..4096
    color: ColorMode = ColorMode.GRAYSCALE  # decode to one grey channel or to RGB
    on_error: OnError = OnError.RAISE  # an undecodable image stops the run (raise) or is left out
    # DICOM: [center, width] of the grey-level window, overriding the file's own (else the file's
    # VOI LUT or window, else a min-max stretch)
    dicom_window: tuple[float, float] | None = None
    # Keras's rescale: the model sees 8-bit-scale intensities (0–255) times this, before any
    # weights' normalisation; null: Keras's 1/255, inputs in [0, 1] ("1/255" may be written)
    rescale: float | str | None = None
    # [low, high]: each image's percentiles stretched to the full range, the rest clipped
    # (skimage's rescale_intensity to np.percentile(image, (low, high))), e.g. [2, 98]
    percentiles: tuple[float, float] | None = None
    # how images are resized to size: antialias (bilinear with antialiasing, PIL), nearest (PIL's
    # nearest neighbour, Keras load_img's default), bilinear (no antialiasing: tf.image.resize,
    # OpenCV INTER_LINEAR); null: antialias, nearest under the study's compat keras
    resize: Literal["antialias", "nearest", "bilinear"] | None = None

    def __post_init__(self) -> None:
        if self.resize is not None and self.resize not in RESIZE_METHODS:
            raise ConfigError(f"'resize': got {self.resize!r}; allowed: {', '.join(RESIZE_METHODS)}, null")
        object.__setattr__(self, "rescale", parse_rescale(self.rescale))
        object.__setattr__(self, "percentiles", check_percentiles(self.percentiles))
        if self.dicom_window is not None:
            window = tuple(self.dicom_window)
            if len(window) != 2 or not all(isinstance(v, int | float) for v in window) or window[1] < 1:
                raise ConfigError(f"'dicom_window': got {self.dicom_window!r}; expected [center, width] "
                                  "with width >= 1, in the image's rescaled units (e.g. HU)")
            object.__setattr__(self, "dicom_window", (float(window[0]), float(window[1])))
        dims = (self.size,) if isinstance(self.size, int) else tuple(self.size)
        if len(dims) != (1 if isinstance(self.size, int) else 2) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_SIZE for d in dims
        ):
            raise ConfigError(
                f"'preprocess.size': got {self.size!r}; expected an integer from 1 to {MAX_SIZE} or "
                "[height, width] of such integers (a larger side is almost surely a typo: one "
                "100000-px grey image alone would take 10 GB)"
            )
        if not isinstance(self.size, int):
            object.__setattr__(self, "size", (dims[0], dims[1]))
        for name, enum_type in (("color", ColorMode), ("on_error", OnError)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                allowed = ", ".join(m.value for m in enum_type)
                raise ConfigError(f"'{name}': got {value!r}; allowed: {allowed}") from None

    @property
    def hw(self) -> tuple[int, int]:
        """Target (height, width)."""
        if isinstance(self.size, int):
            return (self.size, self.size)
        return (self.size[0], self.size[1])

    @property
    def channels(self) -> int:
        """Number of channels of decoded images."""
        return 1 if self.color is ColorMode.GRAYSCALE else 3

    def key(self) -> str:
        """Short stable hash of the settings that change pixels (not ``on_error``)."""
        spec: dict[str, object] = {"v": PIPELINE_VERSION, "hw": list(self.hw), "color": self.color.value}
        if self.dicom_window is not None:
            spec["dicom_window"] = list(self.dicom_window)
        if self.percentiles is not None:
            spec["percentiles"] = list(self.percentiles)
        if self.resize not in (None, "antialias"):
            spec["resize"] = self.resize
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def decode_image(path: Path, cfg: PreprocessConfig) -> np.ndarray:
    """Decode ``path`` into a (C, H, W) uint8/uint16 array; any failure is an ImageDecodeError."""
    path = Path(path)
    kind = not_regular(path)
    if kind is not None:  # checked before opening: a FIFO blocks, /dev/zero never ends
        why = "" if kind.startswith(("missing", "unreadable")) else f" ({REFUSED_ALWAYS})"
        raise ImageDecodeError(str(path), f"it is {kind}, not a regular file{why}")
    try:
        array = _read_dicom(path, cfg.dicom_window) if path.suffix.lower() == ".dcm" else _read_pil(path)
        return preprocess_array(array, cfg)
    except (ImageDecodeError, MemoryError, KeyboardInterrupt):
        raise  # running out of memory is not a bad file: never "unreadable, skipped"
    except Exception as exc:
        # Pillow and pydicom raise many exception types on corrupt input (OSError, SyntaxError,
        # struct.error, ValueError, ...); all of them mean "this file is unreadable".
        raise ImageDecodeError(str(path), f"{type(exc).__name__}: {exc}") from exc


def preprocess_array(array: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(H, W) or (H, W, C) uint8/uint16 array → (C, H, W) at ``cfg`` size and colour."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 pixels, got {array.dtype}")
    height, width = cfg.hw
    if array.dtype == np.uint8:
        img = Image.fromarray(np.ascontiguousarray(array))
        if cfg.color is ColorMode.GRAYSCALE and img.mode == "RGB":
            img = img.convert("L")
        out = resize8(img, height, width, cfg.resize or "antialias")
    else:
        if array.ndim == 3:
            array = _luma16(array) if cfg.color is ColorMode.GRAYSCALE else array
        out = resize16(array, height, width, cfg.resize or "antialias")
    if out.ndim == 2:
        out = out[None]
        if cfg.color is ColorMode.RGB:
            out = np.repeat(out, 3, axis=0)
    else:
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(stretch_percentiles(out, cfg.percentiles))


def _read_pil(path: Path) -> np.ndarray:
    with open_image(path, str(path)) as img:
        img.load()  # Image.open is lazy: force the full decode so truncation surfaces here
        return _pil_to_array(ImageOps.exif_transpose(img))


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"))
    if mode in _RGB_MODES:
        return np.asarray(img.convert("RGB"))
    if mode in _WIDE_MODES:
        return _to_uint16(np.asarray(img))
    raise ValueError(f"unsupported image mode {mode!r}")


def _to_uint16(values: np.ndarray) -> np.ndarray:
    """Integer data already in 0..65535 is kept; anything else is min-max scaled to it."""
    if values.dtype.kind in "ui":
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi <= 65535:
            return values.astype(np.uint16)
    data = values.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError("pixel data contains NaN or infinite values")
    lo_f, hi_f = float(data.min()), float(data.max())
    if hi_f <= lo_f:
        return np.zeros(data.shape, np.uint16)
    scaled = (data - lo_f) * (65535.0 / (hi_f - lo_f))
    return np.rint(scaled).astype(np.uint16)


def _luma16(rgb: np.ndarray) -> np.ndarray:
    weights = np.array([0.299, 0.587, 0.114])
    return np.clip(np.rint(rgb.astype(np.float64) @ weights), 0, 65535).astype(np.uint16)




def _check_dicom_size(path: Path, ds: Any) -> int:
    """Refuse a DICOM whose declared Rows × Columns × frames exceed :func:`pixel_limit`, before
    any pixel is decoded; returns the frame count."""
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    limit = pixel_limit()
    if limit is not None and rows * cols * frames > limit:
        raise ImageDecodeError(
            str(path), f"declares {rows} × {cols} pixels × {frames} frame(s) = {rows * cols * frames:,} "
            f"pixels, over the limit of {limit:,} ({LIMIT_HINT})")
    return frames


def _dicom_dataset(path: Path, pydicom: Any) -> tuple[Any, int]:
    """``path``'s data set and frame count, its declared size checked against the pixel limit
    before any pixel data is read, inflated or decompressed."""
    meta = pydicom.filereader.read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return _read_deflated(path, pydicom)
    ds = pydicom.dcmread(path, defer_size="1 MB")  # large values (pixel data) read when used
    return ds, _check_dicom_size(path, ds)


_HEADER_LIMIT = 16 << 20  # inflated bytes a deflated DICOM's elements before its pixel data may take


def _read_deflated(path: Path, pydicom: Any) -> tuple[Any, int]:
    """A deflated DICOM inflated in bounded steps: pydicom inflates the whole data set as it
    reads it (a 1 MB file can declare, and inflate to, gigabytes) before anything can be
    checked. Here the elements before the pixel data are inflated first, the size they declare
    is checked, and then no more is inflated than that size needs."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filereader import read_dataset, read_preamble

    with path.open("rb") as fh:  # the deflated bytes: as large as the file, no larger
        preamble = read_preamble(fh, False)
        meta = read_dataset(fh, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        body = fh.read()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    data, size = inflater.decompress(body, 1 << 16), 1 << 16
    while (header := _deflated_header(data, whole=len(data) < size)) is None:
        if size >= _HEADER_LIMIT:
            raise ImageDecodeError(str(path), f"deflated DICOM whose elements before the pixel data "
                                   f"inflate to over {_HEADER_LIMIT:,} bytes (a decompression bomb?)")
        size *= 4
        data += inflater.decompress(inflater.unconsumed_tail, size - len(data))
    frames = _check_dicom_size(path, header)
    need = (int(getattr(header, "Rows", 0) or 0) * int(getattr(header, "Columns", 0) or 0) * frames
            * int(getattr(header, "SamplesPerPixel", 1) or 1)
            * -(-int(getattr(header, "BitsAllocated", 16) or 16) // 8))
    cap = need + _HEADER_LIMIT
    if len(data) == size:  # more to inflate
        data += inflater.decompress(inflater.unconsumed_tail, cap + 1 - len(data))
    if len(data) > cap:
        raise ImageDecodeError(str(path), f"deflated DICOM inflates to over {cap:,} bytes, far more "
                               f"than the {need:,} bytes of pixels it declares (a decompression bomb?)")
    dataset = read_dataset(io.BytesIO(data), False, True)
    ds = FileDataset(str(path), dataset, preamble, FileMetaDataset(meta), False, True)
    return ds, frames


def _deflated_header(data: bytes, whole: bool) -> Any:
    """The elements before the pixel data in ``data`` (an inflated prefix of a data set, or the
    ``whole`` of it), or None when the prefix ends before the pixel data."""
    from pydicom.filereader import read_dataset

    reached = []

    def at_pixels(tag: Any, vr: Any, length: int) -> bool:
        if tag >= 0x7FE00000:  # (7FE0,xxxx): pixel data, float or double float pixel data
            reached.append(tag)
        return bool(reached)

    if whole:
        return read_dataset(io.BytesIO(data), False, True, stop_when=at_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the prefix's cut-off element
        try:
            header = read_dataset(io.BytesIO(data), False, True, stop_when=at_pixels)
        except Exception:  # an element cut off at the prefix's end: inflate more
            return None
    return header if reached else None


def _read_dicom(path: Path, window: tuple[float, float] | None = None) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImageDecodeError(
            str(path), "reading DICOM needs pydicom: pip install 'medtransfer[dicom]'"
        ) from None
    ds, frames = _dicom_dataset(path, pydicom)
    pixels = np.asarray(ds.pixel_array)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]  # multi-frame: the first frame only
    if samples == 3:
        if pixels.dtype == np.uint8:
            return pixels
        return _to_uint16(pixels)
    invert = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if window is None and "VOILUTSequence" in ds:
        # A lookup table from the file: pydicom applies the modality and VOI LUTs as the standard says.
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
        return _stretch16(values, 1.0, 0.0, invert)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = (ds.WindowCenter, ds.WindowWidth)
        # Several windows may be listed (e.g. lung and bone): the first is the default one.
        first = lambda v: float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)  # noqa: E731
        window = (first(center), first(width))
    if window is not None and window[1] >= 1:
        return _window16(pixels, slope, intercept, window, invert)
    return _stretch16(pixels, slope, intercept, invert)


def _window16(pixels: np.ndarray, slope: float, intercept: float, window: tuple[float, float],
              invert: bool) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2) on ``pixels * slope + intercept``, to uint16;
    MONOCHROME1 inverted after windowing. Chunked like :func:`_stretch16`."""
    center, width = window
    out = np.empty(pixels.shape, np.uint16)
    step = max(1, _CHUNK_ROWS_PIXELS // max(1, pixels[0].size if pixels.ndim > 1 else 1))
    for i in range(0, len(pixels), step):
        x = pixels[i : i + step].astype(np.float64) * slope + intercept
        y = np.clip((x - (center - 0.5)) / max(width - 1, 1e-9) + 0.5, 0.0, 1.0)
        out[i : i + step] = np.rint((1.0 - y if invert else y) * 65535.0)
    return out


_CHUNK_ROWS_PIXELS = 1 << 20  # float64 work in chunks of about 1 M pixels (8 MB), not the image


def _stretch16(pixels: np.ndarray, slope: float, intercept: float, invert: bool) -> np.ndarray:
    """Calibrated values ``pixels * slope + intercept`` (MONOCHROME1: inverted, low values are
    bright) min-max stretched to uint16. Same numbers as doing it on the whole float64 image,
    but memory beyond the uint16 result stays bounded."""
    step = max(1, _CHUNK_ROWS_PIXELS // max(1, pixels[0].size if pixels.ndim > 1 else 1))
    chunks = lambda: (slice(i, i + step) for i in range(0, len(pixels), step))  # noqa: E731
    rescale = lambda sl: pixels[sl].astype(np.float64) * slope + intercept  # noqa: E731
    lo = min(float(rescale(sl).min()) for sl in chunks())
    hi = max(float(rescale(sl).max()) for sl in chunks())
    if invert:  # as (max + min) - data on the whole image
        value = lambda sl: (hi + lo) - rescale(sl)  # noqa: E731
        lo, hi = (min(float(value(sl).min()) for sl in chunks()),
                  max(float(value(sl).max()) for sl in chunks()))
    else:
        value = rescale
    out = np.zeros(pixels.shape, np.uint16)
    if hi <= lo:
        return out
    for sl in chunks():
        out[sl] = np.rint((value(sl) - lo) * (65535.0 / (hi - lo)))
    return out
