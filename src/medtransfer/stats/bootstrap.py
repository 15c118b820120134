"""Bootstrap confidence intervals (stratified, seeded; percentile or BCa), paired bootstrap
differences between two models on the same images, and t intervals across repeats."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import mean_sd
from medtransfer.stats.weighted import Scored

__all__ = [
    "CI_METHODS",
    "Interval",
    "MeanCI",
    "PairedDiff",
    "bootstrap_ci",
    "bootstrap_weights",
    "paired_bootstrap",
    "t_interval",
]

CIMethod = Literal["percentile", "bca"]
CI_METHODS: tuple[str, ...] = ("percentile", "bca")
_CELLS_PER_CHUNK = 2_000_000  # weights held in memory at once (B × N floats)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n_boot: int = 0


@dataclass(frozen=True)
class PairedDiff:
    """``diff = estimate_a - estimate_b`` on the same images, its CI and a two-sided p-value."""

    estimate_a: float
    estimate_b: float
    diff: float
    low: float
    high: float
    p: float
    level: float
    n_boot: int
    method: str = "paired bootstrap"


@dataclass(frozen=True)
class MeanCI:
    """Mean, sample sd and t-based CI of repeated measurements (NaNs left out and counted)."""

    mean: float
    sd: float
    low: float
    high: float
    n: int
    n_nan: int
    level: float


def _check(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigError(f"'n_boot': got {n_boot!r}; allowed: an integer >= 1")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"'level': got {level!r}; allowed: a confidence level in (0, 1)")


def bootstrap_weights(
    y: Sequence[int] | np.ndarray, n_boot: int, rng: np.random.Generator, *, stratify: bool = True
) -> Iterator[np.ndarray]:
    """Bootstrap replicates as count matrices (chunks of shape (b, N), b summing to ``n_boot``).

    Stratified: each class is resampled within itself, so every replicate keeps the class counts
    (and a rank metric such as AUC stays defined). Draws come only from ``rng``.
    """
    labels = np.asarray(y)
    n = len(labels)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(n)]
    chunk = max(1, min(n_boot, _CELLS_PER_CHUNK // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        flat = np.concatenate(
            [g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups], axis=1
        ) + (np.arange(b) * n)[:, None]
        yield np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _jackknife(scored: Scored, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    n = scored.n
    parts: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    step = max(1, _CELLS_PER_CHUNK // n)
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        w = np.ones((len(rows), n))
        w[np.arange(len(rows)), rows] = 0.0
        for m, v in scored.batch(metrics, w).items():
            parts[m].append(v)
    return {m: np.concatenate(v) for m, v in parts.items()}


def _percentile(boot: np.ndarray, level: float) -> tuple[float, float]:
    finite = boot[np.isfinite(boot)]
    if not finite.size:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _bca(boot: np.ndarray, estimate: float, jack: np.ndarray, level: float) -> tuple[float, float] | None:
    """BCa bounds (Efron 1987, as scipy.stats.bootstrap); None where z0 or a is undefined.

    The bias correction counts replicates equal to the estimate as half below, half above (as
    scipy): with a discrete metric such as accuracy many replicates tie with the estimate, and
    counting them all as above would shift the interval down with no bias to correct.
    """
    finite = boot[np.isfinite(boot)]
    jack = jack[np.isfinite(jack)]
    if not finite.size or not jack.size or not math.isfinite(estimate):
        return None
    below = np.count_nonzero(finite < estimate) + np.count_nonzero(finite <= estimate)
    z0 = sps.norm.ppf(below / (2 * finite.size))
    dev = jack.mean() - jack
    denom = 6.0 * (dev**2).sum() ** 1.5
    if not math.isfinite(z0) or denom == 0:
        return None
    a = (dev**3).sum() / denom
    alpha = (1 - level) / 2
    z = sps.norm.ppf([alpha, 1 - alpha])
    q = sps.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    if not np.isfinite(q).all():
        return None
    lo, hi = np.quantile(finite, q)
    return float(lo), float(hi)


def bootstrap_ci(
    y_true: object,
    proba: object,
    metrics: Iterable[str] = ("accuracy", "auc"),
    *,
    rng: np.random.Generator,
    threshold: float = 0.5,
    n_boot: int = 2000,
    level: float = 0.95,
    method: CIMethod = "percentile",
    stratify: bool = True,
    n_bins: int = 10,
) -> dict[str, Interval]:
    """Bootstrap CI of each metric of one model on one test set (see :class:`Scored` for the
    metric definitions). BCa falls back to the percentile interval where it is undefined
    (e.g. every replicate equals the estimate), and says so in ``method``."""
    _check(n_boot, level)
    check_choice("method", method, CI_METHODS)
    metrics = list(metrics)
    scored = Scored(y_true, proba, threshold, n_bins)
    estimate = scored.point(metrics)
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for w in bootstrap_weights(np.asarray(y_true), n_boot, rng, stratify=stratify):
        for m, v in scored.batch(metrics, w).items():
            chunks[m].append(v)
    jack = _jackknife(scored, metrics) if method == "bca" else {}
    out = {}
    for m in metrics:
        boot = np.concatenate(chunks[m])
        bounds = _bca(boot, estimate[m], jack[m], level) if method == "bca" else None
        used = "bca" if bounds is not None else "percentile"
        if bounds is None:
            bounds = _percentile(boot, level)
            if method == "bca":
                used = "percentile (BCa undefined)"
        out[m] = Interval(estimate[m], bounds[0], bounds[1], level, f"{used} bootstrap", n_boot)
    return out


def paired_bootstrap(
    y_true: object,
    proba_a: object,
    proba_b: object,
    metric: str,
    *,
    rng: np.random.Generator,
    threshold_a: float = 0.5,
    threshold_b: float = 0.5,
    n_boot: int = 2000,
    level: float = 0.95,
    stratify: bool = True,
) -> PairedDiff:
    """Difference a - b of ``metric`` for two models scored on the same images.

    Both models see the same resampled images in every replicate. The CI is the percentile
    interval of the replicate differences; the two-sided p-value inverts it:
    ``p = min(1, 2·min(P*(d ≤ 0), P*(d ≥ 0)))`` with the (1 + count) / (B + 1) correction,
    so p < 1 - level exactly when the interval excludes 0 (up to that correction).
    """
    _check(n_boot, level)
    a, b = Scored(y_true, proba_a, threshold_a), Scored(y_true, proba_b, threshold_b)
    if a.n != b.n or a.k != b.k:
        raise DataError(f"paired_bootstrap: proba_a has shape {(a.n, a.k)} but proba_b {(b.n, b.k)}")
    est_a, est_b = a.point([metric])[metric], b.point([metric])[metric]
    diffs = [a.batch([metric], w)[metric] - b.batch([metric], w)[metric]
             for w in bootstrap_weights(np.asarray(y_true), n_boot, rng, stratify=stratify)]
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    low, high = _percentile(d, level)
    if d.size:
        below = (1 + np.count_nonzero(d <= 0)) / (d.size + 1)
        above = (1 + np.count_nonzero(d >= 0)) / (d.size + 1)
        p = float(min(1.0, 2 * min(below, above)))
    else:
        p = math.nan
    return PairedDiff(est_a, est_b, est_a - est_b, low, high, p, level, n_boot)


def t_interval(values: Iterable[float], level: float = 0.95) -> MeanCI:
    """Mean ± t_{n-1} · sd / √n over repeats (seeds, test sets); NaNs are left out and counted.

    Bounds are NaN with fewer than 2 values. Repeats on overlapping data are not independent,
    so this interval is optimistic there.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"'level': got {level!r}; allowed: a confidence level in (0, 1)")
    ms = mean_sd(values)
    if ms.n < 2:
        return MeanCI(ms.mean, ms.sd, math.nan, math.nan, ms.n, ms.n_nan, level)
    half = float(sps.t.ppf(0.5 + level / 2, ms.n - 1)) * ms.sd / math.sqrt(ms.n)
    return MeanCI(ms.mean, ms.sd, ms.mean - half, ms.mean + half, ms.n, ms.n_nan, level)
