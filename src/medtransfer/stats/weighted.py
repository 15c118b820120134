"""Metrics of many weighted resamples at once.

A bootstrap replicate is a vector of sample counts; a jackknife replicate is ones with a zero.
:class:`Scored` turns fixed predictions into arrays from which every metric of a whole batch of
weight vectors ``w`` (shape (B, N)) is a few matrix products, so thousands of replicates cost
about as much as one scikit-learn call. With all weights 1 the values equal
:func:`medtransfer.evaluate.full_metrics`, and with integer weights they equal scikit-learn's
``sample_weight`` results (both checked in the tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medtransfer.config import check_choice
from medtransfer.evaluate import _proba_matrix, confidence_bins

__all__ = ["BINARY_METRICS", "MULTICLASS_METRICS", "THRESHOLD_FREE", "Scored"]

BINARY_METRICS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "recall", "f1",
    "auc", "pr_auc", "brier", "ece",
)
MULTICLASS_METRICS: tuple[str, ...] = BINARY_METRICS
THRESHOLD_FREE: frozenset[str] = frozenset({"auc", "pr_auc", "brier", "ece"})


def _div(num: np.ndarray, den: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """num / den, ``empty`` where den == 0 (scikit-learn's zero_division=0 by default)."""
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


class _Ranks:
    """Sort order and tie groups of one score column, for weighted AUC / average precision."""

    def __init__(self, scores: np.ndarray, positive: np.ndarray) -> None:
        self.order = np.argsort(scores, kind="stable")
        s = scores[self.order]
        self.ends = np.append(np.flatnonzero(np.diff(s) != 0), len(s) - 1)
        self.pos = positive[self.order].astype(np.float64)

    def group_sums(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per tie group (ascending score): weighted positives and negatives, shape (B, U)."""
        ws = w[:, self.order]
        cum_pos = np.cumsum(ws * self.pos, axis=1)[:, self.ends]
        cum_all = np.cumsum(ws, axis=1)[:, self.ends]
        pos = np.diff(cum_pos, axis=1, prepend=0.0)
        neg = np.diff(cum_all - cum_pos, axis=1, prepend=0.0)
        return pos, neg

    def auc_ap(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted ROC AUC (ties count 1/2) and average precision; NaN where undefined."""
        pos, neg = self.group_sums(w)
        tot_pos, tot_neg = pos.sum(axis=1), neg.sum(axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
        auc = _div((pos * (below + 0.5 * neg)).sum(axis=1), tot_pos * tot_neg, np.nan)
        # Average precision: recall steps at each distinct threshold, times precision there.
        tp_at = tot_pos[:, None] - (np.cumsum(pos, axis=1) - pos)
        fp_at = tot_neg[:, None] - (np.cumsum(neg, axis=1) - neg)
        precision = _div(tp_at, tp_at + fp_at)
        ap = _div((pos * precision).sum(axis=1), tot_pos, np.nan)
        return auc, ap


class Scored:
    """Fixed predictions of one model on one labelled set, ready for batched weighted metrics.

    Binary (K == 2): positive class = column 1, decision ``p >= threshold``. Multiclass: argmax,
    macro averages (over classes present in labels or predictions, as scikit-learn), macro
    one-vs-rest AUC. ``ece`` is top-label with ``n_bins`` equal-width bins.
    """

    def __init__(self, y_true: object, proba: object, threshold: float = 0.5, n_bins: int = 10) -> None:
        y, p = _proba_matrix(y_true, proba)
        self.n, self.k = p.shape
        self.binary = self.k == 2
        self.threshold = float(threshold)
        pred = (p[:, 1] >= threshold).astype(np.int64) if self.binary else p.argmax(axis=1)
        eye = np.eye(self.k)
        self.true_1h = eye[y]
        self.pred_1h = eye[pred]
        self.hit_1h = self.true_1h * self.pred_1h
        self.correct = (pred == y).astype(np.float64)
        if self.binary:
            self.sq_err = (p[:, 1] - y) ** 2
        else:
            self.sq_err = ((p - self.true_1h) ** 2).sum(axis=1)
        conf = p.max(axis=1)
        top_correct = (p.argmax(axis=1) == y).astype(np.float64)
        self.ece_gap = np.eye(n_bins)[confidence_bins(conf, n_bins)] * (top_correct - conf)[:, None]
        columns = [1] if self.binary else range(self.k)
        self.ranks = [_Ranks(p[:, c], y == c) for c in columns]

    def names(self) -> tuple[str, ...]:
        return BINARY_METRICS if self.binary else MULTICLASS_METRICS

    def point(self, metrics: Sequence[str]) -> dict[str, float]:
        """The metrics with unit weights (the plain estimate)."""
        values = self.batch(metrics, np.ones((1, self.n)))
        return {m: float(v[0]) for m, v in values.items()}

    def batch(self, metrics: Iterable[str], w: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric for every row of the weight matrix ``w`` (B, N) → arrays of shape (B,)."""
        metrics = list(metrics)
        for m in metrics:
            check_choice("metric", m, self.names())
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.n:
            raise ValueError(f"weights: expected shape (B, {self.n}), got {w.shape}")
        total = w.sum(axis=1)
        tp, support, predicted = w @ self.hit_1h, w @ self.true_1h, w @ self.pred_1h
        recall = _div(tp, support)
        precision = _div(tp, predicted)
        f1 = _div(2 * tp, support + predicted)
        negatives = total[:, None] - support
        true_neg = negatives - (predicted - tp)
        specificity = _div(true_neg, negatives)
        present = (support + predicted) > 0
        out: dict[str, np.ndarray] = {}
        for m in metrics:
            if m == "accuracy":
                out[m] = _div(w @ self.correct, total)
            elif m == "balanced_accuracy":
                has = support > 0
                out[m] = _div((recall * has).sum(axis=1), has.sum(axis=1), np.nan)
            elif m in ("sensitivity", "recall", "precision", "f1", "specificity"):
                table = {"sensitivity": recall, "recall": recall, "precision": precision, "f1": f1,
                         "specificity": specificity}[m]
                if self.binary:
                    out[m] = table[:, 1]
                elif m == "specificity":
                    out[m] = table.mean(axis=1)
                else:
                    out[m] = _div((table * present).sum(axis=1), present.sum(axis=1), np.nan)
            elif m == "brier":
                out[m] = _div(w @ self.sq_err, total, np.nan)
            elif m == "ece":
                out[m] = _div(np.abs(w @ self.ece_gap).sum(axis=1), total, np.nan)
            elif m in ("auc", "pr_auc") and m not in out:
                pairs = [r.auc_ap(w) for r in self.ranks]
                # Macro means are NaN when any class is absent (as full_metrics).
                out["auc"] = np.stack([a for a, _ in pairs], axis=1).mean(axis=1)
                out["pr_auc"] = np.stack([b for _, b in pairs], axis=1).mean(axis=1)
        return {m: out[m] for m in metrics}
