"""Load a labelled image set from a class-per-folder tree, a CSV index or a MedMNIST-style .npz.

Every source ends up as an :class:`ImageSet`: one (N, C, H, W) array at the preprocessing size,
integer labels, class names and a stable id per image, so splitting and training never care where
the pixels came from.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtransfer.data.cache import ImageCache
from medtransfer.data.config import DataConfig, SourceKind
from medtransfer.data.demo import demo_path
from medtransfer.data.images import OnError, PreprocessConfig
from medtransfer.data.index import (
    Item,
    check_two_classes,
    index_csv,
    index_folder,
    missing_path_message,
    pattern_groups,
)
from medtransfer.data.limits import check_set_bytes
from medtransfer.data.npz import read_npz
from medtransfer.errors import ConfigError, DataError, ImageDecodeError


@dataclass
class ImageSet:
    """Decoded images and labels; ``ids`` are paths relative to the data root or ``split:index``."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    ids: list[str]
    groups: list[str] | None = None
    origin: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.ndim != 4 or self.images.shape[0] != n or len(self.ids) != n:
            raise DataError(
                f"inconsistent ImageSet: images {self.images.shape}, {n} labels, "
                f"{len(self.ids)} ids"
            )
        for name in ("groups", "origin"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise DataError(f"inconsistent ImageSet: {len(values)} {name} for {n} images")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.classes = tuple(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, idx: np.ndarray) -> ImageSet:
        """The images at ``idx`` (int indices or a boolean mask); ``skipped`` is kept."""
        index = np.asarray(idx)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64)
        pick = index.tolist()
        return ImageSet(
            images=self.images[index],
            labels=self.labels[index],
            classes=self.classes,
            ids=[self.ids[i] for i in pick],
            groups=None if self.groups is None else [self.groups[i] for i in pick],
            origin=None if self.origin is None else [self.origin[i] for i in pick],
            skipped=list(self.skipped),
        )

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in class order (zero counts included)."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}


def load_dataset(
    cfg: DataConfig,
    pre: PreprocessConfig,
    cache: ImageCache | None = None,
    *,
    workers: int = 2,
) -> ImageSet:
    """Read, decode and resize a whole data set; ``cache=None`` means no disk cache."""
    if workers < 1:
        raise ConfigError(f"'workers': got {workers}; expected at least 1")
    cache = cache if cache is not None else ImageCache.disabled()
    path = demo_path(cfg.demo_name) if cfg.demo_name is not None else cfg.path
    if not path.exists():
        raise DataError(missing_path_message(path))
    if cfg.source_kind is SourceKind.NPZ:
        return _load_npz(cfg, path, pre, cache)
    items, classes, groups, origin = _index(cfg)
    return _decode_items(items, classes, groups, pre, cache, workers, where=str(path), origin=origin)


@dataclass
class FileIndex:
    """The image files of a folder or CSV source, in load order, without decoding them."""

    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]
    ids: list[str]
    groups: list[str] | None = None


def list_files(cfg: DataConfig) -> FileIndex:
    """The files :func:`load_dataset` would decode for ``cfg`` (same order, ids and groups)."""
    if not cfg.path.exists():
        raise DataError(missing_path_message(cfg.path))
    if cfg.source_kind is SourceKind.NPZ:
        raise DataError(f"{cfg.path} is an .npz archive: it holds arrays, not image files")
    items, classes, groups, _ = _index(cfg)
    return FileIndex(
        paths=[item[1] for item in items],
        labels=np.array([item[0] for item in items], dtype=np.int64),
        classes=tuple(classes),
        ids=[item[2] for item in items],
        groups=groups,
    )




def _index(cfg: DataConfig) -> tuple[list[Item], list[str], list[str] | None, list[str] | None]:
    origin = None
    if cfg.source_kind is SourceKind.CSV:
        items, classes, groups, origin = index_csv(cfg)
        keys = [item[2] for item in items]
    else:
        items, classes = index_folder(cfg)
        groups = None
        keys = [item[2].split("/", 1)[1] for item in items]  # path inside the class folder
    if cfg.group_pattern is not None:
        groups = pattern_groups(cfg.group_pattern, keys, [item[2] for item in items], str(cfg.path))
    return items, classes, groups, origin


def _decode_items(
    items: list[Item],
    classes: list[str],
    groups: list[str] | None,
    pre: PreprocessConfig,
    cache: ImageCache,
    workers: int,
    where: str,
    origin: list[str] | None = None,
) -> ImageSet:
    check_set_bytes(len(items), pre.channels, pre.hw, where)

    def decode(item: Item) -> np.ndarray | ImageDecodeError:
        try:
            return cache.get_or_decode(item[1], pre)
        except ImageDecodeError as exc:
            if pre.on_error is OnError.RAISE:
                raise
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(decode, item) for item in items]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    keep: list[int] = []
    skipped: list[tuple[str, str]] = []
    first_failure: dict[int, str] = {}
    for i, result in enumerate(results):
        if isinstance(result, ImageDecodeError):
            warnings.warn(f"skipping unreadable image {result.path}: {result.reason}", stacklevel=3)
            skipped.append((items[i][2], result.reason))
            first_failure.setdefault(items[i][0], f"{items[i][2]}: {result.reason}")
        else:
            keep.append(i)
    labels = np.array([items[i][0] for i in keep], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    for c, name in enumerate(classes):
        if counts[c] == 0:
            raise DataError(
                f"every image of class '{name}' in {where} failed to decode, so on_error=skip "
                f"left the class empty; first failure: {first_failure.get(c, '?')}"
            )
    arrays = [r for r in results if not isinstance(r, ImageDecodeError)]
    return ImageSet(
        images=np.stack(widen(arrays)),
        labels=labels,
        classes=tuple(classes),
        ids=[items[i][2] for i in keep],
        groups=None if groups is None else [groups[i] for i in keep],
        origin=None if origin is None else [origin[i] for i in keep],
        skipped=skipped,
    )


def _load_npz(cfg: DataConfig, path: Path, pre: PreprocessConfig, cache: ImageCache) -> ImageSet:
    parts = read_npz(path, cfg.npz_splits, pre, cache)
    labels = np.concatenate([p.labels for p in parts.splits])
    classes = cfg.classes or parts.classes
    if classes is None:
        classes = [str(i) for i in range(int(labels.max(initial=0)) + 1)]
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if bad.size:
        raise DataError(
            f"{path}: label values {sorted(set(bad.tolist()))[:10]} are outside "
            f"0..{len(classes) - 1} for the {len(classes)} classes {list(classes)}"
        )
    check_two_classes(classes, str(path))
    counts = np.bincount(labels, minlength=len(classes))
    empty = [f"'{c}' (label {i})" for i, c in enumerate(classes) if counts[i] == 0]
    if empty:
        raise DataError(f"{path}: no images of class(es) {', '.join(empty)}")
    return ImageSet(
        images=np.concatenate(widen([p.images for p in parts.splits])),
        labels=labels,
        classes=tuple(classes),
        ids=[f"{p.name}:{i}" for p in parts.splits for i in range(len(p.labels))],
        origin=[p.name for p in parts.splits for _ in range(len(p.labels))],
    )


def widen(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Mixed 8/16-bit sources: widen the 8-bit ones so 255 maps to 65535."""
    if any(a.dtype == np.uint16 for a in arrays):
        return [a if a.dtype == np.uint16 else a.astype(np.uint16) * 257 for a in arrays]
    return list(arrays)


