"""A study's data sets, loaded and split: the sources it pretrains on and the targets it
transfers to, each a :class:`LoadedTask`, with what the run folder records of them (the split
of every image, the data summary, the audit)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtransfer.csvfile import write_csv
from medtransfer.data import DataConfig, ImageCache, ImageSet, Split, load_dataset, make_folds, make_split
from medtransfer.errors import DataError
from medtransfer.fileio import write_text_atomic
from medtransfer.study.config import StudyConfig, TaskConfig

__all__ = ["LoadedTask", "audit_tasks", "data_summary", "fingerprint", "load_task", "split_task",
           "write_split"]


@dataclass
class LoadedTask:
    """A data set and its split: ``split`` (train/val/tests), or for cross-validation ``folds``
    (``split`` is then ``folds[0]``)."""

    name: str
    role: str  # source | target
    config: TaskConfig
    images: ImageSet
    split: Split
    fingerprint: str
    folds: list[Split] | None = None
    # External test sets: their images follow the task's own in ``images``; ``own`` is the
    # task's own images alone (what a new split is drawn from).
    externals: dict[str, ImageSet] = field(default_factory=dict)
    own: ImageSet | None = None
    fixed_test: ImageSet | None = None  # split.test_from's images (the test set "test")

    def part(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the rows ``idx``."""
        return self.images.images[idx], self.images.labels[idx]

    def fold(self, k: int | None) -> Split:
        """Cross-validation fold ``k`` (0-based), or the split when ``k`` is None."""
        if k is None:
            return self.split
        if not self.folds or k >= len(self.folds):
            raise DataError(f"{self.name}: has no cross-validation fold {k + 1}")
        return self.folds[k]

    @property
    def classes(self) -> list[str]:
        return list(self.images.classes)


def fingerprint(images: ImageSet, splits: list[Split]) -> str:
    """Hash of the pixels, labels and split(s): a unit is redone if any of them changes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images.images).tobytes())
    h.update(images.labels.tobytes())
    for split in splits:
        for name, idx in [("train", split.train), ("val", split.val), *sorted(split.tests.items())]:
            h.update(name.encode())
            h.update(np.asarray(idx, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def load_task(name: str, role: str, task: TaskConfig, cfg: StudyConfig, cache: ImageCache) -> LoadedTask:
    images = load_dataset(task.data, cfg.preprocess, cache)
    externals = {k: _matched(load_dataset(e.data, cfg.preprocess, cache), images, f"{name}.external.{k}",
                             e.data.path) for k, e in task.external.items()}
    fixed = None
    if task.split.test_from is not None:
        data = DataConfig(path=task.split.test_from, classes=task.data.classes,
                          follow_symlinks=task.data.follow_symlinks)
        fixed = _matched(load_dataset(data, cfg.preprocess, cache), images, f"{name}.split.test_from",
                         task.split.test_from)
    return split_task(name, role, task, images, cfg.seed, externals, fixed)


def _matched(ext: ImageSet, own: ImageSet, where: str, path: Path) -> ImageSet:
    """``ext`` with its labels renumbered to ``own``'s classes (matched by name)."""
    extra = [c for c in ext.classes if c not in own.classes]
    missing = [c for c in own.classes if c not in ext.classes]
    if extra or missing:
        raise DataError(f"{where} ({path}): its classes {list(ext.classes)} must be the target's "
                        f"{list(own.classes)}" + (f"; not in the target: {extra}" if extra else "")
                        + (f"; missing: {missing}" if missing else "")
                        + " (set data.classes, or rename the folders)")
    if ext.channels != own.channels:
        raise DataError(f"{where} ({path}): {ext.channels}-channel images, the target's have "
                        f"{own.channels}; set preprocess.channels")
    to_own = np.array([own.classes.index(c) for c in ext.classes], dtype=np.int64)
    return ImageSet(ext.images, to_own[ext.labels], own.classes, ext.ids, skipped=ext.skipped)


def _with_externals(own: ImageSet, externals: dict[str, ImageSet]) -> tuple[ImageSet, dict[str, np.ndarray]]:
    """``own`` followed by every external set's images (ids ``NAME:id``), and their indices."""
    if not externals:
        return own, {}
    sets, parts, n = [own], {}, len(own)
    for name, ext in externals.items():
        parts[name] = np.arange(n, n + len(ext))
        n += len(ext)
        sets.append(ImageSet(ext.images, ext.labels, own.classes, [f"{name}:{i}" for i in ext.ids],
                             skipped=[(f"{name}:{i}", r) for i, r in ext.skipped]))
    groups = None if own.groups is None else [*own.groups, *(i for s in sets[1:] for i in s.ids)]
    origin = None if own.origin is None else [*own.origin, *(["external"] * (n - len(own)))]
    images = ImageSet(np.concatenate([s.images for s in sets]), np.concatenate([s.labels for s in sets]),
                      own.classes, [i for s in sets for i in s.ids], groups=groups, origin=origin,
                      skipped=[x for s in sets for x in s.skipped])
    return images, parts


def split_task(name: str, role: str, task: TaskConfig, images: ImageSet, seed: int,
               externals: dict[str, ImageSet] | None = None,
               fixed_test: ImageSet | None = None) -> LoadedTask:
    """Loaded images split as ``task.split`` says, drawn from ``seed``; every external set is
    one more test set of every split, never trained on; ``fixed_test`` (``split.test_from``) is
    the test set ``test``."""
    classes = list(images.classes)
    externals = externals or {}
    extra = {**({"test": fixed_test} if fixed_test is not None else {}), **externals}
    combined, external = _with_externals(images, extra)
    try:
        if task.split.folds:
            folds = make_folds(images.labels, task.split.folds, seed, groups=images.groups,
                               val_fraction=task.split.val_fraction, classes=classes)
            return LoadedTask(name, role, task, images, folds[0], fingerprint(images, folds), folds)
        split = make_split(images.labels, task.split, seed, origin=images.origin, classes=classes,
                           groups=images.groups)
    except DataError as exc:
        raise DataError(f"{role} data {task.data.path}: {exc}") from None
    split = Split(split.train, split.val, {**split.tests, **external})
    return LoadedTask(name, role, task, combined, split, fingerprint(combined, [split]), None, externals,
                      images, fixed_test)


def _split_summary(task: LoadedTask) -> dict[str, Any]:
    """Images per class in each part; for cross-validation, in each fold's held-out part."""
    if not task.folds:
        return task.split.summary(task.images.labels, task.classes)
    return {f"fold_{i + 1}": f.summary(task.images.labels, task.classes)["test"]
            for i, f in enumerate(task.folds)}


def data_summary(task: LoadedTask) -> dict[str, Any]:
    """What ``data.yaml`` records of a task."""
    return {
        "role": task.role,
        "path": str(task.config.data.path),
        "classes": task.classes,
        "positive_class": task.classes[-1] if task.images.num_classes == 2 else None,
        "split": _split_summary(task),
        "skipped_images": [{"id": i, "reason": r} for i, r in task.images.skipped],
        "fingerprint": task.fingerprint,
        **({"external": {k: {"path": str(task.config.external[k].data.path), "images": len(e)}
                         for k, e in task.externals.items()}} if task.externals else {}),
    }


def write_split(out: Path, task: LoadedTask) -> None:
    """``splits/<name>.csv``: ``part,id,label`` for every image (cross-validation: the fold
    that holds it out)."""
    parts = [("train", task.split.train), ("val", task.split.val), *sorted(task.split.tests.items())]
    if task.folds:  # each image is held out in exactly one fold
        parts = [(f"fold_{i + 1}", f.tests["test"]) for i, f in enumerate(task.folds)]
    rows = ((part, str(task.images.ids[i]), str(task.images.classes[task.images.labels[i]]))
            for part, idx in parts for i in idx)
    write_csv(out / "splits" / f"{task.name}.csv", rows, ["part", "id", "label"])


def audit_tasks(out: Path, seed: int, items: list[tuple[LoadedTask, DataConfig | None]],
                echo: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Audit each task (against a second data set, if given) with its split, and each external
    test set against its task; an audit is reused while the task's fingerprint is unchanged.
    Returns critical/warning counts per audited data set (``task`` or ``task.external``)."""
    counts: dict[str, dict[str, int]] = {}
    for task, against in items:
        counts[task.name] = _audit_one(out / "audit" / task.name, task.fingerprint, seed, task.config.data,
                                       against, task.images.ids, task.split)
        for name in task.externals:
            key = f"{task.name}.{name}"
            counts[key] = _audit_one(out / "audit" / key, task.fingerprint, seed,
                                     task.config.external[name].data, task.config.data)
        for key in [task.name, *(f"{task.name}.{n}" for n in task.externals)]:
            echo(f"audit {key}: {counts[key]['critical']} critical, {counts[key]['warning']} warnings — "
                 f"{out / 'audit' / key / 'audit.md'}")
    return counts


def _audit_one(where: Path, stamp_text: str, seed: int, data: DataConfig, against: DataConfig | None,
               ids: list[str] | None = None, split: Split | None = None) -> dict[str, int]:
    from medtransfer.audit import AuditConfig, run_audit, split_parts

    stamp = where / "fingerprint.txt"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        found = yaml.safe_load((where / "audit.json").read_text())
        severities = [f["severity"] for f in found.get("findings", [])]
    else:
        parts = split_parts(ids, split) if ids is not None and split is not None else None
        res = run_audit(data, against=against, cfg=AuditConfig(seed=seed), split=parts, out=where)
        write_text_atomic(stamp, stamp_text)
        severities = [str(f.severity) for f in res.findings]
    return {s: severities.count(s) for s in ("critical", "warning")}
