"""Run one transfer strategy on a model and a target data set: the study's entry point.

Each ``kind`` has a small runner class here, registered with ``@register_strategy``: scratch,
freeze and finetune train the model itself in stages; features fits a classifier on the
frozen backbone's features."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtransfer.csvfile import write_csv
from medtransfer.errors import ConfigError
from medtransfer.freezing import FreezeConfig
from medtransfer.sigmoid_pair import has_sigmoid_pair
from medtransfer.strategies.base import (
    Stage,
    StageResult,
    StrategyResult,
    TransferData,
)
from medtransfer.strategies.config import (
    CacheConfig,
    FeaturesStrategy,
    FinetuneStrategy,
    FreezeStrategy,
    ScratchStrategy,
    StrategyConfig,
)
from medtransfer.strategies.features import (
    extract_features,
    fit_mlp,
    make_estimator,
    mlp_proba,
    sklearn_proba,
)
from medtransfer.strategies.linear_head import BACKBONE_FILE, classifier_arrays, save_head
from medtransfer.strategies.probe import fit_probe
from medtransfer.strategies.registry import register_strategy, strategy_for
from medtransfer.strategies.stage import train_stage
from medtransfer.train import Arrays, Augment, TrainEnv, predict_proba
from medtransfer.train.precision import resolve_precision

__all__ = ["Features", "Finetune", "Freeze", "Scratch", "run_strategy"]


def run_strategy(
    cfg: StrategyConfig,
    model: nn.Module,
    train: Arrays,
    val: Arrays | None,
    tests: Mapping[str, Arrays],
    env: TrainEnv,
    *,
    augment: Augment | None = None,
) -> StrategyResult:
    """Transfer ``model`` (already built and initialised) to ``train`` by strategy ``cfg``.

    Sets are (uint8/uint16 (N, C, H, W) images, integer labels). Writes ``history.csv`` and
    ``best.pt``/``last.pt`` into ``env.out_dir`` (finetune: stage 1 in ``out_dir/head``, and a
    ``history.csv`` of both stages with a ``stage`` column). ``augment`` is applied to training
    batches (and turns off activation caching). ``env.callbacks`` (e.g. tracking) join every
    training stage; ``env.cache`` keeps features and frozen-prefix activations between runs.
    Returns probabilities for ``val`` and each test.
    """
    env.out_dir.mkdir(parents=True, exist_ok=True)
    return strategy_for(cfg).run(model, TransferData(train, val, tests, augment), env)


def _history(stages: list[StageResult]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in stages:
        if s.fit is not None:
            rows += [{"stage": s.name, "epoch": i + 1, **row} for i, row in enumerate(s.fit.history)]
    return rows


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    write_csv(path, rows, columns, float_format=None, nan="nan")


class _Staged:
    """A strategy that trains the model itself, stage after stage, then predicts with the last
    stage's batch size."""

    cfg: ScratchStrategy | FreezeStrategy | FinetuneStrategy

    def stages(self, env: TrainEnv) -> list[tuple[Stage, TrainEnv]]:
        raise NotImplementedError

    def run_stage(self, stage: Stage, model: nn.Module, data: TransferData,
                  env: TrainEnv) -> StageResult:
        return train_stage(stage, model, data, env)

    def run(self, model: nn.Module, data: TransferData, env: TrainEnv) -> StrategyResult:
        t0 = time.perf_counter()
        plan = self.stages(env)
        stages = [self.run_stage(stage, model, data, stage_env) for stage, stage_env in plan]
        history = _history(stages)
        if len(stages) > 1:
            _write_history(env.out_dir / "history.csv", history)
        last = plan[-1][0].train
        probabilities = {
            name: predict_proba(model, x, batch_size=last.batch_size, device=env.device,
                                input_norm=env.input_norm, precision=last.precision,
                                channels_last=last.channels_last)
            for name, (x, _) in data.evaluated().items()
        }
        return StrategyResult(self.cfg.kind, probabilities, history, stages, model,
                              seconds=time.perf_counter() - t0)


@register_strategy("scratch", config=ScratchStrategy)
@dataclass(frozen=True)
class Scratch(_Staged):
    """Train everything (the caller built the model without weights)."""

    cfg: ScratchStrategy

    def stages(self, env: TrainEnv) -> list[tuple[Stage, TrainEnv]]:
        return [(Stage("scratch", FreezeConfig(), self.cfg.train, CacheConfig()), env)]


def _head_outputs(model: nn.Module, num_classes: int) -> int:
    """Logits of the model's own output layer (1 = single sigmoid logit), else the default."""
    get = getattr(model, "get_classifier", None)
    width = getattr(get(), "out_features", None) if callable(get) else None
    return int(width) if isinstance(width, int) else (1 if num_classes == 2 else num_classes)


@register_strategy("features", config=FeaturesStrategy)
@dataclass(frozen=True)
class Features:
    """The backbone is frozen and only extracts features; an estimator learns from them."""

    cfg: FeaturesStrategy

    def run(self, model: nn.Module, data: TransferData, env: TrainEnv) -> StrategyResult:
        cfg, cache = self.cfg, env.cache
        if data.augment is not None:
            raise ConfigError(
                "'strategy.kind': features computes each image's features once, so training "
                "augmentation cannot apply; switch augmentation off or use freeze / finetune"
            )
        t0 = time.perf_counter()
        for p in model.parameters():
            p.requires_grad_(False)
        # The backbone as used (pretrained weights, head reset): predict and export rebuild it.
        env.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), env.out_dir / BACKBONE_FILE)
        hits = cache.hits if cache is not None else 0

        def feats(x: np.ndarray) -> np.ndarray:
            return extract_features(model, x, cfg, input_norm=env.input_norm, device=env.device,
                                    cache=cache)

        f_train = feats(data.train[0])
        evaluated = {name: (feats(x), y) for name, (x, y) in data.evaluated().items()}
        extra = {"features_dim": int(f_train.shape[1]), "layer": cfg.layer,
                 "precision": resolve_precision(cfg.precision, env.device, "strategy.precision").name,
                 "classifier": cfg.classifier,
                 "feature_cache_hits": (cache.hits - hits) if cache is not None else 0}
        if cfg.classifier == "mlp":
            # The head sees features, not images: no input normalisation to record with it.
            head, res = fit_mlp(f_train, data.train[1], evaluated.get("val"), cfg.mlp,
                                env.replace(input_norm=None),
                                outputs=_head_outputs(model, env.num_classes),
                                sigmoid_pair=has_sigmoid_pair(model))
            stage = StageResult("mlp", "cached", f"MLP on cached '{cfg.layer}' features", None, res)
            probabilities = {name: mlp_proba(head, f, env.device) for name, (f, _) in evaluated.items()}
            return StrategyResult(cfg.kind, probabilities, _history([stage]), [stage], model, head,
                                  time.perf_counter() - t0, extra)
        estimator = make_estimator(cfg, env.seed, data.train[1])
        estimator.fit(f_train, data.train[1])
        arrays = classifier_arrays(estimator, f_train.shape[1])
        if arrays is not None:
            save_head(arrays, env.out_dir)
        extra["classifier_saved"] = arrays is not None
        probabilities = {name: sklearn_proba(estimator, f, env.num_classes)
                         for name, (f, _) in evaluated.items()}
        how = ("Platt scaling (sigmoid) of LinearSVC's one-vs-rest decision function"
               if cfg.classifier == "svm" and cfg.calibration == "sigmoid" else cfg.classifier)
        stage = StageResult(cfg.classifier, "sklearn", f"{how} on '{cfg.layer}' features")
        return StrategyResult(cfg.kind, probabilities, [], [stage], model, estimator,
                              time.perf_counter() - t0, extra)


@register_strategy("freeze", config=FreezeStrategy)
@dataclass(frozen=True)
class Freeze(_Staged):
    """Train what ``cfg.freeze`` leaves trainable."""

    cfg: FreezeStrategy

    def stages(self, env: TrainEnv) -> list[tuple[Stage, TrainEnv]]:
        return [(Stage("freeze", self.cfg.freeze, self.cfg.train, self.cfg.cache), env)]


@register_strategy("finetune", config=FinetuneStrategy)
@dataclass(frozen=True)
class Finetune(_Staged):
    """A new head on the frozen base — fitted by logistic regression, or trained (in
    ``out_dir/head``) — then the unfrozen model."""

    cfg: FinetuneStrategy

    def stages(self, env: TrainEnv) -> list[tuple[Stage, TrainEnv]]:
        cfg = self.cfg
        return [
            (Stage("head", cfg.head_freeze, cfg.head, cfg.cache), env.replace(out_dir=env.out_dir / "head")),
            (Stage("finetune", cfg.unfreeze, cfg.finetune, cfg.cache), env.replace(seed=env.seed + 1)),
        ]

    def run_stage(self, stage: Stage, model: nn.Module, data: TransferData,
                  env: TrainEnv) -> StageResult:
        if stage.name == "head" and self.cfg.head_fit == "logreg":
            return fit_probe(model, data, env, C=self.cfg.head_C,
                             class_weight=self.cfg.finetune.class_weight)
        return train_stage(stage, model, data, env)


