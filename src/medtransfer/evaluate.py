"""Classification metrics from predicted probabilities: threshold metrics from one confusion
count (equal to scikit-learn's, which re-validates its inputs in every call and took 40 ms per
set), rank metrics (AUC, average precision) with scikit-learn.

Every function returns plain Python floats (counts included) so results serialise as they are.
Undefined rank metrics (AUC with a single class present) are NaN rather than an error, because a
small validation fold can legitimately lack a class.

:func:`full_metrics` is the complete set a report shows (per class and macro, calibration
included); :func:`choose_threshold` picks a decision threshold on validation data, to be applied
unchanged to the test sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError, DataError

__all__ = [
    "THRESHOLD_METHODS",
    "MeanSD",
    "binary_metrics",
    "choose_threshold",
    "compute_metrics",
    "confidence_bins",
    "confusion",
    "expected_calibration_error",
    "f1_per_class",
    "full_metrics",
    "mean_sd",
    "multiclass_metrics",
]

ThresholdMethod = Literal["youden", "sensitivity"]
THRESHOLD_METHODS: tuple[str, ...] = ("youden", "sensitivity")


def _labels(y_true: object, name: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise DataError(f"{name}: expected a non-empty 1-D array of class indices, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: expected integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _finite_scores(scores: object, name: str, n: int, ndim: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != ndim or s.shape[0] != n:
        expected = "(N,)" if ndim == 1 else "(N, K)"
        raise DataError(f"{name}: expected shape {expected} with N={n}, got {s.shape}")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise DataError(f"{name}: {bad} non-finite value(s); probabilities must be finite")
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise DataError(f"{name}: probabilities must lie in [0, 1], got [{s.min()}, {s.max()}]")
    return s


def binary_metrics(
    y_true: object, proba_pos: object, threshold: float = 0.5
) -> dict[str, float]:
    """Threshold metrics (positive class = 1) and ROC AUC for a binary problem.

    ``recall`` is the sensitivity; ``auc`` is NaN when ``y_true`` holds a single class.
    Precision/recall/specificity/F1 are 0 when undefined (scikit-learn ``zero_division=0``).
    """
    y = _labels(y_true)
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"y_true: binary labels must be 0 or 1, got {sorted(set(y.tolist()))}")
    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"threshold: got {threshold!r}; allowed: a probability in [0, 1]")
    p = _finite_scores(proba_pos, "proba_pos", len(y), ndim=1)
    pred = (p >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = _counts(y, pred, 2).tolist()
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan
    return {
        "accuracy": (tp + tn) / len(y),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": auc,
        "tp": float(tp),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
    }


def _counts(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """The k × k confusion counts (rows true, columns predicted) of labels in [0, k)."""
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _ratio(num: float, den: float) -> float:
    """``num / den``, 0 when ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return float(num / den) if den else 0.0


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (0 where undefined) and which classes occur in the
    labels or the predictions: what scikit-learn's macro averages run over."""
    tp, true, predicted = np.diag(cm).astype(np.float64), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(true + predicted > 0, 2 * tp / (true + predicted), 0.0)
    return precision, recall, f1, (true + predicted) > 0


def multiclass_metrics(y_true: object, proba: object) -> dict[str, float]:
    """Argmax metrics, macro precision/recall/F1, one-vs-rest macro AUC and per-class recall.

    Macro averages run over the classes present in ``y_true`` or the predictions (scikit-learn's
    default); ``recall_<k>`` is reported for every class k < K and is 0 for a class with no
    samples. ``auc`` is NaN unless every one of the K classes occurs in ``y_true``.
    """
    y, p = _proba_matrix(y_true, proba)
    k = p.shape[1]
    pred = p.argmax(axis=1)
    classes = list(range(k))
    if len(np.unique(y)) == k:
        # Renormalise in float64: float32 softmax rows can miss 1 by more than sklearn tolerates.
        p_norm = p / p.sum(axis=1, keepdims=True)
        auc = float(roc_auc_score(y, p_norm, multi_class="ovr", average="macro", labels=classes))
    else:
        auc = math.nan
    cm = _counts(y, pred, k)
    precision, recall, f1, present = _per_class(cm)
    out = {
        "accuracy": float(np.trace(cm) / len(y)),
        "balanced_accuracy": float(recall[cm.sum(axis=1) > 0].mean()),  # over the classes in y
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
        "auc": auc,
    }
    out.update({f"recall_{c}": float(r) for c, r in enumerate(recall)})
    return out


def compute_metrics(y_true: object, proba: object, threshold: float = 0.5) -> dict[str, float]:
    """Metrics for (N, K) class probabilities: binary on column 1 when K == 2, else multiclass;
    both with ``f1_macro`` and ``f1_<k>`` per class index k (see :func:`f1_per_class`)."""
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"proba: expected shape (N, K) with K >= 2 classes, got {p.shape}")
    if p.shape[1] == 2:
        out = binary_metrics(y_true, p[:, 1], threshold=threshold)
        pred = (np.asarray(p[:, 1], dtype=np.float64) >= threshold).astype(np.int64)
        return {**out, **f1_per_class(_labels(y_true), pred, 2)}
    out = multiclass_metrics(y_true, p)
    y, p_norm = _proba_matrix(y_true, p)
    return {**out, **f1_per_class(y, p_norm.argmax(axis=1), p.shape[1])}


def f1_per_class(y: np.ndarray, pred: np.ndarray, k: int) -> dict[str, float]:
    """``f1_macro`` (over the classes present in ``y`` or ``pred``, as scikit-learn, so the
    multiclass ``f1``) and ``f1_<c>`` for every class c < k (0 when undefined)."""
    _, _, f1, present = _per_class(_counts(y, pred, k))
    return {"f1_macro": float(f1[present].mean()), **{f"f1_{c}": float(v) for c, v in enumerate(f1)}}


def confusion(y_true: object, y_pred: object, num_classes: int) -> list[list[int]]:
    """Confusion matrix as nested lists: rows are true classes, columns predicted classes."""
    if num_classes < 1:
        raise DataError(f"num_classes: got {num_classes!r}; allowed: an integer >= 1")
    y = _labels(y_true)
    pred = _labels(y_pred, "y_pred")
    if len(pred) != len(y):
        raise DataError(f"y_pred has {len(pred)} entries but y_true has {len(y)}")
    for name, arr in (("y_true", y), ("y_pred", pred)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise DataError(
                f"{name}: labels must lie in [0, {num_classes - 1}], got [{arr.min()}, {arr.max()}]"
            )
    cm = confusion_matrix(y, pred, labels=list(range(num_classes)))
    return [[int(v) for v in row] for row in cm]


class MeanSD(tuple[float, float]):
    """``(mean, sd)`` that also records how many values were used (``n``) and how many NaNs were
    skipped (``n_nan``); unpacks like a plain pair."""

    n: int
    n_nan: int

    def __new__(cls, mean: float, sd: float, n: int, n_nan: int) -> MeanSD:
        obj = super().__new__(cls, (mean, sd))
        obj.n = n
        obj.n_nan = n_nan
        return obj

    @property
    def mean(self) -> float:
        return self[0]

    @property
    def sd(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return f"MeanSD(mean={self[0]!r}, sd={self[1]!r}, n={self.n}, n_nan={self.n_nan})"


def mean_sd(values: Iterable[float]) -> MeanSD:
    """Mean and sample standard deviation (ddof=1) of the finite-or-infinite, non-NaN values.

    NaNs (e.g. an undefined AUC in one fold) are left out and counted in ``n_nan``; sd is NaN for a
    single value and both are NaN when nothing is left.
    """
    arr = np.asarray(list(values), dtype=np.float64).ravel()
    nan = np.isnan(arr)
    kept = arr[~nan]
    n, n_nan = int(kept.size), int(nan.sum())
    if n == 0:
        return MeanSD(math.nan, math.nan, 0, n_nan)
    mean = float(kept.mean())
    sd = float(kept.std(ddof=1)) if n > 1 else math.nan
    return MeanSD(mean, sd, n, n_nan)


def _proba_matrix(y_true: object, proba: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated labels and (N, K) probabilities; K > 2 rows are renormalised in float64, binary
    scores are kept as they are (renormalising could merge or split ties in the ranking)."""
    y = _labels(y_true)
    p = _finite_scores(proba, "proba", len(y), ndim=2)
    k = p.shape[1]
    if k < 2:
        raise DataError(f"proba: expected at least 2 columns (one per class), got {k}")
    if y.min() < 0 or y.max() >= k:
        raise DataError(f"y_true: labels must lie in [0, {k - 1}] for {k} classes, got {y.max()}")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise DataError("proba: each row must sum to 1 (class probabilities, not logits)")
    return y, (p if k == 2 else p / p.sum(axis=1, keepdims=True))


def expected_calibration_error(y_true: object, proba: object, n_bins: int = 10) -> float:
    """Top-label expected calibration error (Guo et al. 2017) with ``n_bins`` equal-width bins.

    Confidence is the largest class probability, correctness is argmax == label; each bin
    ((m-1)/M, m/M] contributes |accuracy - mean confidence| weighted by its share of samples.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"'n_bins': got {n_bins!r}; allowed: an integer >= 1")
    y, p = _proba_matrix(y_true, proba)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    gap = np.bincount(confidence_bins(conf, n_bins), correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / len(y))


def confidence_bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the equal-width bin ((m-1)/M, m/M] holding each confidence (0 in the first bin);
    edges as scikit-learn's ``calibration_curve``, so 0.7 falls in (0.6, 0.7] despite rounding."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(conf, dtype=np.float64)).astype(np.int64)


def full_metrics(
    y_true: object,
    proba: object,
    threshold: float = 0.5,
    *,
    n_bins: int = 10,
    classes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Every metric a report shows, from (N, K) class probabilities.

    Binary (K == 2, positive class = column 1, decision ``p >= threshold``): accuracy,
    balanced_accuracy, precision, recall (= sensitivity), sensitivity, specificity, f1, auc,
    pr_auc (average precision), brier, ece, tp/tn/fp/fn and the threshold used.
    Multiclass (argmax decision): the same names as macro averages (auc one-vs-rest) plus
    ``<metric>_<class>`` per class for precision, recall, specificity, f1, auc and pr_auc;
    classes are named by ``classes`` or by index. Rank metrics are NaN where a class is absent.
    """
    y, p = _proba_matrix(y_true, proba)
    k = p.shape[1]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise DataError(f"classes: {len(names)} names for {k} probability columns")
    if k == 2:
        out = binary_metrics(y, p[:, 1], threshold=threshold)
        pred = (p[:, 1] >= threshold).astype(np.int64)
        out["sensitivity"] = out["recall"]
        out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
        out["pr_auc"] = float(average_precision_score(y, p[:, 1])) if y.any() else math.nan
        out["brier"] = float(brier_score_loss(y, p[:, 1], labels=[0, 1]))
        out["ece"] = expected_calibration_error(y, p, n_bins)
        out["threshold"] = float(threshold)
        return out
    out = multiclass_metrics(y, p)
    out = {key: v for key, v in out.items() if not key.startswith("recall_")}
    pred = p.argmax(axis=1)
    labels = list(range(k))
    cm = confusion_matrix(y, pred, labels=labels)
    tp = np.diag(cm).astype(np.float64)
    negatives = cm.sum() - cm.sum(axis=1)
    true_neg = negatives - (cm.sum(axis=0) - tp)
    spec = np.divide(true_neg, negatives, out=np.zeros(k), where=negatives > 0)
    per = {
        "precision": precision_score(y, pred, labels=labels, average=None, zero_division=0),
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0),
        "specificity": spec,
        "f1": f1_score(y, pred, labels=labels, average=None, zero_division=0),
    }
    onehot = np.eye(k, dtype=np.int64)[y]
    count = onehot.sum(axis=0)
    per["auc"] = np.array([roc_auc_score(onehot[:, c], p[:, c]) if 0 < count[c] < len(y) else math.nan
                           for c in labels])
    per["pr_auc"] = np.array([average_precision_score(onehot[:, c], p[:, c]) if count[c] else math.nan
                              for c in labels])
    present = count > 0
    out["sensitivity"] = out["recall"]
    out["specificity"] = float(spec.mean())
    out["pr_auc"] = float(np.mean(per["pr_auc"])) if present.all() else math.nan
    out["brier"] = float(brier_score_loss(y, p, labels=labels))
    out["ece"] = expected_calibration_error(y, p, n_bins)
    for metric, values in per.items():
        out.update({f"{metric}_{name}": float(v) for name, v in zip(names, values, strict=True)})
    return out


def choose_threshold(
    y_val: object,
    p_val: object,
    method: ThresholdMethod = "youden",
    target: float = 0.9,
) -> float:
    """A decision threshold (predict positive when ``score >= threshold``) chosen on validation
    data, to be applied unchanged to the test sets.

    ``youden`` maximises sensitivity + specificity - 1; ``sensitivity`` takes the most specific
    threshold whose sensitivity is at least ``target``. Candidates are midpoints between
    consecutive distinct scores (as pROC's ``coords(..., "best")``), so the chosen cut does not
    sit on a validation score; ties go to the higher threshold.
    """
    check_choice("method", method, THRESHOLD_METHODS)
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"'target': got {target!r}; allowed: a sensitivity in (0, 1]")
    y = _labels(y_val, "y_val")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"y_val: binary labels must be 0 or 1, got {sorted(set(y.tolist()))}")
    if len(np.unique(y)) != 2:
        raise DataError("y_val: both classes are needed to choose a threshold")
    s = np.asarray(p_val, dtype=np.float64)
    if s.shape != y.shape or not np.isfinite(s).all():
        raise DataError(f"p_val: expected {len(y)} finite scores, got shape {s.shape}")
    values, group = np.unique(s, return_inverse=True)
    pos = np.bincount(group, weights=y, minlength=len(values))
    neg = np.bincount(group, weights=1 - y, minlength=len(values))
    # Candidate i predicts positive for every score group >= i (i = len: nothing positive).
    sens = np.append(np.cumsum(pos[::-1])[::-1], 0.0) / pos.sum()
    spec = np.append(0.0, np.cumsum(neg)) / neg.sum()
    cuts = np.concatenate([[values[0]], (values[:-1] + values[1:]) / 2,
                           [np.nextafter(values[-1], np.inf)]])
    if method == "youden":
        j = sens + spec - 1.0
        best = int(np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))[-1])
    else:
        ok = np.flatnonzero(sens >= target - 1e-12)
        best = int(ok[-1])
    return float(cuts[best])
