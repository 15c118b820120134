"""The shortcut probe: can file metadata alone — no anatomy — predict the label?

A scikit-learn classifier is trained on metadata features (format, size, aspect, mode and bit
depth, colour use, file size, EXIF/ICC/dpi, JPEG quantisation) and scored by stratified,
seeded k-fold ROC AUC (grouped folds when patient groups are known). Permutation importance on
the held-out folds names the features it leans on. File-name tokens are probed separately: a
CNN never sees names, but names reveal which collection an image came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medtransfer.audit.config import AuditConfig, ProbeModel
from medtransfer.audit.inspect import ImageRecord, Inventory

# Feature group → the record fields behind it (categorical ones are one-hot encoded).
FEATURE_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "format": (("format",), ()),
    "geometry": ((), ("width", "height", "aspect")),
    "mode": (("mode",), ("bit_depth",)),
    "colour": (("colour",), ("colour_fraction",)),
    "file": ((), ("file_kb", "bytes_per_pixel", "exif", "icc", "dpi", "jpeg_quality")),
}


@dataclass
class ProbeResult:
    """Cross-validated ROC AUC of the metadata probe and what drives it."""

    auc: float
    auc_std: float
    folds: int
    model: str
    features: list[str]
    importance: list[tuple[str, float]] = field(default_factory=list)
    group_auc: dict[str, float] = field(default_factory=dict)
    name_auc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc, "auc_std": self.auc_std, "folds": self.folds, "model": self.model,
            "features": self.features,
            "importance": [{"feature": f, "auc_drop": v} for f, v in self.importance],
            "group_auc": self.group_auc, "name_auc": self.name_auc,
        }


def record_value(r: ImageRecord, name: str) -> Any:
    """A record field, or one derived from it (aspect, file size in KB, bytes per pixel)."""
    if name == "aspect":
        return r.width / r.height if r.height else 0.0
    if name == "file_kb":
        return r.file_bytes / 1024
    if name == "bytes_per_pixel":
        return r.file_bytes / max(1, r.width * r.height)
    value = getattr(r, name)
    return str(value) if name in ("format", "mode", "colour", "name_token") else value


def metadata_features(
    records: Sequence[ImageRecord], groups: Sequence[str]
) -> tuple[np.ndarray, list[str], dict[str, list[int]]]:
    """(X, column names, feature group → columns); constant columns are dropped, NaN → -1."""
    columns: list[np.ndarray] = []
    names: list[str] = []
    owner: dict[str, list[int]] = {}
    for group in groups:
        categorical, numeric = FEATURE_GROUPS[group] if group != "name" else (("name_token",), ())
        for field_name in categorical:
            values = np.array([record_value(r, field_name) for r in records])
            for level in sorted(set(values.tolist())):
                columns.append((values == level).astype(np.float64))
                names.append(f"{field_name}={level}")
                owner.setdefault(group, []).append(len(names) - 1)
        for field_name in numeric:
            columns.append(np.array([float(record_value(r, field_name)) for r in records]))
            names.append(field_name)
            owner.setdefault(group, []).append(len(names) - 1)
    if not columns:
        return np.zeros((len(records), 0)), [], {}
    x = np.nan_to_num(np.stack(columns, axis=1), nan=-1.0)
    keep = [c for c in range(x.shape[1]) if np.ptp(x[:, c]) > 0]
    remap = {old: new for new, old in enumerate(keep)}
    owner = {g: [remap[c] for c in cols if c in remap] for g, cols in owner.items()}
    return x[:, keep], [names[c] for c in keep], {g: c for g, c in owner.items() if c}


def separability(values: Sequence[Any], labels: np.ndarray, categorical: bool = False) -> float:
    """How well one feature alone tells the classes apart: ROC AUC folded to >= 0.5 (one-vs-rest
    macro average for more than two classes). Categorical values score each image by its
    category's share of the class (in-sample). 0.5 = no information, 1 = perfect."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        return 0.5
    if categorical:
        cats = np.array([str(v) for v in values])
        levels, code = np.unique(cats, return_inverse=True)
        table = np.zeros((len(levels), int(labels.max()) + 1))
        np.add.at(table, (code, labels), 1)
        share = table / table.sum(axis=1, keepdims=True)
    else:
        score = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-1.0)
    aucs = []
    for c in present[1:] if len(present) == 2 else present:
        s = share[code, c] if categorical else score
        if np.ptp(s) == 0:
            aucs.append(0.5)
            continue
        auc = float(roc_auc_score(labels == c, s))
        aucs.append(max(auc, 1 - auc))
    return float(np.mean(aucs))


def _model(cfg: AuditConfig, n: int) -> Any:
    if cfg.probe_model is ProbeModel.logistic:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    # sklearn's default of 20 images per leaf would forbid any split on a small data set.
    leaf = int(min(20, max(1, n // 20)))
    return HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, min_samples_leaf=leaf,
                                          random_state=cfg.seed)


def run_probe(inv: Inventory, cfg: AuditConfig) -> ProbeResult | None:
    """The metadata probe on ``inv``; None when a class has fewer than 2 images or no metadata
    feature varies."""
    # The tables are small: one thread is fast, while OpenMP threads competing with a busy CPU
    # (a training run beside us) can be 100x slower.
    with threadpool_limits(limits=1):
        return _run_probe(inv, cfg)


def _run_probe(inv: Inventory, cfg: AuditConfig) -> ProbeResult | None:
    y = inv.labels
    counts = np.bincount(y)
    present = counts[counts > 0]
    folds = min(cfg.probe_folds, int(present.min()))
    if len(present) < 2 or folds < 2:
        return None
    groups = inv.groups
    if groups is not None:
        pairs = {(g, int(c)) for g, c in zip(groups, y.tolist(), strict=True)}
        per_class = np.bincount([c for _, c in pairs], minlength=len(counts))
        if per_class[counts > 0].min() < folds:
            groups = None  # too few patients per class for grouped folds: plain stratified ones
    cv: Any = (StratifiedKFold(folds, shuffle=True, random_state=cfg.seed) if groups is None
               else StratifiedGroupKFold(folds, shuffle=True, random_state=cfg.seed))
    scoring = "roc_auc" if len(present) == 2 else "roc_auc_ovr"
    model_name = cfg.probe_model.value
    x, names, owner = metadata_features(inv.records, list(FEATURE_GROUPS))
    if not names:
        return None  # nothing varies (e.g. an npz): there is no metadata to learn from

    def cv_auc(matrix: np.ndarray, keep: bool = False) -> tuple[float, float, dict[str, Any]]:
        if matrix.shape[1] == 0:
            return 0.5, 0.0, {}
        out = cross_validate(_model(cfg, len(y)), matrix, y, cv=cv, groups=groups, scoring=scoring,
                             return_estimator=keep, return_indices=keep)
        scores = out["test_score"]
        return float(np.mean(scores)), float(np.std(scores)), out

    auc, std, out = cv_auc(x, keep=True)
    result = ProbeResult(auc=auc, auc_std=std, folds=folds, model=model_name, features=names)
    if out:
        drops = np.zeros(len(names))
        for est, test in zip(out["estimator"], out["indices"]["test"], strict=True):
            imp = permutation_importance(est, x[test], y[test], scoring=scoring, n_repeats=5,
                                         random_state=cfg.seed)
            drops += imp.importances_mean / folds
        order = np.argsort(-drops)
        result.importance = [(names[i], round(float(drops[i]), 4)) for i in order if drops[i] > 0.005]
        result.group_auc = {g: round(cv_auc(x[:, cols])[0], 4) for g, cols in owner.items()}
    x_names, token_names, _ = metadata_features(inv.records, ["name"])
    if token_names:
        result.name_auc = round(cv_auc(x_names)[0], 4)
    result.auc, result.auc_std = round(result.auc, 4), round(result.auc_std, 4)
    if math.isnan(result.auc):
        result.auc = 0.5
    return result
