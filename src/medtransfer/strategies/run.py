"""Run one transfer strategy on a model and a target data set: the study runner's entry point."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medtransfer.data import ImageCache
from medtransfer.errors import ConfigError
from medtransfer.strategies.cached import (
    CachePlan,
    InputNorm,
    fit_on_activations,
    plan_cache,
    prefix_activations,
    prefix_key,
    prefix_signature,
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
from medtransfer.train import Callback, FitResult, TrainConfig, fit, predict_proba
from medtransfer.train.checkpoint import to_plain
from medtransfer.transfer import FreezeConfig, FreezeReport, freeze, train_mode

Split = tuple[np.ndarray, np.ndarray]
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class StageResult:
    """One training stage: ``path`` is ``cached`` (tail on cached activations), ``full`` or
    ``sklearn``; ``reason`` says why (e.g. why caching did not apply)."""

    name: str
    path: str
    reason: str
    freeze: FreezeReport | None = None
    fit: FitResult | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "path": self.path, "reason": self.reason}
        if self.freeze is not None:
            out.update(trainable_params=self.freeze.trainable_params,
                       frozen_params=self.freeze.frozen_params)
        if self.fit is not None:
            out.update(best_epoch=self.fit.best_epoch, epochs_run=len(self.fit.history),
                       stop_reason=self.fit.stop_reason.value, seconds=self.fit.seconds,
                       images_per_second=self.fit.images_per_second)
        return out


@dataclass
class StrategyResult:
    """Probabilities per evaluated set (``val`` when given, then every test set), the epoch
    history of all stages (rows carry ``stage``), the stages, and the trained model/estimator."""

    kind: str
    probabilities: dict[str, np.ndarray]
    history: list[dict[str, Any]]
    stages: list[StageResult]
    model: nn.Module
    estimator: Any | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        return [f"{s.name}: {s.path} — {s.reason}" for s in self.stages]

    def summary(self) -> dict[str, Any]:
        """Plain data for result.json."""
        return to_plain({"kind": self.kind, "seconds": self.seconds,
                         "stages": [s.summary() for s in self.stages], **self.extra})


def train_stage(
    name: str,
    model: nn.Module,
    freeze_cfg: FreezeConfig,
    train_cfg: TrainConfig,
    cache_cfg: CacheConfig,
    train: Split,
    val: Split | None,
    *,
    seed: int,
    out_dir: Path,
    num_classes: int,
    device: str | torch.device = "cpu",
    augment: Augment | None = None,
    input_norm: InputNorm | None = None,
    config_for_checkpoint: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    disk_cache: ImageCache | None = None,
) -> StageResult:
    """Freeze ``model`` as ``freeze_cfg`` says and train it — on cached activations of the
    frozen prefix when that is exact, otherwise the full model (the reason is recorded).
    With ``disk_cache`` (and ``cache_cfg.disk``) the activations are read from / kept there."""
    report = freeze(model, freeze_cfg)
    n_images = len(train[1]) + (0 if val is None else len(val[1]))
    plan = (
        plan_cache(model, train[0][:2], augment=augment, input_norm=input_norm,
                   train_mode=train_mode, device=device, n_images=n_images,
                   max_bytes=cache_cfg.max_gib * 2**30)
        if cache_cfg.enabled else CachePlan(None, "caching is off (cache.enabled: false)")
    )
    if plan.split is None:
        res = fit(model, train, val, train_cfg, seed=seed, out_dir=out_dir, num_classes=num_classes,
                  augment=augment, input_norm=input_norm, device=device, train_mode=train_mode,
                  config_for_checkpoint=config_for_checkpoint, callbacks=callbacks)
        return StageResult(name, "full", plan.reason, report, res)
    dev = torch.device(device)
    split = plan.split
    store = disk_cache if cache_cfg.disk else None
    hits = 0 if store is None else store.hits
    signature = "" if store is None else prefix_signature(model, split, input_norm, dev)

    def activations(x: np.ndarray) -> Tensor:
        def compute() -> Tensor:
            return prefix_activations(split, x, batch_size=train_cfg.batch_size,
                                      input_norm=input_norm, device=dev)

        if store is None:
            return compute()
        array = store.get_or_compute_array(prefix_key(signature, x), lambda: compute().cpu().numpy())
        return torch.from_numpy(array)

    acts = [activations(x) for x in (train[0], *(() if val is None else (val[0],)))]
    read = 0 if store is None else store.hits - hits
    reason = plan.reason.replace(
        "computed once", {0: "computed once", len(acts): "read from the disk cache"}.get(
            read, "computed once (partly read from the disk cache)"))
    res = fit_on_activations(
        model, plan.split.tail, acts[0], train[1], None if val is None else (acts[1], val[1]),
        train_cfg, seed=seed, out_dir=out_dir, num_classes=num_classes, train_mode=train_mode,
        device=dev, config_for_checkpoint=config_for_checkpoint, callbacks=callbacks,
    )
    return StageResult(name, "cached", reason, report, res)


def _evaluated(val: Split | None, tests: Mapping[str, Split]) -> dict[str, Split]:
    return {**({"val": val} if val is not None and len(val[1]) else {}), **tests}


def _history(stages: list[StageResult]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in stages:
        if s.fit is not None:
            rows += [{"stage": s.name, "epoch": i + 1, **row} for i, row in enumerate(s.fit.history)]
    return rows


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def run_strategy(
    cfg: StrategyConfig,
    model: nn.Module,
    train: Split,
    val: Split | None,
    tests: Mapping[str, Split],
    *,
    num_classes: int,
    seed: int,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    augment: Augment | None = None,
    input_norm: InputNorm | None = None,
    disk_cache: ImageCache | None = None,
    config_for_checkpoint: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> StrategyResult:
    """Transfer ``model`` (already built and initialised) to ``train`` by strategy ``cfg``.

    Splits are (uint8/uint16 (N, C, H, W) images, integer labels). Writes ``history.csv`` and
    ``best.pt``/``last.pt`` into ``out_dir`` (finetune: stage 1 in ``out_dir/head``, and a
    ``history.csv`` of both stages with a ``stage`` column). ``augment`` is applied to training
    batches (and turns off activation caching). ``callbacks`` (e.g. tracking) join every
    training stage. ``disk_cache`` keeps features and frozen-prefix activations between runs.
    Returns probabilities for ``val`` and each test.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = dict(num_classes=num_classes, device=device, augment=augment,
                                  input_norm=input_norm, config_for_checkpoint=config_for_checkpoint,
                                  callbacks=callbacks, disk_cache=disk_cache)
    if isinstance(cfg, FeaturesStrategy):
        if augment is not None:
            raise ConfigError(
                "'strategy.kind': features computes each image's features once, so training "
                "augmentation cannot apply; switch augmentation off or use freeze / finetune"
            )
        return _run_features(cfg, model, train, val, tests, num_classes=num_classes, seed=seed,
                             out=out, device=device, input_norm=input_norm, cache=disk_cache,
                             config_for_checkpoint=config_for_checkpoint, t0=t0)
    if isinstance(cfg, ScratchStrategy):
        stages = [train_stage("scratch", model, FreezeConfig(), cfg.train, CacheConfig(), train, val,
                              seed=seed, out_dir=out, **common)]
    elif isinstance(cfg, FreezeStrategy):
        stages = [train_stage("freeze", model, cfg.freeze, cfg.train, cfg.cache, train, val,
                              seed=seed, out_dir=out, **common)]
    elif isinstance(cfg, FinetuneStrategy):
        head = train_stage("head", model, cfg.head_freeze, cfg.head, cfg.cache, train, val,
                           seed=seed, out_dir=out / "head", **common)
        tune = train_stage("finetune", model, cfg.unfreeze, cfg.finetune, cfg.cache, train, val,
                           seed=seed + 1, out_dir=out, **common)
        stages = [head, tune]
    else:
        raise TypeError(f"run_strategy: unknown strategy config {type(cfg).__name__}")
    history = _history(stages)
    if len(stages) > 1:
        _write_history(out / "history.csv", history)
    size = (cfg.finetune if isinstance(cfg, FinetuneStrategy) else cfg.train).batch_size
    probabilities = {
        name: predict_proba(model, x, batch_size=size, device=device, input_norm=input_norm)
        for name, (x, _) in _evaluated(val, tests).items()
    }
    return StrategyResult(cfg.kind, probabilities, history, stages, model,
                          seconds=time.perf_counter() - t0)


def _head_outputs(model: nn.Module, num_classes: int) -> int:
    """Logits of the model's own output layer (1 = single sigmoid logit), else the default."""
    get = getattr(model, "get_classifier", None)
    width = getattr(get(), "out_features", None) if callable(get) else None
    return int(width) if isinstance(width, int) else (1 if num_classes == 2 else num_classes)


def _run_features(
    cfg: FeaturesStrategy,
    model: nn.Module,
    train: Split,
    val: Split | None,
    tests: Mapping[str, Split],
    *,
    num_classes: int,
    seed: int,
    out: Path,
    device: str | torch.device,
    input_norm: InputNorm | None,
    cache: ImageCache | None,
    config_for_checkpoint: dict[str, Any] | None,
    t0: float,
) -> StrategyResult:
    """The backbone is frozen and only extracts features; an estimator learns from them."""
    for p in model.parameters():
        p.requires_grad_(False)
    hits = cache.hits if cache is not None else 0

    def feats(x: np.ndarray) -> np.ndarray:
        return extract_features(model, x, cfg, input_norm=input_norm, device=device, cache=cache)

    f_train = feats(train[0])
    evaluated = {name: (feats(x), y) for name, (x, y) in _evaluated(val, tests).items()}
    extra = {"features_dim": int(f_train.shape[1]), "layer": cfg.layer, "classifier": cfg.classifier,
             "feature_cache_hits": (cache.hits - hits) if cache is not None else 0}
    if cfg.classifier == "mlp":
        outputs = _head_outputs(model, num_classes)
        head, res = fit_mlp(f_train, train[1], evaluated.get("val"), cfg.mlp, outputs=outputs,
                            num_classes=num_classes, seed=seed, out_dir=out, device=device,
                            config_for_checkpoint=config_for_checkpoint)
        stage = StageResult("mlp", "cached", f"MLP on cached '{cfg.layer}' features", None, res)
        probabilities = {name: mlp_proba(head, f, device) for name, (f, _) in evaluated.items()}
        return StrategyResult(cfg.kind, probabilities, _history([stage]), [stage], model, head,
                              time.perf_counter() - t0, extra)
    estimator = make_estimator(cfg, seed, train[1])
    estimator.fit(f_train, train[1])
    probabilities = {name: sklearn_proba(estimator, f, num_classes) for name, (f, _) in evaluated.items()}
    how = ("Platt scaling (sigmoid) of LinearSVC's one-vs-rest decision function"
           if cfg.classifier == "svm" and cfg.calibration == "sigmoid" else cfg.classifier)
    stage = StageResult(cfg.classifier, "sklearn", f"{how} on '{cfg.layer}' features")
    return StrategyResult(cfg.kind, probabilities, [], [stage], model, estimator,
                          time.perf_counter() - t0, extra)
