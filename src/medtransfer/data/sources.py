"""Load a labelled image set from a class-per-folder tree, a CSV index or a MedMNIST-style .npz.

Every source ends up as an :class:`ImageSet`: one (N, C, H, W) array at the preprocessing size,
integer labels, class names and a stable id per image, so splitting and training never care where
the pixels came from.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from medtransfer.config import closest
from medtransfer.data.cache import ImageCache
from medtransfer.data.demo import DEMO_PREFIX, demo_path
from medtransfer.data.images import IMAGE_EXTENSIONS, OnError, PreprocessConfig
from medtransfer.data.npz import read_npz
from medtransfer.errors import ConfigError, DataError, ImageDecodeError

NPZ_SPLITS = ("train", "val", "test")
_EXTS = ", ".join(sorted(IMAGE_EXTENSIONS))


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
            _compile_group_pattern(self.group_pattern)
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
        raise DataError(_missing_path_message(path))
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
        raise DataError(_missing_path_message(cfg.path))
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


# An item to decode: (label, absolute path, id).
_Item = tuple[int, Path, str]


def _index(cfg: DataConfig) -> tuple[list[_Item], list[str], list[str] | None]:
    if cfg.source_kind is SourceKind.CSV:
        items, classes, groups = _index_csv(cfg)
        keys = [item[2] for item in items]
    else:
        items, classes = _index_folder(cfg)
        groups = None
        keys = [item[2].split("/", 1)[1] for item in items]  # path inside the class folder
    if cfg.group_pattern is not None:
        groups = _pattern_groups(cfg.group_pattern, keys, [item[2] for item in items], str(cfg.path))
    return items, classes, groups


def _compile_group_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"'group_pattern': got {pattern!r}, which is not a valid regular expression ({exc}); "
            r"expected e.g. '^(P\d+)_' to take 'P0012' from 'P0012_view2.png'"
        ) from None


def _pattern_groups(pattern: str, keys: list[str], ids: list[str], where: str) -> list[str]:
    """Group id per image: the first capture group of ``pattern`` in its key, else the match."""
    regex = _compile_group_pattern(pattern)
    groups: list[str] = []
    failed: list[str] = []
    for key, image_id in zip(keys, ids, strict=True):
        match = regex.search(key)
        value = None if match is None else match.group(1) if regex.groups else match.group(0)
        if not value:
            failed.append(image_id)
        groups.append(value or "")
    if failed:
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise DataError(
            f"{where}: data.group_pattern {pattern!r} finds no group id in file "
            f"{', '.join(repr(f) for f in failed[:3])}{more}; every image needs one. The pattern is "
            "searched in the path inside the class folder (folder sources) or the CSV path value"
        )
    return groups


def _index_folder(cfg: DataConfig) -> tuple[list[_Item], list[str]]:
    root = cfg.path
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; a 'folder' source is <path>/<class>/<images>")
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if cfg.classes is not None:
        _check_classes_present(cfg.classes, present, f"class folders of {root}")
    classes = list(cfg.classes) if cfg.classes is not None else present
    if not classes:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        extra = f"; found {len(loose)} image files directly in it" if loose else ""
        raise DataError(
            f"found no class subfolders in {root}{extra}; expected one subfolder per class, "
            f"e.g. {root / 'normal' / 'img001.png'}"
        )
    _check_two_classes(classes, str(root))
    items: list[_Item] = []
    for label, name in enumerate(classes):
        images, others = _scan_class(root / name)
        if not images:
            seen = f"; it holds {len(others)} other files, e.g. '{others[0]}'" if others else ""
            raise DataError(
                f"class folder '{name}' ({root / name}) is empty: no images with the allowed "
                f"extensions ({_EXTS}) were found{seen}"
            )
        items.extend((label, root / name / rel, f"{name}/{rel}") for rel in images)
    return items, classes


def _scan_class(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted image paths below ``folder`` (relative, posix), and the names of other files."""
    images: list[str] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(folder)
        for fname in filenames:
            if fname.startswith("."):
                continue
            rel = (rel_dir / fname).as_posix()
            (images if Path(fname).suffix.lower() in IMAGE_EXTENSIONS else others).append(rel)
    return sorted(images), sorted(others)


def _index_csv(cfg: DataConfig) -> tuple[list[_Item], list[str], list[str] | None]:
    csv_path = cfg.path
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            wanted = [cfg.path_column, cfg.label_column]
            wanted += [cfg.group_column] if cfg.group_column else []
            missing = [c for c in wanted if c not in header]
            if missing:
                raise DataError(
                    f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                    f"columns found: {', '.join(repr(c) for c in header) or 'none'}. "
                    "Set data.path_column / data.label_column / data.group_column to match."
                )
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {csv_path}: {exc}") from exc
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows")
    records: list[tuple[int, str, str, str]] = []
    for line, row in rows:
        values = []
        for column in wanted:
            value = (row.get(column) or "").strip()
            if not value:
                raise DataError(f"{csv_path}: line {line}: empty value in column '{column}'")
            values.append(value)
        records.append((line, values[0], values[1], values[2] if len(values) > 2 else ""))
    found = sorted({r[2] for r in records}, key=_natural_key)
    if cfg.classes is not None:
        allowed = set(cfg.classes)
        for line, _, label, _ in records:
            if label not in allowed:
                hint = _suggest(label, cfg.classes)
                extra = f"; did you mean '{hint}'?" if hint else ""
                raise DataError(
                    f"{csv_path}: line {line}: label {label!r} is not one of data.classes "
                    f"({', '.join(cfg.classes)}){extra}"
                )
    classes = list(cfg.classes) if cfg.classes is not None else found
    _check_two_classes(classes, str(csv_path))
    empty = [c for c in classes if c not in found]
    if empty:
        raise DataError(f"{csv_path}: no rows for class(es) {', '.join(map(repr, empty))}")
    index = {name: i for i, name in enumerate(classes)}
    items: list[_Item] = []
    absent: list[str] = []
    for line, rel, label, _ in records:
        full = Path(rel) if Path(rel).is_absolute() else base / rel
        if not full.is_file():
            absent.append(f"line {line}: {full}")
        items.append((index[label], full, _rel_id(full, base)))
    if absent:
        more = f" (and {len(absent) - 5} more)" if len(absent) > 5 else ""
        raise DataError(
            f"{csv_path}: {len(absent)} row(s) point at missing files: "
            f"{'; '.join(absent[:5])}{more}. Relative paths are resolved against {base}"
        )
    ids = [item[2] for item in items]
    if len(set(ids)) != len(ids):
        warnings.warn(
            f"{csv_path}: {len(ids) - len(set(ids))} rows repeat an earlier path; duplicates "
            "can land in both training and test parts",
            stacklevel=4,
        )
    groups = [r[3] for r in records] if cfg.group_column else None
    return items, classes, groups


def _decode_items(
    items: list[_Item],
    classes: list[str],
    groups: list[str] | None,
    pre: PreprocessConfig,
    cache: ImageCache,
    workers: int,
    where: str,
) -> ImageSet:
    def decode(item: _Item) -> np.ndarray | ImageDecodeError:
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
    _check_two_classes(classes, str(path))
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


def _check_classes_present(wanted: Sequence[str], present: Sequence[str], where: str) -> None:
    missing = [c for c in wanted if c not in present]
    if not missing:
        return
    hints = [f"'{m}' → did you mean '{h}'?" for m in missing if (h := _suggest(m, present))]
    raise DataError(
        f"data.classes lists {', '.join(map(repr, missing))}, not found among the {where}; "
        f"present: {', '.join(map(repr, present)) or 'none'}"
        + (f". {' '.join(hints)}" if hints else "")
    )


def _suggest(name: str, choices: Sequence[str]) -> str | None:
    """Closest choice, matching case-insensitively first ('covid' → 'COVID')."""
    same = [c for c in choices if c.lower() == name.lower()]
    return same[0] if same else closest(name, choices)


def _check_two_classes(classes: Sequence[str], where: str) -> None:
    if len(classes) < 2:
        raise DataError(
            f"found only class '{classes[0]}' in {where}; a classifier needs at least 2"
        )


def _missing_path_message(path: Path) -> str:
    msg = f"data path {path} does not exist"
    parent = path.parent
    if parent.is_dir():
        hint = _suggest(path.name, [p.name for p in parent.iterdir()])
        if hint:
            msg += f"; did you mean {parent / hint}?"
    return msg


def _rel_id(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _natural_key(text: str) -> list[int | str]:
    """Sort "2" before "10" when labels are numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
