"""A cell's ``predictions.csv``, read and checked: per image its test set, id, label and class
probabilities (:class:`Predictions`), and the threshold chosen on its validation rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtransfer.errors import DataError
from medtransfer.evaluate import choose_threshold
from medtransfer.fileio import cell_in
from medtransfer.study.rundir.layout import PREDICTIONS
from medtransfer.study.rundir.unit import REDO, UnitInfo

__all__ = ["POOLED", "Predictions", "read_predictions", "unit_predictions", "youden_threshold"]

POOLED = "pooled"  # name of all test sets taken together


@dataclass(frozen=True)
class Predictions:
    """Per-image predictions of one arm: ``test_set`` (val, test_1..., external sets), ids,
    labels and (N, K) class probabilities in the order of ``classes``."""

    test_set: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    proba: np.ndarray
    classes: list[str]
    external: tuple[str, ...] = ()  # names of the external test sets among ``test_set``

    def part(self, name: str) -> Predictions:
        """Rows of one test set, or for :data:`POOLED` of every internal test set (external sets
        come from elsewhere: they are never pooled with the target's own)."""
        if name == POOLED:
            mask = (self.test_set != "val") & ~np.isin(self.test_set, list(self.external))
        else:
            mask = self.test_set == name
        return self._rows(mask)

    def _rows(self, rows: np.ndarray) -> Predictions:
        return Predictions(self.test_set[rows], self.ids[rows], self.labels[rows], self.proba[rows],
                           self.classes, self.external)

    def tests(self) -> list[str]:
        """Internal test set names (not ``val``) in natural order (test_2 before test_10)."""
        names = {str(t) for t in self.test_set if t != "val" and t not in self.external}
        return sorted(names, key=lambda s: (len(s), s))

    def externals(self) -> list[str]:
        """External test set names present, in the config's order."""
        present = {str(t) for t in self.test_set}
        return [e for e in self.external if e in present]

    def aligned(self, other: Predictions, where: str) -> tuple[Predictions, Predictions]:
        """Both prediction sets restricted to, and ordered by, the same (test_set, id) pairs."""
        mine = {(t, i): k for k, (t, i) in enumerate(zip(self.test_set, self.ids, strict=True))}
        theirs = {(t, i): k for k, (t, i) in enumerate(zip(other.test_set, other.ids, strict=True))}
        if set(mine) != set(theirs):
            raise DataError(f"{where}: the two arms were not evaluated on the same images")
        keys = sorted(mine)
        a = np.array([mine[k] for k in keys], dtype=np.int64)
        b = np.array([theirs[k] for k in keys], dtype=np.int64)
        if not np.array_equal(self.labels[a], other.labels[b]):
            raise DataError(f"{where}: the same image ids carry different labels")
        return self._rows(a), other._rows(b)


def youden_threshold(preds: Predictions) -> float | None:
    """Threshold chosen on the unit's validation predictions; None if not binary or no usable
    validation set (both classes needed)."""
    val = preds.part("val")
    if preds.proba.shape[1] != 2 or len(np.unique(val.labels)) < 2:
        return None
    return choose_threshold(val.labels, val.proba[:, 1], "youden")


def read_predictions(path: Path) -> Predictions:
    """``test_set,id,label,p_<class>...`` rows of a ``predictions.csv`` (ids and test set names as
    they were before formula-safe writing)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except OSError as exc:
        raise DataError(f"{path}: cannot read predictions ({exc.strerror or exc})") from exc
    if not header or header[:3] != ["test_set", "id", "label"] or len(header) < 5:
        raise DataError(f"{path}: expected columns test_set,id,label,p_<class>..., got {header}")
    if not rows:
        raise DataError(f"{path}: no predictions")
    for line, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)} "
                            "(truncated or edited?)" + REDO)
    cols = list(zip(*rows, strict=True))
    try:
        proba = np.array(cols[3:], dtype=np.float64).T
        labels = np.array(cols[2], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric label or probability: {exc}") from exc
    classes = [h[2:] if h.startswith("p_") else h for h in header[3:]]
    return Predictions(np.array([cell_in(t) for t in cols[0]]), np.array([cell_in(i) for i in cols[1]]),
                       labels, proba, classes)


def unit_predictions(unit: UnitInfo) -> Predictions:
    """A cell's ``predictions.csv``, checked against its ``result.json``: the file's recorded size
    and SHA-256, and the number of rows of each test set; a mismatch is a clear error."""
    path = unit.file(PREDICTIONS)
    preds = read_predictions(path)
    counts = unit.cell.prediction_rows
    if counts:
        names, n = np.unique(preds.test_set, return_counts=True)
        got_counts = {str(k): int(c) for k, c in zip(names, n, strict=True)}
        if got_counts != {str(k): int(c) for k, c in counts.items()}:
            raise DataError(f"{path}: rows per test set {got_counts}, result.json recorded {counts}" + REDO)
    return preds
