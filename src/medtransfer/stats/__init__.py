"""Uncertainty and comparisons: bootstrap CIs, t intervals, DeLong, McNemar, paired bootstrap,
Holm's correction; all randomness comes from an explicit ``np.random.Generator``."""

from medtransfer.stats.bootstrap import (
    CI_METHODS,
    Interval,
    MeanCI,
    PairedDiff,
    bootstrap_ci,
    bootstrap_weights,
    paired_bootstrap,
    t_interval,
)
from medtransfer.stats.paired import (
    DeLongResult,
    McNemarResult,
    delong_ci,
    delong_covariance,
    delong_test,
    holm,
    mcnemar_test,
)
from medtransfer.stats.weighted import BINARY_METRICS, MULTICLASS_METRICS, THRESHOLD_FREE, Scored

__all__ = [
    "BINARY_METRICS",
    "CI_METHODS",
    "MULTICLASS_METRICS",
    "THRESHOLD_FREE",
    "DeLongResult",
    "Interval",
    "McNemarResult",
    "MeanCI",
    "PairedDiff",
    "Scored",
    "bootstrap_ci",
    "bootstrap_weights",
    "delong_ci",
    "delong_covariance",
    "delong_test",
    "holm",
    "mcnemar_test",
    "paired_bootstrap",
    "t_interval",
]
