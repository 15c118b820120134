"""The ``features`` strategy: a frozen backbone's features → a scikit-learn or MLP classifier.

Features are computed once per (weights, layer, pooling, normalisation, images) and kept in
the disk cache (:meth:`medtransfer.data.ImageCache.get_or_compute_array`), so a second
classifier, seed or study on the same backbone and data reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import Tensor, nn

from medtransfer.config import InputNorm, closest
from medtransfer.data import ImageCache
from medtransfer.errors import ConfigError, DataError
from medtransfer.freezing import transformer_blocks
from medtransfer.sigmoid_pair import SigmoidPairLinear
from medtransfer.strategies.cached import (
    fit_on_activations,
    images_fingerprint,
    model_input,
    state_hash,
)
from medtransfer.strategies.config import FeaturesStrategy, MLPHeadConfig
from medtransfer.train import FitResult, TrainEnv
from medtransfer.train.batches import logits_to_proba, nhwc
from medtransfer.train.precision import resolve_precision

FEATURES_VERSION = 1


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, values)."""
    return state_hash(model.state_dict().items())


def _pool(x: Tensor, pool: str, prefix: int = 0) -> Tensor:
    """(N, D) features of a feature map (N, C, H, W) or of transformer tokens (N, T, D) whose
    first ``prefix`` are class/register tokens."""
    if pool == "cls":
        if x.ndim != 3 or prefix < 1:
            raise ConfigError(f"'strategy.pool': cls takes a transformer's class token, but the layer "
                              f"gives {tuple(x.shape)} ({prefix} class/register tokens); use avg, "
                              "max or flatten")
        return x[:, 0]
    if x.ndim == 4 and pool in ("avg", "mean"):
        return x.mean(dim=(2, 3))
    if x.ndim == 4 and pool == "max":
        return x.amax(dim=(2, 3))
    if x.ndim == 3 and pool in ("avg", "mean", "max"):
        patches = x[:, prefix:]
        return patches.amax(dim=1) if pool == "max" else patches.mean(dim=1)
    return x.flatten(1)


def layer_features(model: nn.Module, layer: str, pool: str) -> Any:
    """A function images → (N, D) features of ``model`` at ``layer`` (``pre_logits``,
    ``pooled`` or a module name), pooled by ``pool``."""
    return _layer_fn(model, layer, pool)


def _layer_fn(model: nn.Module, layer: str, pool: str) -> Any:
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if layer == "pre_logits":
        return lambda x: _pool(model.forward_head(model.forward_features(x), pre_logits=True), "flatten")  # type: ignore[operator]
    if layer == "pooled":
        return lambda x: _pool(model.forward_features(x), pool, prefix)  # type: ignore[operator]
    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        hint = closest(layer, names)
        extra = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(
            f"'strategy.layer': got {layer!r}{extra} Allowed: pre_logits, pooled, or a module "
            f"name of {type(model).__name__}, e.g. {', '.join(names[:8])}"
        )
    module = model.get_submodule(layer)

    def run(x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = module.register_forward_hook(lambda m, a, out: captured.append(out))
        try:
            model(x)
        finally:
            handle.remove()
        return _pool(captured[0], pool, prefix)

    return run


def extract_features(
    model: nn.Module,
    images: np.ndarray,
    cfg: FeaturesStrategy,
    *,
    input_norm: InputNorm | None = None,
    device: str | torch.device = "cpu",
    cache: ImageCache | None = None,
) -> np.ndarray:
    """(N, D) float32 features of ``images`` at ``cfg.layer``, from the disk cache if seen;
    computed under autocast when ``cfg.precision`` is bf16/fp16."""
    dev = torch.device(device)
    amp = resolve_precision(cfg.precision, dev, "strategy.precision")
    model.to(dev).eval()
    fn = _layer_fn(model, cfg.layer, cfg.pool)

    def compute() -> np.ndarray:
        out = []
        with torch.no_grad(), nhwc(model, cfg.channels_last) as layout:
            for start in range(0, len(images), cfg.batch_size):
                batch = model_input(images[start : start + cfg.batch_size], dev, input_norm)
                with amp.autocast():
                    feats = fn(batch.contiguous(memory_format=layout))
                out.append(feats.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    if cache is None or not cfg.disk_cache:
        return compute()
    key = json.dumps({
        "v": FEATURES_VERSION, "weights": weights_hash(model), "arch": type(model).__name__,
        "layer": cfg.layer, "pool": cfg.pool, "images": images_fingerprint(images),
        "norm": None if input_norm is None else [list(map(float, v)) for v in input_norm],
        "in_chans_policy": getattr(model, "in_chans_policy", None),
        **({} if amp.name == "fp32" else {"precision": amp.name}),  # fp32 keys as before
        **({"channels_last": True} if cfg.channels_last else {}),
        # transformer tokens pooled over patch tokens (before: flattened); CNN keys as before
        **({"tokens": 1} if transformer_blocks(model) else {}),
    }, sort_keys=True)
    return cache.get_or_compute_array("features:" + key, compute)


def make_estimator(cfg: FeaturesStrategy, seed: int, labels: np.ndarray) -> ClassifierMixin | Pipeline:
    """The scikit-learn classifier ``cfg`` names (standardised features unless switched off)."""
    steps: list[Any] = [StandardScaler()] if cfg.standardize else []
    if cfg.classifier == "logreg":
        steps.append(LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))
    elif cfg.calibration == "none":
        steps.append(DecisionScores(C=cfg.C, max_iter=cfg.max_iter, random_state=seed))
    else:
        smallest = int(np.bincount(labels).min())
        folds = min(cfg.calibration_folds, smallest)
        if folds < 2:
            raise DataError(
                f"svm calibration needs at least 2 training images of every class, found a class "
                f"with {smallest}; use classifier: logreg, or more data"
            )
        svm = LinearSVC(C=cfg.C, max_iter=cfg.max_iter, random_state=seed)
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        steps.append(CalibratedClassifierCV(svm, method=cfg.calibration, cv=cv))
    return make_pipeline(*steps)


class DecisionScores(ClassifierMixin, BaseEstimator):
    """A one-vs-rest ``LinearSVC`` whose probabilities are its decision values through a sigmoid
    (two classes) or a softmax (more): uncalibrated, the SVM's own ranking of the images, so a
    binary AUC is that of its decision function (the raw SVM's ranking)."""

    def __init__(self, C: float = 1.0, max_iter: int = 5000, random_state: int | None = None) -> None:
        self.C, self.max_iter, self.random_state = C, max_iter, random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> DecisionScores:
        self.svm_ = LinearSVC(C=self.C, max_iter=self.max_iter, random_state=self.random_state).fit(x, y)
        self.classes_ = self.svm_.classes_
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.svm_.decision_function(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        d = self.decision_function(x)
        if d.ndim == 1:
            p = expit(d)
            return np.stack([1 - p, p], axis=1)
        return softmax(d, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(x).argmax(axis=1)])


class MLPHead(nn.Module):
    """Dense(hidden) → ReLU → Dropout → output layer, on feature vectors; ``sigmoid_pair``: the
    output layer is a :class:`~medtransfer.sigmoid_pair.SigmoidPairLinear`, as the model's."""

    def __init__(self, in_features: int, outputs: int, cfg: MLPHeadConfig, *,
                 sigmoid_pair: bool = False) -> None:
        super().__init__()
        hidden = nn.Linear(in_features, cfg.hidden)  # drawn first: the seed's initial weights
        out = (SigmoidPairLinear if sigmoid_pair else nn.Linear)(cfg.hidden, outputs)
        self.net = nn.Sequential(hidden, nn.ReLU(), nn.Dropout(cfg.dropout), out)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def fit_mlp(
    feats: np.ndarray,
    labels: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | None,
    cfg: MLPHeadConfig,
    env: TrainEnv,
    *,
    outputs: int,
    sigmoid_pair: bool = False,
) -> tuple[MLPHead, FitResult]:
    """Train :class:`MLPHead` with ``fit`` on cached features (initialised from ``env.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(env.seed)
        head = MLPHead(feats.shape[1], outputs, cfg, sigmoid_pair=sigmoid_pair)
    val_t = None if val is None else (torch.from_numpy(val[0]), val[1])
    res = fit_on_activations(head, head.forward, torch.from_numpy(feats), labels, val_t, cfg.train, env)
    return head, res


def mlp_proba(head: MLPHead, feats: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    head.to(device).eval()
    with torch.no_grad():
        return logits_to_proba(head(torch.from_numpy(feats).to(device))).cpu().numpy()


def sklearn_proba(estimator: Any, feats: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) probabilities with one column per class 0..K-1."""
    proba = estimator.predict_proba(feats)
    classes: Sequence[int] = [int(c) for c in estimator.classes_]
    if list(classes) != list(range(num_classes)):
        raise DataError(
            f"the classifier saw classes {list(classes)} in training; every one of 0..{num_classes - 1} "
            "needs training images"
        )
    return np.asarray(proba)
