"""A data set's configuration, checked on creation: where it lives and how to read its labels
(:class:`DataConfig`) and how to split it (:class:`SplitConfig`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from medtransfer.data.demo import DEMO_PREFIX
from medtransfer.errors import ConfigError

__all__ = ["NPZ_SPLITS", "DataConfig", "SourceKind", "SplitConfig", "compile_group_pattern"]


def compile_group_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"'group_pattern': got {pattern!r}, which is not a valid regular expression ({exc}); "
            r"expected e.g. '^(P\d+)_' to take 'P0012' from 'P0012_view2.png'"
        ) from None


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

    Every image must be a regular file inside the data root (the folder, or the CSV's folder);
    ``follow_symlinks`` allows links and CSV paths leading out of it.

    Patient (group) ids come from the CSV column ``group_column`` or from ``group_pattern``, a
    regular expression searched (``re.search``) in each image's path relative to its class folder
    (folder sources) or relative to the CSV's folder (CSV sources), posix-style; the group is the
    first capture group, or the whole match when the pattern has none. Every image must match.
    """

    path: Path  # a class-per-folder tree, a .csv, a MedMNIST .npz, or demo:<name>
    kind: SourceKind | None = None  # the source's format; null: inferred from the path
    classes: list[str] | None = None  # class names in label order; null: sorted folder/label names
    path_column: str = "path"  # CSV: the column with image paths (relative to the CSV's folder)
    label_column: str = "label"  # CSV: the column with class labels
    group_column: str | None = None  # CSV: patient (group) ids, kept on one side of every split
    split_column: str | None = None  # CSV: a fixed train/val/test part per row (split.use_official)
    npz_splits: list[str] = field(default_factory=lambda: list(NPZ_SPLITS))  # .npz: parts read
    name: str | None = None  # a display name for tables and the report (default: from the path)
    group_pattern: str | None = None  # a regex finding the patient (group) id in each path
    # allow links (and CSV paths) leading outside the data root; devices and FIFOs stay refused
    follow_symlinks: bool = False

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
        columns = [self.path_column, self.label_column, self.group_column, self.split_column]
        named = [c for c in columns if c is not None]
        if len(set(named)) != len(named) or not all(named):
            raise ConfigError(
                f"'path_column', 'label_column', 'group_column', 'split_column': got {columns!r}; "
                "expected distinct, non-empty column names"
            )
        if self.split_column is not None and self.source_kind is not SourceKind.CSV:
            raise ConfigError(f"'split_column': got {self.split_column!r} for {self.path}, which is not "
                              "a CSV source; a fixed split comes from a CSV column (or a MedMNIST .npz)")
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


@dataclass(frozen=True)
class SplitConfig:
    """How to split: k balanced test sets or a test fraction, a per-class cap, a val fraction."""

    test_sets: int = 0  # how many disjoint, class-balanced test sets to carve (0: none)
    test_per_class: int | None = None  # images per class in each of the test_sets
    test_fraction: float = 0.0  # a stratified fraction held out as the one test set
    # Training-pool images per class: a number caps every class; a mapping of class name →
    # count draws exactly that many of each named class (too few is an error), e.g.
    # {Normal: 500, COVID: 50}, and leaves the other classes whole (null: all)
    train_per_class: int | dict[str, int] | None = None
    # Imbalance of the whole data set, drawn before any other part (e.g. a 1:10 set): class
    # name → its image count as a fraction of the largest class's, e.g. {COVID: 0.1}; the other
    # classes keep all their images (null: the data set as it is)
    imbalance: dict[str, float] | None = None
    val_fraction: float = 0.1  # the part of the training pool held out for validation
    use_official: bool = False  # use the data set's own train/val/test parts (.npz, split_column)
    folds: int = 0  # k-fold cross-validation (study target only): each fold is held out once
    # A separate test set (folder, CSV or .npz, the task's classes by name); the task's own
    # images then go to train and val only.
    test_from: Path | None = None

    def __post_init__(self) -> None:
        if self.test_from is not None:
            object.__setattr__(self, "test_from", Path(self.test_from))
            if self.folds or self.test_sets or self.test_fraction or self.use_official:
                raise ConfigError(
                    f"'test_from': got {str(self.test_from)!r} together with folds, test_sets, "
                    "test_fraction or use_official; the test images come from test_from alone"
                )
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"'folds': got {self.folds}; expected 0 (no cross-validation) or >= 2")
        if self.folds and (self.test_sets or self.test_fraction or self.use_official
                           or self.train_per_class is not None or self.imbalance is not None):
            raise ConfigError(
                f"'folds': got {self.folds}; cross-validation holds out each fold in turn, so it "
                "cannot be combined with test_sets, test_fraction, use_official, train_per_class "
                "or imbalance"
            )
        if self.test_sets < 0:
            raise ConfigError(f"'test_sets': got {self.test_sets}; expected 0 or more")
        if self.test_sets > 0 and (self.test_per_class is None or self.test_per_class < 1):
            raise ConfigError(
                f"'test_per_class': got {self.test_per_class!r}; test_sets={self.test_sets} "
                "needs a positive number of images per class in each test set"
            )
        if self.test_sets == 0 and self.test_per_class is not None:
            raise ConfigError(
                f"'test_per_class': got {self.test_per_class}, but test_sets is 0; "
                "set test_sets to 1 or more, or drop test_per_class"
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"'test_fraction': got {self.test_fraction}; expected 0 <= x < 1")
        if self.test_sets > 0 and self.test_fraction > 0:
            raise ConfigError(
                f"'test_fraction': got {self.test_fraction} together with test_sets="
                f"{self.test_sets}; use one or the other"
            )
        caps = self.train_per_class
        if isinstance(caps, dict):
            bad = {k: v for k, v in caps.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
            if bad or not caps:
                raise ConfigError(
                    f"'train_per_class': got {caps!r}; a mapping gives each named class a positive "
                    "number of training-pool images, e.g. {Normal: 500, COVID: 50}"
                )
        elif caps is not None and caps < 1:
            raise ConfigError(
                f"'train_per_class': got {caps}; expected a positive integer, a mapping of class "
                "name → count, or null for no cap"
            )
        if self.imbalance is not None:
            bad_ratio = {k: v for k, v in self.imbalance.items() if not 0.0 < v <= 1.0}
            if bad_ratio or not self.imbalance:
                raise ConfigError(
                    f"'imbalance': got {self.imbalance!r}; expected class name → a fraction in "
                    "(0, 1] of the largest class's image count, e.g. {COVID: 0.1}"
                )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"'val_fraction': got {self.val_fraction}; expected 0 <= x < 1")
        if self.use_official and (self.test_sets > 0 or self.test_fraction > 0):
            raise ConfigError(
                "'use_official': true takes the official test split; it cannot be combined "
                f"with test_sets={self.test_sets} or test_fraction={self.test_fraction}"
            )
