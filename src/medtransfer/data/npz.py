"""Read MedMNIST-style ``.npz`` archives: ``<split>_images`` (N, H, W[, 3]) and ``<split>_labels``.

An optional ``classes`` key (a string array) names the label integers; the bundled demo files
carry one. Preprocessed splits are cached as whole arrays keyed by the archive's content hash.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from medtransfer.data.cache import ImageCache, file_sha256
from medtransfer.data.entries import require_regular
from medtransfer.data.images import PreprocessConfig, preprocess_array
from medtransfer.data.limits import check_npz_members, check_set_bytes
from medtransfer.errors import DataError


@dataclass
class NpzSplit:
    """One official split, preprocessed to (N, C, H, W)."""

    name: str
    images: np.ndarray
    labels: np.ndarray


@dataclass
class NpzParts:
    """The requested splits of an archive and its class names, if it stores them."""

    splits: list[NpzSplit]
    classes: list[str] | None


def read_npz(
    path: Path, splits: Sequence[str], pre: PreprocessConfig, cache: ImageCache
) -> NpzParts:
    """Read and preprocess ``splits`` of the archive at ``path``; errors name the key at fault."""
    with open_npz(path) as archive:
        keys = sorted(archive.files)
        wanted = [f"{s}_{part}" for s in splits for part in ("images", "labels")]
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise DataError(
                f"{path}: missing key(s) {', '.join(missing)}; keys found: {', '.join(keys)}. "
                "data.npz_splits chooses which <split>_images/<split>_labels pairs are read"
            )
        check_npz_members(archive, path, [*wanted, "classes"])
        classes = _read_classes(archive, path) if "classes" in keys else medmnist_classes(path)
        digest = file_sha256(path)
        out = []
        for split in splits:
            raw = npz_array(archive, f"{split}_images", path)
            _check_images(raw, f"{path}: '{split}_images'")
            check_set_bytes(len(raw), pre.channels, pre.hw, f"{path}: '{split}_images'")
            labels = npz_labels(npz_array(archive, f"{split}_labels", path), len(raw),
                                f"{path}: '{split}_labels'")
            images = cache.get_or_compute_array(
                f"npz:{digest}:{split}:{pre.key()}", partial(preprocess_stack, raw, pre)
            )
            out.append(NpzSplit(split, images, labels))
    return NpzParts(out, classes)


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """The archive at ``path``, opened lazily (no member is read): a regular file that is a zip
    archive, else a DataError. A single ``.npy`` is refused before numpy would load it whole."""
    require_regular(path, "npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a readable .npz file: not a zip archive of named arrays "
                        "(np.savez / np.savez_compressed write one)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not a .npz archive of named arrays")
    return archive


def preprocess_stack(raw: np.ndarray, pre: PreprocessConfig) -> np.ndarray:
    """(N, H, W[, C]) images → (N, C, H, W) at ``pre``'s size and colour, same dtype."""
    height, width = pre.hw
    out = np.empty((len(raw), pre.channels, height, width), dtype=raw.dtype)
    for i in range(len(raw)):
        out[i] = preprocess_array(raw[i], pre)
    return out


def _read_classes(archive: np.lib.npyio.NpzFile, path: Path) -> list[str]:
    try:
        names = np.asarray(archive["classes"])
    except ValueError as exc:  # object arrays need pickle, which we never enable
        raise DataError(f"{path}: key 'classes' is not a plain string array: {exc}") from exc
    return [str(c) for c in names.reshape(-1)]


def npz_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """``archive[key]``; an object array (which would need pickle) or a damaged member is a
    DataError naming the file and the key."""
    try:
        return np.asarray(archive[key])
    except ValueError as exc:  # object arrays need pickle, which we never enable
        raise DataError(f"{path}: key '{key}' is not a plain numeric/string array ({exc}); save it "
                        f"with a numeric dtype (np.savez(..., {key}=np.asarray(x, dtype=np.uint8)))"
                        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: key '{key}' cannot be read ({exc}); the archive is damaged") from exc


def npz_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    """``n`` integer labels as int64, from shape (n,) or (n, 1); float labels (NaN among them)
    or another shape are a DataError naming ``where``."""
    if labels.dtype.kind == "f" and labels.size and not np.isfinite(labels).all():
        raise DataError(f"{where}: {int((~np.isfinite(labels)).sum())} NaN/infinite label(s); "
                        f"expected {n} integer class numbers")
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{where} has shape {labels.shape}: multi-label data is not supported")
    if labels.dtype.kind not in "iu" or labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise DataError(
            f"{where}: expected {n} integer labels of shape ({n},) or ({n}, 1), "
            f"got {labels.dtype} {labels.shape}"
        )
    return labels.reshape(-1).astype(np.int64)


def _check_images(raw: np.ndarray, where: str) -> None:
    ok_shape = raw.ndim == 3 or (raw.ndim == 4 and raw.shape[3] in (1, 3))
    if not ok_shape or raw.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"{where}: expected uint8/uint16 images of shape (N, H, W) or (N, H, W, 3), "
            f"got {raw.dtype} {raw.shape}"
        )


# MedMNIST v2's official label names (its INFO table), for files named like ``bloodmnist.npz`` or
# ``bloodmnist_64.npz`` that carry no ``classes`` key. ChestMNIST is multi-label: not listed.
_ORGAN = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
          "lung-left", "lung-right", "pancreas", "spleen"]
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
    "retinamnist": ["grade 0", "grade 1", "grade 2", "grade 3", "grade 4"],
    "tissuemnist": ["collecting duct, connecting tubule", "distal convoluted tubule",
                    "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes",
                    "podocytes", "proximal tubule segments", "thick ascending limb"],
    "organamnist": _ORGAN, "organcmnist": _ORGAN, "organsmnist": _ORGAN,
}


def medmnist_classes(path: Path) -> list[str] | None:
    """The official class names of a MedMNIST file, by its name; None for any other file."""
    names = MEDMNIST_CLASSES.get(path.stem.lower().split("_")[0])
    return list(names) if names is not None else None
