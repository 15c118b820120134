"""Per-image metadata for the audit: read every file once and keep what a shortcut could hide in.

For each image: the format from the file header (PIL's ``Image.format``, not the extension), size,
mode and bit depth, EXIF / ICC / dpi, JPEG quantisation, file size, a colour class (grey, grey
stored as RGB, grey with coloured marks, tinted, colour), intensity statistics and border content
of a 128² grey thumbnail, a content hash of the decoded pixels and of the file bytes, a perceptual
hash and a high-pass "detail" thumbnail for near-duplicate checks.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageFilter

from medtransfer.audit.config import AuditConfig
from medtransfer.data.config import DataConfig, SourceKind
from medtransfer.data.images import PreprocessConfig, decode_image
from medtransfer.data.limits import MAX_SIZE, open_image
from medtransfer.data.sources import list_files
from medtransfer.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_THUMB = 128
_BITS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_GREY_MODES = {"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


class ColourKind(StrEnum):
    """How colour is used by an image."""

    grayscale = "grayscale"  # one channel
    grayscale_rgb = "grayscale_rgb"  # three equal channels: grey stored as RGB
    colour_marks = "colour_marks"  # grey with a few coloured pixels (annotations, text, arrows)
    tinted = "tinted"  # most pixels off-grey with one consistent hue (sepia, blue film, ...)
    colour = "colour"  # anything else


@dataclass
class ImageRecord:
    """What the audit knows about one image (intensities are in 0..1)."""

    id: str
    label: int
    group: str | None
    format: str
    mode: str
    width: int
    height: int
    bit_depth: int
    file_bytes: int
    exif: bool
    icc: bool
    dpi: float
    jpeg_quality: float  # mean luma quantisation step; NaN unless JPEG
    colour: ColourKind
    colour_fraction: float
    mean: float
    std: float
    p01: float
    p50: float
    p99: float
    dark_border: float
    bright_border: float
    corner_text: float
    name_token: str
    pixel_sha: str
    file_sha: str


@dataclass
class Inventory:
    """Records of one data set, plus the hashes and detail thumbnails, in record order."""

    name: str
    path: str
    kind: str
    classes: tuple[str, ...]
    records: list[ImageRecord]
    phash: np.ndarray
    detail: np.ndarray
    origin: list[str] | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def groups(self) -> list[str] | None:
        groups = [r.group for r in self.records]
        return None if any(g is None for g in groups) else [str(g) for g in groups]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(counts[i]) for i, c in enumerate(self.classes)}


_Pixels = tuple[dict[str, object], int, np.ndarray]


# A study audits its target twice (against the source, then with its split): the second time,
# files whose bytes are unchanged are not read and measured again.
_RECENT: dict[str, Inventory] = {}


def inspect_source(data: DataConfig, cfg: AuditConfig) -> Inventory:
    """Inventory of a folder, CSV or npz source (npz images are audited as arrays)."""
    start = time.perf_counter()
    if data.source_kind is SourceKind.NPZ:
        inv = _inspect_npz(data, cfg)
    else:
        index = list_files(data)
        key = _content_key(data, cfg, index.paths)
        if key in _RECENT:
            inv = copy.deepcopy(_RECENT[key])
            inv.seconds = time.perf_counter() - start
            return inv
        jobs = list(zip(index.paths, index.ids, index.labels.tolist(), strict=True))
        groups: list[str | None] = list(index.groups) if index.groups else [None] * len(jobs)

        def work(i: int) -> tuple[ImageRecord, int, np.ndarray] | str:
            path, image_id, label = jobs[i]
            try:
                return _inspect_file(path, image_id, label, groups[i], cfg)
            except (OSError, ValueError, SyntaxError, DataError, Image.DecompressionBombError) as exc:
                return f"{type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
            results = list(pool.map(work, range(len(jobs))))
        done = [r for r in results if isinstance(r, tuple)]
        failed = [(jobs[i][1], r) for i, r in enumerate(results) if isinstance(r, str)]
        inv = _assemble_parts(data.display_name, str(data.path), data.source_kind.value,
                              index.classes, done, cfg, failed)
        _RECENT.clear()
        _RECENT[key] = copy.deepcopy(inv)
    inv.seconds = time.perf_counter() - start
    return inv


def _content_key(data: DataConfig, cfg: AuditConfig, paths: Sequence[Path]) -> str:
    """A hash of the settings and of every file's path and bytes."""
    key = hashlib.sha256(repr((data, cfg)).encode())
    for path in paths:
        try:
            content = path.read_bytes()
            key.update(f"{path}\0{len(content)}\0".encode() + content)
        except OSError as exc:  # inspected (and reported) as unreadable
            key.update(f"{path}\0{exc}".encode())
    return key.hexdigest()


def inspect_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    ids: Sequence[str],
    cfg: AuditConfig,
    *,
    name: str = "images",
    groups: Sequence[str] | None = None,
    origin: Sequence[str] | None = None,
    channels_last: bool = False,
) -> Inventory:
    """Inventory of decoded uint8/uint16 arrays, (N, C, H, W) like an ImageSet or, with
    ``channels_last``, (N, H, W[, C]) like MedMNIST; there is no file metadata to read."""
    start = time.perf_counter()
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.dtype not in (np.uint8, np.uint16):
        raise DataError(f"expected uint8/uint16 images (N, C, H, W), got {images.dtype} {images.shape}")

    def work(i: int) -> tuple[ImageRecord, int, np.ndarray]:
        img = images[i]
        if img.ndim == 3 and not channels_last:
            img = np.moveaxis(img, 0, -1)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        img8 = (img // 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
        rgb = img8 if img8.ndim == 3 else None
        grey = np.asarray(Image.fromarray(img8).convert("L")) if rgb is not None else img8
        stats, phash, detail = _pixel_stats(grey, rgb, cfg)
        record = ImageRecord(
            id=str(ids[i]), label=int(labels[i]), group=None if groups is None else str(groups[i]),
            format="array", mode="RGB" if rgb is not None else "L", width=int(grey.shape[1]),
            height=int(grey.shape[0]), bit_depth=16 if img.dtype == np.uint16 else 8, file_bytes=0,
            exif=False, icc=False, dpi=float("nan"), jpeg_quality=float("nan"),
            name_token="", pixel_sha=hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest(),
            file_sha="", **stats,  # type: ignore[arg-type]
        )
        return record, phash, detail

    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        done = list(pool.map(work, range(len(labels))))
    inv = _assemble_parts(name, "", "arrays", tuple(classes), done, cfg, [])
    inv.origin = None if origin is None else [str(o) for o in origin]
    inv.seconds = time.perf_counter() - start
    return inv


def _inspect_npz(data: DataConfig, cfg: AuditConfig) -> Inventory:
    from medtransfer.data.demo import demo_path
    from medtransfer.data.limits import check_npz_members
    from medtransfer.data.npz import npz_array, npz_labels, open_npz

    path = demo_path(data.demo_name) if data.demo_name is not None else data.path
    with open_npz(path) as archive:
        wanted = [f"{s}_{p}" for s in data.npz_splits for p in ("images", "labels")]
        missing = [k for k in wanted if k not in archive.files]
        if missing:
            raise DataError(f"{path}: missing key(s) {', '.join(missing)}; keys found: "
                            f"{', '.join(sorted(archive.files))}")
        check_npz_members(archive, path, [*wanted, "classes"])
        images = [npz_array(archive, f"{s}_images", path) for s in data.npz_splits]
        labels = [npz_labels(npz_array(archive, f"{s}_labels", path), len(x), f"{path}: '{s}_labels'")
                  for s, x in zip(data.npz_splits, images, strict=True)]
        stored = ([str(c) for c in npz_array(archive, "classes", path).reshape(-1)]
                  if "classes" in archive.files else None)
    all_labels = np.concatenate(labels)
    classes = data.classes or stored or [str(i) for i in range(int(all_labels.max(initial=0)) + 1)]
    origin = [s for s, y in zip(data.npz_splits, labels, strict=True) for _ in range(len(y))]
    ids = [f"{s}:{i}" for s, y in zip(data.npz_splits, labels, strict=True) for i in range(len(y))]
    inv = inspect_arrays(np.concatenate(images), all_labels, classes, ids, cfg,
                         name=data.display_name, origin=origin, channels_last=True)
    inv.path, inv.kind = str(path), SourceKind.NPZ.value
    for r in inv.records:
        r.format = "npz"
    return inv


def _inspect_file(
    path: Path, image_id: str, label: int, group: str | None, cfg: AuditConfig
) -> tuple[ImageRecord, int, np.ndarray]:
    data = path.read_bytes()
    if path.suffix.lower() == ".dcm":
        return _inspect_dicom(path, data, image_id, label, group, cfg)
    with open_image(io.BytesIO(data), str(path)) as img:  # the pixel limit, exactly
        img.load()  # force the full decode: truncated files fail here
        fmt = img.format or path.suffix.lstrip(".").upper()
        mode, (width, height) = img.mode, img.size
        dpi = img.info.get("dpi")
        quant = getattr(img, "quantization", None) if fmt == "JPEG" else None
        exif = len(img.getexif()) > 0
        icc = bool(img.info.get("icc_profile"))
        pixel_sha = hashlib.sha256(f"{mode}{img.size}".encode() + img.tobytes()).hexdigest()
        grey, rgb = _to_8bit(img)
    bits = data[24] if data[:8] == _PNG_SIGNATURE and len(data) > 24 else _BITS.get(mode, 8)
    stats, phash, detail = _pixel_stats(grey, rgb, cfg)
    record = ImageRecord(
        id=image_id, label=label, group=group, format=fmt, mode=mode, width=width, height=height,
        bit_depth=int(bits), file_bytes=len(data), exif=exif, icc=icc,
        dpi=float(dpi[0]) if isinstance(dpi, tuple) and dpi else float("nan"),
        jpeg_quality=float(np.mean(quant[0])) if quant else float("nan"),
        name_token=name_token(image_id), pixel_sha=pixel_sha,
        file_sha=hashlib.sha256(data).hexdigest(), **stats,  # type: ignore[arg-type]
    )
    return record, phash, detail


def _inspect_dicom(
    path: Path, data: bytes, image_id: str, label: int, group: str | None, cfg: AuditConfig
) -> tuple[ImageRecord, int, np.ndarray]:
    try:
        import pydicom
    except ImportError:
        raise DataError("auditing DICOM needs pydicom: pip install 'medtransfer[dicom]'") from None
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    rows, cols = int(header.Rows), int(header.Columns)
    scale = min(1.0, MAX_SIZE / max(rows, cols, 1))  # the statistics come from a 128² thumbnail
    size = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    pixels = decode_image(path, PreprocessConfig(size=size))[0]
    grey = (pixels // 257).astype(np.uint8) if pixels.dtype == np.uint16 else pixels
    stats, phash, detail = _pixel_stats(grey, None, cfg)
    record = ImageRecord(
        id=image_id, label=label, group=group, format="DICOM",
        mode=str(header.get("PhotometricInterpretation", "")),
        width=cols, height=rows, bit_depth=int(header.get("BitsStored", 16)), file_bytes=len(data),
        exif=False, icc=False, dpi=float("nan"), jpeg_quality=float("nan"),
        name_token=name_token(image_id), pixel_sha=hashlib.sha256(pixels.tobytes()).hexdigest(),
        file_sha=hashlib.sha256(data).hexdigest(), **stats,  # type: ignore[arg-type]
    )
    return record, phash, detail


def name_token(image_id: str) -> str:
    """The file name up to its first digit, trimmed: 'Normal-12.png' → 'Normal', 'TB.3' → 'TB'."""
    stem = Path(image_id).stem
    match = re.match(r"\D*", stem)
    token = (match.group(0) if match else "").strip(" -_.()[]{}#")
    return token or "(digits)"


def _to_8bit(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(grey uint8 (H, W), RGB uint8 (H, W, 3) or None for single-channel images)."""
    mode = img.mode
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L")), None
    if mode in _GREY_MODES:
        values = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            return np.clip(values / 257.0, 0, 255).astype(np.uint8), None
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        return np.rint(scaled).astype(np.uint8), None
    rgb = img.convert("RGB")
    return np.asarray(rgb.convert("L")), np.asarray(rgb)


def _colour(rgb: np.ndarray | None, tolerance: int) -> tuple[ColourKind, float]:
    if rgb is None:
        return ColourKind.grayscale, 0.0
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / 512)))  # ≤ 512² pixels are plenty
    px = rgb[::step, ::step]
    r, g, b = px[:, :, 0], px[:, :, 1], px[:, :, 2]
    if np.array_equal(r, g) and np.array_equal(g, b):  # the common case, cheaply
        return ColourKind.grayscale_rgb, 0.0
    # Channel-wise maximum/minimum: a reduction over a 3-long last axis is much slower.
    chroma = np.maximum(np.maximum(r, g), b).astype(np.int16) - np.minimum(np.minimum(r, g), b)
    coloured = chroma > tolerance
    fraction = float(coloured.mean())
    if fraction < 0.001:
        return ColourKind.grayscale_rgb, fraction
    if fraction < 0.05:
        return ColourKind.colour_marks, fraction
    # Hue angle of every off-grey pixel in opponent colour space; tinted = one dominant hue.
    sel = px[coloured].astype(np.float64)  # (M, 3)
    angle = np.arctan2(np.sqrt(3) * (sel[:, 1] - sel[:, 2]), 2 * sel[:, 0] - sel[:, 1] - sel[:, 2])
    consistency = float(np.hypot(np.cos(angle).mean(), np.sin(angle).mean()))
    return (ColourKind.tinted if consistency >= 0.9 else ColourKind.colour), fraction


def _pixel_stats(grey: np.ndarray, rgb: np.ndarray | None, cfg: AuditConfig) -> _Pixels:
    img = Image.fromarray(grey)
    thumb = np.asarray(img.resize((_THUMB, _THUMB), Image.Resampling.BILINEAR), np.float32) / 255
    band = max(1, round(0.05 * _THUMB))
    border = np.concatenate([thumb[:band].ravel(), thumb[-band:].ravel(),
                             thumb[band:-band, :band].ravel(), thumb[band:-band, -band:].ravel()])
    corner = max(1, round(0.15 * _THUMB))
    bright = [float((thumb[r, c] >= 0.9).mean()) for r in (slice(0, corner), slice(-corner, None))
              for c in (slice(0, corner), slice(-corner, None))]
    kind, fraction = _colour(rgb, cfg.grey_tolerance)
    p01, p50, p99 = np.percentile(thumb, [1, 50, 99]).tolist()
    stats: dict[str, object] = {
        "colour": kind, "colour_fraction": fraction, "mean": float(thumb.mean()),
        "std": float(thumb.std()), "p01": p01, "p50": p50, "p99": p99,
        "dark_border": float((border <= 0.05).mean()),
        "bright_border": float((border >= 0.95).mean()),
        # Sparse bright pixels in a corner look like burnt-in text or side markers ("L", "R").
        "corner_text": max((b for b in bright if b <= 0.5), default=0.0),
    }
    bits = imagehash.phash(img).hash.ravel()
    phash = int(np.packbits(bits).view(">u8")[0])
    size = cfg.detail_size
    # BOX averages when shrinking; smaller images are enlarged smoothly, since a blocky
    # enlargement would give every image the same high-pass grid.
    filt = Image.Resampling.BOX if min(img.size) >= size else Image.Resampling.BICUBIC
    small = img.resize((size, size), filt)
    blurred = small.filter(ImageFilter.GaussianBlur(2.0 * size / 64))
    detail = np.asarray(small, np.float32) - np.asarray(blurred, np.float32)
    detail -= detail.mean()
    norm = float(np.linalg.norm(detail))
    detail = detail / norm if norm > 0 else detail
    return stats, phash, detail.ravel().astype(np.float16)


def _assemble_parts(
    name: str,
    path: str,
    kind: str,
    classes: tuple[str, ...],
    done: list[tuple[ImageRecord, int, np.ndarray]],
    cfg: AuditConfig,
    failed: list[tuple[str, str]],
) -> Inventory:
    if not done:
        raise DataError(f"{path or name}: no readable images to audit")
    return Inventory(
        name=name, path=path, kind=kind, classes=classes, records=[d[0] for d in done],
        phash=np.array([d[1] for d in done], dtype=np.uint64),
        detail=np.stack([d[2] for d in done]) if done else np.zeros((0, cfg.detail_size**2), np.float16),
        unreadable=failed,
    )

