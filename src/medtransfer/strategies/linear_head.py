"""The ``features`` strategy's fitted classifier as arrays and as a torch module, without pickle.

A logistic regression is its standardisation, coefficients and intercepts; a linear SVM with
Platt scaling (``CalibratedClassifierCV``, sigmoid) is, per calibration fold, a linear decision
function and a sigmoid, averaged over folds exactly as scikit-learn does. Saved as ``.npz`` (read
with ``allow_pickle=False``) and rebuilt as :class:`FeatureHead`, so a features unit can be
loaded, predicted with and exported like any model. Isotonic calibration is a step function per
fold and is not rebuilt (a clear error says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from medtransfer.errors import DataError

__all__ = ["BACKBONE_FILE", "CLASSIFIER_FILE", "FeatureHead", "FeatureModel", "classifier_arrays",
           "load_head", "save_head"]

CLASSIFIER_FILE = "classifier.npz"
BACKBONE_FILE = "backbone.pt"


def classifier_arrays(estimator: Any, dim: int) -> dict[str, np.ndarray] | None:
    """The arrays that rebuild ``estimator`` (a :func:`make_estimator` pipeline), or None when
    it cannot be rebuilt (isotonic calibration)."""
    steps = estimator.steps if isinstance(estimator, Pipeline) else [("clf", estimator)]
    scaler = next((s for _, s in steps if isinstance(s, StandardScaler)), None)
    final = steps[-1][1]
    out = {"mean": np.zeros(dim) if scaler is None else np.asarray(scaler.mean_, dtype=np.float64),
           "scale": np.ones(dim) if scaler is None else np.asarray(scaler.scale_, dtype=np.float64)}
    if isinstance(final, LogisticRegression):
        out.update(kind=np.array("logreg"), coef=final.coef_[None].astype(np.float64),
                   intercept=final.intercept_[None].astype(np.float64))
        return out
    if isinstance(final, CalibratedClassifierCV):
        folds = final.calibrated_classifiers_
        if any(c.method != "sigmoid" for c in folds):
            return None
        out.update(kind=np.array("sigmoid"),
                   coef=np.stack([c.estimator.coef_ for c in folds]).astype(np.float64),
                   intercept=np.stack([c.estimator.intercept_ for c in folds]).astype(np.float64),
                   a=np.array([[k.a_ for k in c.calibrators] for c in folds], dtype=np.float64),
                   b=np.array([[k.b_ for k in c.calibrators] for c in folds], dtype=np.float64))
        return out
    return None


class FeatureHead(nn.Module):
    """Rebuilt scikit-learn classifier on feature vectors; returns log-probabilities, so the
    softmax every evaluation applies gives the classifier's own probabilities back."""

    mean: Tensor
    scale: Tensor
    coef: Tensor
    intercept: Tensor
    a: Tensor
    b: Tensor

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind = str(arrays["kind"])
        for name in ("mean", "scale", "coef", "intercept", "a", "b"):
            value = arrays.get(name, np.zeros(1))
            self.register_buffer(name, torch.from_numpy(np.asarray(value, dtype=np.float64)))

    def forward(self, feats: Tensor) -> Tensor:
        # float64 like scikit-learn: probabilities agree to ~1e-12, not just float32's 1e-6.
        x = (feats.double() - self.mean) / self.scale
        scores = torch.einsum("nd,fcd->nfc", x, self.coef) + self.intercept  # (N, folds, C')
        if self.kind == "logreg":
            s = scores[:, 0]
            proba = torch.softmax(s, dim=1) if s.shape[1] > 1 else torch.cat([1 - torch.sigmoid(s),
                                                                                torch.sigmoid(s)], dim=1)
        else:
            p = torch.sigmoid(-(self.a * scores + self.b))
            if p.shape[2] == 1:  # binary: the positive class's calibrated probability
                p = torch.cat([1 - p, p], dim=2)
            else:
                total = p.sum(dim=2, keepdim=True)
                p = torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 1 / p.shape[2]))
            proba = p.mean(dim=1)
        return torch.log(proba.clamp_min(1e-300)).float()


class FeatureModel(nn.Module):
    """Backbone features (the strategy's layer and pooling) → a classifier head."""

    def __init__(self, backbone: nn.Module, features: Any, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self._features = features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self._features(x))


def save_head(arrays: dict[str, np.ndarray], out_dir: Path) -> Path:
    path = out_dir / CLASSIFIER_FILE
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


def load_head(unit_dir: Path) -> FeatureHead:
    """The classifier a features unit saved (never unpickled)."""
    path = unit_dir / CLASSIFIER_FILE
    if not path.is_file():
        raise DataError(f"{unit_dir}: no {CLASSIFIER_FILE}; this features unit's classifier was not "
                        "saved (isotonic calibration, or a run of an earlier version)")
    with np.load(path, allow_pickle=False) as data:
        return FeatureHead({k: data[k] for k in data.files}).eval()
