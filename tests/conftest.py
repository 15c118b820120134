"""Shared fixtures: tiny synthetic image folders, CSVs and .npz files written into tmp_path; free
TCP ports."""

from __future__ import annotations

import csv
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (the Makefile's) runs two test processes on two cores: each gets one thread,
    # and so do the commands its tests start, or waiting OpenMP threads slow both down many times
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP threads waiting for a busy core
    make tiny models' timings erratic (10× and worse); one thread keeps such tests fast and steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def brightness_folders(root: Path, classes: Mapping[str, int], seed: int, size: int = 16) -> Path:
    """Class folders of ``size``² grey PNGs whose classes differ in brightness, so there is something
    to learn; reused when ``root`` exists (same arguments → same images)."""
    if root.exists():
        return root
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = np.clip(rng.normal(60 + 120 * k, 30, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="session")
def class_folders() -> Callable[..., Path]:
    """``class_folders(root, {"neg": 40, "pos": 40}, seed)`` → a tiny class-per-folder data set."""
    return brightness_folders


def write_image(
    path: Path, rng: np.random.Generator, size: tuple[int, int] = (12, 10), mode: str = "L"
) -> Path:
    """A random image of (width, height) ``size`` in PIL ``mode``, format from the suffix."""
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode in ("RGB", "RGBA"):
        channels = len(mode)
        img = Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))
    else:
        img = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        if mode != "L":
            img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_image_folder({"a": 3, "b": 4}, ext=".png")`` → root/<class>/<i>.png."""

    def make(
        counts: Mapping[str, int],
        *,
        root: Path | None = None,
        ext: str = ".png",
        mode: str = "L",
        size: tuple[int, int] = (12, 10),
        seed: int = 0,
    ) -> Path:
        root = root if root is not None else tmp_path / "images"
        rng = np.random.default_rng(seed)
        for name, count in counts.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(root / name / f"img{i:03d}{ext}", rng, size, mode)
        return root

    return make


@pytest.fixture
def make_csv(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write ``rows`` (dicts) to a CSV at ``path`` (default tmp_path/index.csv)."""

    def make(rows: list[dict[str, str]], path: Path | None = None) -> Path:
        path = path if path is not None else tmp_path / "index.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    return make


@pytest.fixture
def make_npz(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a MedMNIST-style .npz with ``per_split`` images per split, labels cycling."""

    def make(
        per_split: Mapping[str, int] | None = None,
        *,
        num_classes: int = 2,
        size: int = 8,
        rgb: bool = False,
        path: Path | None = None,
        seed: int = 0,
    ) -> Path:
        per_split = per_split if per_split is not None else {"train": 6, "val": 4, "test": 4}
        path = path if path is not None else tmp_path / "data.npz"
        rng = np.random.default_rng(seed)
        arrays = {}
        for split, n in per_split.items():
            shape = (n, size, size, 3) if rgb else (n, size, size)
            arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % num_classes).astype(np.uint8)[:, None]
        np.savez_compressed(path, **arrays)
        return path

    return make


def write_dicom(path: Path, rows: int, cols: int, pixel_data: bytes, *, photometric: str = "MONOCHROME2",
                frames: int = 1, rescale: tuple[float, float] | None = None) -> Path:
    """A 16-bit grey DICOM file: ``pixel_data`` as given (it may declare more than it holds),
    ``rescale`` = (slope, intercept) when the file should carry them."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = pixel_data
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def dicom_file() -> Callable[..., Path]:
    """``dicom_file(path, rows, cols, pixel_data, ...)`` → a DICOM file (see :func:`write_dicom`)."""
    return write_dicom


# The tiny synthetic study every study and search test starts from.
def tiny_study(root: Path, folders: Callable[..., Path]) -> dict[str, Any]:
    """Two variants × (pretrain + transfer) = 4 units on images written under ``root``."""
    train = {"epochs": 2, "batch_size": 16, "progress": False,
             "optimizer": {"name": "adam", "lr": 0.001}}
    return {
        "name": "tiny",
        "seed": 3,
        "cache_dir": str(root / "cache"),
        "preprocess": {"size": 16},
        "report": {"figure_formats": ["png"]},  # SVG too: tests/test_report.py, test_plots.py
        "source": {"data": {"path": str(folders(root / "src", {"neg": 40, "pos": 40}, seed=1))},
                   "split": {"val_fraction": 0.2}},
        "target": {
            "data": {"path": str(folders(root / "tgt", {"normal": 30, "covid": 30}, seed=2)),
                     "classes": ["normal", "covid"]},
            "split": {"test_sets": 2, "test_per_class": 5, "train_per_class": 15,
                      "val_fraction": 0.2},
        },
        "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": train},
        "transfer": {"freeze": {"trainable_layers": 3}, "train": train},
        "variants": [{"name": "baseline"}, {"name": "bn", "model": {"batch_norm": True}}],
    }


@pytest.fixture(scope="session")
def tiny_study_config(class_folders: Callable[..., Path]) -> Callable[[Path], dict[str, Any]]:
    """``tiny_study_config(root)`` → the tiny study's config dict, its images under ``root``."""
    return lambda root: tiny_study(root, class_folders)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port on loopback that nothing listens on now."""
    return _free_port
