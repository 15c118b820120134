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
from enum import StrEnum
from pathlib import Path

import numpy as np

from medtransfer.data.cache import ImageCache
from medtransfer.data.demo import DEMO_PREFIX, demo_path
from medtransfer.data.images import OnError, PreprocessConfig
from medtransfer.data.index import (
    Item,
    check_two_classes,
    compile_group_pattern,
    index_csv,
    index_folder,
    missing_path_message,
    pattern_groups,
)
from medtransfer.data.npz import read_npz
from medtransfer.errors import ConfigError, DataError, ImageDecodeError

NPZ_SPLITS = ("train", "val", "test")


class SourceKind(StrEnum):
    """Layout of the data at ``DataConfig.path``."""

    FOLDER = "folder"
    CSV = "csv"
    NPZ = "npz"


@dataclass(frozen=True)
class DataConfig:
    """Where a data set lives and how to read its labels.

    ``path`` is a folder, a ``.csv``, a ``.npz`` or ``demo:<name>`` for a bundled demo set.
    ``kind`` stays None unless given; :attr:`source_kind` is the inferred one.

    Patient (group) ids come from the CSV column ``group_column`` or from ``group_pattern``, a
    regular expression searched (``re.search``) in each image's path relative to its class folder
    (folder sources) or relative to the CSV's folder (CSV sources), posix-style; the group is the
    first capture group, or the whole match when the pattern has none. Every image must match.
    """

    path: Path
    kind: SourceKind | None = None
    classes: list[str] | None = None
    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = None
    npz_splits: list[str] = field(default_factory=lambda: list(NPZ_SPLITS))
    name: str | None = None
    group_pattern: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.kind is not None and not isinstance(self.kind, SourceKind):
            try:
                object.__setattr__(self, "kind", SourceKind(self.kind))
            except ValueError:
                allowed = ", ".join(k.value for k in SourceKind)
                raise ConfigError(f"'kind': got {self.kind!r}; allowed: {allowed}") from None
        if self.classes is not None:
            if len(self.classes) < 2:
                raise ConfigError(
                    f"'classes': got {self.classes!r}; a classifier needs at least 2 class names"
                )
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            if dupes or not all(isinstance(c, str) and c for c in self.classes):
                raise ConfigError(
                    f"'classes': got {self.classes!r}; expected distinct, non-empty names"
                )
        bad = [s for s in self.npz_splits if s not in NPZ_SPLITS]
        if bad or not self.npz_splits or len(set(self.npz_splits)) != len(self.npz_splits):
            raise ConfigError(
                f"'npz_splits': got {self.npz_splits!r}; expected distinct values from "
                f"{', '.join(NPZ_SPLITS)}"
            )
        columns = [self.path_column, self.label_column, self.group_column]
        named = [c for c in columns if c is not None]
        if len(set(named)) != len(named) or not all(named):
            raise ConfigError(
                f"'path_column', 'label_column', 'group_column': got {columns!r}; "
                "expected distinct, non-empty column names"
            )
        if self.group_pattern is not None:
            compile_group_pattern(self.group_pattern)
            if self.group_column is not None:
                raise ConfigError(
                    f"'group_pattern': got {self.group_pattern!r} together with group_column="
                    f"{self.group_column!r}; take group ids from one of them"
                )
            if self.source_kind is SourceKind.NPZ:
                raise ConfigError(
                    f"'group_pattern': got {self.group_pattern!r} for the .npz source {self.path}; "
                    "npz images have no file names to match (use a folder or CSV source)"
                )

    @property
    def demo_name(self) -> str | None:
        """The bundled demo set named by a ``demo:<name>`` path, else None."""
        text = str(self.path)
        return text[len(DEMO_PREFIX) :] if text.startswith(DEMO_PREFIX) else None

    @property
    def source_kind(self) -> SourceKind:
        """``kind`` if set, else inferred: .csv → csv, .npz or ``demo:`` → npz, else folder."""
        if self.kind is not None:
            return self.kind
        if self.demo_name is not None:
            return SourceKind.NPZ
        suffix = self.path.suffix.lower()
        return {".csv": SourceKind.CSV, ".npz": SourceKind.NPZ}.get(suffix, SourceKind.FOLDER)

    @property
    def display_name(self) -> str:
        """``name`` if given, else the demo name or the file or folder name."""
        return self.name or self.demo_name or self.path.stem or str(self.path)


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
    items, classes, groups = _index(cfg)
    return _decode_items(items, classes, groups, pre, cache, workers, where=str(path))


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
    items, classes, groups = _index(cfg)
    return FileIndex(
        paths=[item[1] for item in items],
        labels=np.array([item[0] for item in items], dtype=np.int64),
        classes=tuple(classes),
        ids=[item[2] for item in items],
        groups=groups,
    )




def _index(cfg: DataConfig) -> tuple[list[Item], list[str], list[str] | None]:
    if cfg.source_kind is SourceKind.CSV:
        items, classes, groups = index_csv(cfg)
        keys = [item[2] for item in items]
    else:
        items, classes = index_folder(cfg)
        groups = None
        keys = [item[2].split("/", 1)[1] for item in items]  # path inside the class folder
    if cfg.group_pattern is not None:
        groups = pattern_groups(cfg.group_pattern, keys, [item[2] for item in items], str(cfg.path))
    return items, classes, groups


def _decode_items(
    items: list[Item],
    classes: list[str],
    groups: list[str] | None,
    pre: PreprocessConfig,
    cache: ImageCache,
    workers: int,
    where: str,
) -> ImageSet:
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
        origin=None,
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


