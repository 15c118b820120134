"""Tests between two models on the same images: DeLong's test for correlated ROC AUCs (the fast
algorithm of Sun & Xu 2014), McNemar's test for paired accuracy (exact binomial or chi-square,
the numbers statsmodels' ``mcnemar`` gives), and Holm's correction for many arms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from medtransfer.errors import ConfigError, DataError
from medtransfer.stats.bootstrap import Interval

__all__ = ["DeLongResult", "McNemarResult", "delong_ci", "delong_covariance", "delong_test",
           "holm", "mcnemar_test"]


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of two scores on the same cases, ``diff = auc_a - auc_b``, its SE, Z, two-sided p
    and the normal CI of the difference, clipped to [-1, 1] (as pROC's ``roc.test``)."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts (``b``: only A right, ``c``: only B right), statistic and p-value."""

    b: int
    c: int
    statistic: float
    p: float
    method: str


def _binary(y_true: object) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise DataError("y_true: expected a 1-D array of binary labels 0/1")
    if y.min() == y.max():
        raise DataError("y_true: DeLong's method needs both classes")
    return y.astype(bool)


def delong_covariance(y_true: object, scores: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (shape (k,)) and their DeLong covariance matrix (k, k) for k score vectors.

    Sun & Xu (2014): with midranks ``Tz`` over all cases and ``Tx``/``Ty`` within positives /
    negatives, the placements are V10 = (Tz - Tx)/n and V01 = 1 - (Tz - Ty)/m, and
    S = cov(V10)/m + cov(V01)/n (m positives, n negatives). Ties count 1/2.
    """
    pos = _binary(y_true)
    rows = [np.asarray(s, dtype=np.float64) for s in scores]
    if not rows or any(r.shape != pos.shape or not np.isfinite(r).all() for r in rows):
        got = [r.shape for r in rows]
        raise DataError(f"scores: expected finite arrays of length {len(pos)}, got shapes {got}")
    x = np.stack(rows)
    m, n = int(pos.sum()), int((~pos).sum())
    tz = sps.rankdata(x, axis=1)
    tx = sps.rankdata(x[:, pos], axis=1)
    ty = sps.rankdata(x[:, ~pos], axis=1)
    auc = tz[:, pos].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, ~pos] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(x), len(x)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(x), len(x)))
    return auc, s10 / m + s01 / n


def delong_test(y_true: object, score_a: object, score_b: object, level: float = 0.95) -> DeLongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b) for two scores of the same cases."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"'level': got {level!r}; allowed: a confidence level in (0, 1)")
    auc, cov = delong_covariance(y_true, [score_a, score_b])
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    else:  # identical rankings (or no spread at all): no evidence of a difference unless diff != 0
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    half = float(sps.norm.ppf(0.5 + level / 2)) * se
    # A difference of AUCs lies in [-1, 1]; the Wald interval can overshoot when n is tiny.
    low, high = max(-1.0, diff - half), min(1.0, diff + half)
    return DeLongResult(float(auc[0]), float(auc[1]), diff, se, z, p, low, high, level)


def delong_ci(y_true: object, score: object, level: float = 0.95) -> Interval:
    """Normal CI of one AUC with DeLong's variance, clipped to [0, 1] (pROC's ``ci.auc``)."""
    auc, cov = delong_covariance(y_true, [score])
    half = float(sps.norm.ppf(0.5 + level / 2)) * math.sqrt(max(float(cov[0, 0]), 0.0))
    a = float(auc[0])
    return Interval(a, max(0.0, a - half), min(1.0, a + half), level, "DeLong")


def mcnemar_test(correct_a: object, correct_b: object, exact: bool | None = None,
                 correction: bool = True) -> McNemarResult:
    """McNemar's test that two classifiers are equally accurate on the same cases.

    ``exact=None`` uses the exact binomial test when there are fewer than 25 discordant pairs
    and the chi-square test (continuity-corrected unless ``correction=False``) otherwise. The
    statistic is as statsmodels' ``mcnemar`` reports it: ``min(b, c)`` for the exact test,
    ``(|b - c| - 1)² / (b + c)`` (without the ``- 1`` uncorrected) for the chi-square test.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"correct_a and correct_b: expected equal 1-D shapes, got {a.shape}, {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    use_exact = n < 25 if exact is None else exact
    chi2 = "McNemar chi2 (continuity-corrected)" if correction else "McNemar chi2"
    if n == 0:
        return McNemarResult(0, 0, 0.0, 1.0, "McNemar exact" if use_exact else chi2)
    if use_exact:  # two-sided binomial test of b ~ Bin(b + c, 1/2)
        p = sps.binomtest(only_a, n, 0.5).pvalue
        return McNemarResult(only_a, only_b, float(min(only_a, only_b)), min(1.0, float(p)),
                             "McNemar exact")
    statistic = (abs(only_a - only_b) - int(correction)) ** 2 / n
    return McNemarResult(only_a, only_b, float(statistic), float(sps.chi2.sf(statistic, 1)), chi2)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaNs stay NaN and are not counted.

    The i-th smallest of m p-values becomes max_{j <= i} min(1, (m - j + 1) p_(j)): the same
    numbers as statsmodels ``multipletests(method="holm")`` (checked in the tests), which we do
    not call because it runs a full ``gc.collect()`` each time (about a second in a process
    holding a trained model).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = p[order] * np.arange(ok.size, 0, -1)
        out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out
