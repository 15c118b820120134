"""Settings of the data audit: duplicate thresholds, the shortcut probe, what counts as a finding."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from medtransfer.errors import ConfigError


class ProbeModel(StrEnum):
    """Classifier of the metadata shortcut probe."""

    boosting = "boosting"  # sklearn HistGradientBoostingClassifier: catches "only size X is TB"
    logistic = "logistic"  # standardised logistic regression: linear, coefficients readable


@dataclass(frozen=True)
class AuditConfig:
    """What the audit looks for and how hard.

    Near duplicates are pairs whose perceptual hashes (``imagehash.phash``, 64 bits) differ in at
    most ``near_hamming`` bits *and* whose fine detail agrees: the correlation of their high-pass
    filtered ``detail_size``² grey thumbnails is at least ``near_similarity``. The second test is
    needed on homogeneous modalities, where every chest X-ray has a similar phash. Images smaller
    than ``detail_size`` on their short side (e.g. MedMNIST's 28²) carry too little detail to
    tell a second image of the same patient from a similar patient, so pairs involving them need
    ``near_similarity_small``: only (re-saved, noised, slightly shifted) copies reach it.
    """

    near_hamming: int = 10
    near_similarity: float = 0.65
    near_similarity_small: float = 0.85
    detail_size: int = 64
    grey_tolerance: int = 8
    probe: bool = True
    probe_model: ProbeModel = ProbeModel.boosting
    probe_folds: int = 5
    probe_auc: float = 0.7
    probe_critical_auc: float = 0.9
    feature_auc: float = 0.7
    min_share: float = 0.02
    imbalance_ratio: float = 1.5
    max_examples: int = 5
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        _int_range("near_hamming", self.near_hamming, 0, 64)
        _int_range("detail_size", self.detail_size, 8, 512)
        _int_range("grey_tolerance", self.grey_tolerance, 0, 255)
        _int_range("probe_folds", self.probe_folds, 2, 100)
        _int_range("max_examples", self.max_examples, 0, 10_000)
        _int_range("seed", self.seed, 0, 2**32 - 1)
        _int_range("workers", self.workers, 1, 256)
        _unit("near_similarity", self.near_similarity, -1.0)
        _unit("near_similarity_small", self.near_similarity_small, -1.0)
        for name in ("probe_auc", "probe_critical_auc", "feature_auc"):
            _unit(name, getattr(self, name), 0.5)
        _unit("min_share", self.min_share, 0.0)
        if self.probe_critical_auc < self.probe_auc:
            raise ConfigError(
                f"'probe_critical_auc': got {self.probe_critical_auc}, below probe_auc="
                f"{self.probe_auc}; expected probe_auc <= probe_critical_auc <= 1"
            )
        if not isinstance(self.imbalance_ratio, int | float) or self.imbalance_ratio < 1:
            raise ConfigError(f"'imbalance_ratio': got {self.imbalance_ratio!r}; expected a number >= 1")
        try:
            object.__setattr__(self, "probe_model", ProbeModel(self.probe_model))
        except ValueError:
            allowed = ", ".join(m.value for m in ProbeModel)
            raise ConfigError(f"'probe_model': got {self.probe_model!r}; allowed: {allowed}") from None


def _int_range(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"'{name}': got {value!r}; expected an integer from {lo} to {hi}")


def _unit(name: str, value: object, lo: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= 1:
        raise ConfigError(f"'{name}': got {value!r}; expected a number from {lo} to 1")
