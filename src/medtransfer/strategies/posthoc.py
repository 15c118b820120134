"""Apply ``evaluate`` (temperature scaling, test-time augmentation; :mod:`medtransfer.calibration`)
to a strategy's trained network: its scores on every evaluated set are computed once per view,
the temperature is fitted on the validation set, and the strategy's probabilities are replaced by
the post-hoc ones. Off, nothing is computed and nothing changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medtransfer.calibration import (
    EvaluateConfig,
    calibration_metrics,
    fit_temperature,
    posthoc_log_proba,
    tta_views,
)
from medtransfer.config import InputNorm
from medtransfer.errors import ConfigError, DataError
from medtransfer.strategies.base import StrategyResult
from medtransfer.strategies.config import FeaturesStrategy, StrategyConfig
from medtransfer.strategies.features import layer_features
from medtransfer.strategies.linear_head import FeatureHead, FeatureModel, classifier_arrays
from medtransfer.train import Arrays, TrainEnv
from medtransfer.train.batches import batches, input_norm_tensors, nhwc
from medtransfer.train.precision import resolve_precision

__all__ = ["Posthoc", "apply_posthoc", "collect_scores"]


@dataclass
class Posthoc:
    """What ``evaluate`` added to a cell: metrics per evaluated set (``ece``, ``brier`` and their
    ``_uncalibrated`` values; ``temperature`` on ``val``) and the record result.json keeps, which
    predict and export apply (``posthoc``: ``tta``, ``temperature``). Empty when off."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def collect_scores(net: nn.Module, images: np.ndarray, tta: Sequence[str], *, batch_size: int,
                   device: torch.device, input_norm: InputNorm | None, precision: str = "fp32",
                   channels_last: bool = False) -> np.ndarray:
    """(views, N, C) float32 outputs of ``net`` for ``images`` and each TTA view of them, in eval
    mode without gradients (batches, normalisation and precision as ``predict_proba``)."""
    amp = resolve_precision(precision, device)
    mean, std = input_norm_tensors(input_norm, images.shape[1], device)
    net.to(device).eval()
    out = []
    with torch.no_grad(), nhwc(net, channels_last) as layout:
        for _, xb in batches(images, np.arange(len(images)), batch_size, device):
            with amp.autocast():
                views = [net(v.contiguous(memory_format=layout)).float()
                         for v in tta_views((xb - mean) / std, tta)]
            out.append(torch.stack(views).cpu().numpy())
    return np.concatenate(out, axis=1)


def _predictor(strategy: StrategyConfig, res: StrategyResult) -> tuple[nn.Module, str, bool, int]:
    """The network a strategy trained (images → scores), with the precision, layout and batch
    size its probabilities were computed with."""
    if isinstance(strategy, FeaturesStrategy):
        head = res.estimator
        if not isinstance(head, nn.Module):
            arrays = classifier_arrays(head, int(res.extra["features_dim"]))
            if arrays is None:
                raise ConfigError("'evaluate': a features classifier with isotonic calibration cannot "
                                  "be rebuilt as a network to evaluate again; use calibration: sigmoid")
            head = FeatureHead(arrays)
        net = FeatureModel(res.model, layer_features(res.model, strategy.layer, strategy.pool), head)
        return net.eval(), strategy.precision, strategy.channels_last, strategy.batch_size
    last = getattr(strategy, "finetune", None) or strategy.train  # type: ignore[union-attr]
    return res.model, last.precision, last.channels_last, last.batch_size


def _proba(scores: np.ndarray, temperature: float) -> np.ndarray:
    return posthoc_log_proba(torch.from_numpy(scores).double(), temperature).exp().numpy()


def apply_posthoc(cfg: EvaluateConfig, strategy: StrategyConfig, res: StrategyResult,
                  sets: Mapping[str, Arrays], env: TrainEnv) -> Posthoc:
    """Replace ``res.probabilities`` of every set in ``sets`` (``val`` and the tests) by the
    post-hoc ones ``cfg`` asks for; returns the metrics and record to add."""
    if not cfg.on:
        return Posthoc()
    net, precision, channels_last, batch_size = _predictor(strategy, res)
    scores = {name: collect_scores(net, x, cfg.tta, batch_size=batch_size, device=env.device,
                                   input_norm=env.input_norm, precision=precision,
                                   channels_last=channels_last)
              for name, (x, _) in sets.items()}
    temperature = 1.0
    calibrate = cfg.calibration == "temperature"
    if calibrate:
        if "val" not in sets:
            raise DataError("'evaluate.calibration': temperature is fitted on the validation images, "
                            "but this cell has none; give the target's split a val_fraction")
        temperature = fit_temperature(scores["val"], sets["val"][1])
    out = Posthoc(record={"posthoc": {"tta": list(cfg.tta), "temperature": temperature}})
    for name, s in scores.items():
        proba = _proba(s, temperature)
        if calibrate:
            before = calibration_metrics(sets[name][1], _proba(s, 1.0))
            out.metrics[name] = {**calibration_metrics(sets[name][1], proba),
                                 **{f"{k}_uncalibrated": v for k, v in before.items()}}
        res.probabilities[name] = proba
    if calibrate:
        out.metrics["val"]["temperature"] = temperature
    return out
