"""Fit a model's output layer to convergence as a logistic regression on its frozen features (a
linear probe), then write it into the layer: stage 1 of ``finetune`` with ``head_fit: logreg``.

Fine-tuning from a probed head, not a freshly initialised one, is LP-FT (Kumar et al., ICLR 2022,
"Fine-Tuning can Distort Pretrained Features"): a random head gives large gradients that rewrite
the pretrained features in the first steps. A few epochs of SGD on the head do not fix that when
the head starts far off (timm's EfficientNet initialises a 2-class output layer uniformly in
±0.71, so 1280 pooled features give logits of ~±25 and a starting loss of ~20); the convex
problem is solved exactly instead.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.freezing import FreezeConfig, freeze
from medtransfer.sigmoid_pair import SigmoidPairLinear
from medtransfer.strategies.base import StageResult, TransferData
from medtransfer.strategies.config import FeaturesStrategy
from medtransfer.strategies.features import extract_features
from medtransfer.train import TrainEnv
from medtransfer.train.config import ClassWeight

__all__ = ["fit_probe", "output_layer", "probe_weights"]


def output_layer(model: nn.Module) -> nn.Linear:
    """The model's output layer (``get_classifier()``), which must be one ``nn.Linear``."""
    get = getattr(model, "get_classifier", None)
    layer = get() if callable(get) else None
    if not isinstance(layer, nn.Linear):
        raise ConfigError(
            f"'strategy.head_fit': logreg fits the output layer, but {type(model).__name__}'s "
            f"classifier is {type(layer).__name__}, not one Linear layer; use head_fit: train"
        )
    return layer


def probe_weights(
    feats: np.ndarray, labels: np.ndarray, outputs: int, num_classes: int, *, C: float,
    balanced: bool, max_iter: int = 5000, sigmoid_pair: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (outputs, D), bias (outputs,)) of an L2 logistic regression on standardised
    ``feats`` with the standardisation folded in, laid out for an output layer of ``outputs``
    logits: 1 (sigmoid), 2 for two classes (softmax of [-z/2, z/2] = sigmoid(z)) or one per class;
    a sigmoid pair gets [-z, z] (σ(z) / (σ(-z) + σ(z)) = σ(z), and its loss is the regression's)."""
    scaler = StandardScaler().fit(feats)
    clf = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced" if balanced else None)
    clf.fit(scaler.transform(feats), labels)
    coef = clf.coef_ / scaler.scale_  # (1 or K, D) on the raw features
    bias = clf.intercept_ - coef @ scaler.mean_
    if len(clf.classes_) != num_classes:
        raise ConfigError(
            f"'strategy.head_fit': the training set has {len(clf.classes_)} of {num_classes} "
            "classes; a logistic regression cannot fit the missing ones"
        )
    if num_classes == 2 and outputs == 2:
        half = 1.0 if sigmoid_pair else 0.5
        coef, bias = np.concatenate([-coef * half, coef * half]), np.concatenate([-bias * half, bias * half])
    elif coef.shape[0] != outputs:
        raise ConfigError(
            f"'strategy.head_fit': the output layer has {outputs} outputs for {num_classes} classes"
        )
    return coef.astype(np.float32), bias.astype(np.float32)


def fit_probe(model: nn.Module, data: TransferData, env: TrainEnv, *, C: float,
              class_weight: ClassWeight) -> StageResult:
    """Freeze all but the output layer and set it to the logistic regression fitted on the
    cached ``pre_logits`` features of ``data.train``."""
    report = freeze(model, FreezeConfig(trainable_layers=1))
    layer = output_layer(model)
    spec = FeaturesStrategy(layer="pre_logits", classifier="logreg", C=C)
    feats = extract_features(model, data.train[0], spec, input_norm=env.input_norm,
                             device=env.device, cache=env.cache)
    weight, bias = probe_weights(feats, data.train[1], layer.out_features, env.num_classes, C=C,
                                 balanced=class_weight is ClassWeight.balanced,
                                 sigmoid_pair=isinstance(layer, SigmoidPairLinear))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(bias))
        elif np.any(bias):
            raise ConfigError("'strategy.head_fit': the output layer has no bias; use head_fit: train")
    reason = (f"output layer fitted as an L2 logistic regression (lbfgs, C={C:g}) on cached "
              f"'pre_logits' features of {len(feats)} images")
    return StageResult("head", "sklearn", reason, report)
