"""A study's data sets, loaded and split: the sources it pretrains on and the targets it
transfers to, each a :class:`LoadedTask`, with what the run folder records of them (the split
of every image, the data summary, the audit)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
    return split_task(name, role, task, load_dataset(task.data, cfg.preprocess, cache), cfg.seed)


def split_task(name: str, role: str, task: TaskConfig, images: ImageSet, seed: int) -> LoadedTask:
    """Loaded images split as ``task.split`` says, drawn from ``seed``."""
    classes = list(images.classes)
    try:
        if task.split.folds:
            folds = make_folds(images.labels, task.split.folds, seed, groups=images.groups,
                               val_fraction=task.split.val_fraction, classes=classes)
            return LoadedTask(name, role, task, images, folds[0], fingerprint(images, folds), folds)
        split = make_split(images.labels, task.split, seed, origin=images.origin, classes=classes,
                           groups=images.groups)
    except DataError as exc:
        raise DataError(f"{role} data {task.data.path}: {exc}") from None
    return LoadedTask(name, role, task, images, split, fingerprint(images, [split]))


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
    }


def write_split(out: Path, task: LoadedTask) -> None:
    """``splits/<name>.csv``: ``part,id,label`` for every image (cross-validation: the fold
    that holds it out)."""
    parts = [("train", task.split.train), ("val", task.split.val), *sorted(task.split.tests.items())]
    if task.folds:  # each image is held out in exactly one fold
        parts = [(f"fold_{i + 1}", f.tests["test"]) for i, f in enumerate(task.folds)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["part", "id", "label"])
    for part, idx in parts:
        writer.writerows((part, task.images.ids[i], task.images.classes[task.images.labels[i]]) for i in idx)
    write_text_atomic(out / "splits" / f"{task.name}.csv", buf.getvalue())


def audit_tasks(out: Path, seed: int, items: list[tuple[LoadedTask, DataConfig | None]],
                echo: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Audit each task (against a second data set, if given) with its split; an audit is reused
    while the task's fingerprint is unchanged. Returns critical/warning counts per task."""
    from medtransfer.audit import AuditConfig, run_audit, split_parts

    counts: dict[str, dict[str, int]] = {}
    for task, against in items:
        where = out / "audit" / task.name
        stamp = where / "fingerprint.txt"
        if stamp.is_file() and stamp.read_text() == task.fingerprint:
            found = yaml.safe_load((where / "audit.json").read_text())
            severities = [f["severity"] for f in found.get("findings", [])]
        else:
            res = run_audit(task.config.data, against=against, cfg=AuditConfig(seed=seed),
                            split=split_parts(task.images.ids, task.split), out=where)
            write_text_atomic(stamp, task.fingerprint)
            severities = [str(f.severity) for f in res.findings]
        counts[task.name] = {s: severities.count(s) for s in ("critical", "warning")}
        echo(f"audit {task.name}: {counts[task.name]['critical']} critical, "
             f"{counts[task.name]['warning']} warnings — {where / 'audit.md'}")
    return counts
