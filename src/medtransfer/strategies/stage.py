"""One training stage of a strategy: freeze the model, then train it — on cached activations of
the frozen prefix when that is exact, otherwise the full model — and say which path ran and why."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from medtransfer.freezing import freeze, train_mode
from medtransfer.strategies.base import Stage, StageResult, TransferData
from medtransfer.strategies.cached import (
    CachePlan,
    PrefixSplit,
    fit_on_activations,
    plan_cache,
    prefix_activations,
    prefix_key,
    prefix_signature,
)
from medtransfer.train import TrainEnv, fit
from medtransfer.train.batches import nhwc
from medtransfer.train.precision import resolve_precision

__all__ = ["train_stage"]


def train_stage(stage: Stage, model: nn.Module, data: TransferData, env: TrainEnv) -> StageResult:
    """Freeze ``model`` as ``stage.freeze`` says and train it on ``data.train`` (validating on
    ``data.val``) — on cached activations of the frozen prefix when that is exact, otherwise the
    full model (the reason is recorded). With ``env.cache`` (and ``stage.cache.disk``) the
    activations are read from / kept there."""
    report = freeze(model, stage.freeze)
    train, val, cache_cfg = data.train, data.val, stage.cache
    n_images = len(train[1]) + (0 if val is None else len(val[1]))
    plan = (
        plan_cache(model, train[0][:2], augment=data.augment, input_norm=env.input_norm,
                   train_mode=train_mode, device=env.device, n_images=n_images,
                   max_bytes=cache_cfg.max_gib * 2**30)
        if cache_cfg.enabled else CachePlan(None, "caching is off (cache.enabled: false)")
    )
    if plan.split is None:
        res = fit(model, train, val, stage.train, env, augment=data.augment, train_mode=train_mode)
        return StageResult(stage.name, "full", plan.reason, report, res)
    acts, reason = _activations(model, plan.split, data, stage, env, plan.reason)
    res = fit_on_activations(
        model, plan.split.tail, acts[0], train[1], None if val is None else (acts[1], val[1]),
        stage.train, env, train_mode=train_mode,
    )
    return StageResult(stage.name, "cached", reason, report, res)


def _activations(model: nn.Module, split: PrefixSplit, data: TransferData, stage: Stage,
                 env: TrainEnv, reason: str) -> tuple[list[Tensor], str]:
    """The prefix activations of train (and val), computed or read from the disk cache, and
    ``reason`` saying which."""
    store = env.cache if stage.cache.disk else None
    hits = 0 if store is None else store.hits
    precision = resolve_precision(stage.train.precision, env.device, "train.precision").name
    nhwc_on = stage.train.channels_last
    signature = "" if store is None else prefix_signature(model, split, env.input_norm, env.device,
                                                          precision, nhwc_on)

    def activations(x: np.ndarray) -> Tensor:
        def compute() -> Tensor:
            with nhwc(model, nhwc_on):
                return prefix_activations(split, x, batch_size=stage.train.batch_size,
                                          input_norm=env.input_norm, device=env.device,
                                          precision=precision, channels_last=nhwc_on)

        if store is None:
            return compute()
        array = store.get_or_compute_array(prefix_key(signature, x), lambda: compute().cpu().numpy())
        return torch.from_numpy(array)

    images = (data.train[0], *(() if data.val is None else (data.val[0],)))
    acts = [activations(x) for x in images]
    read = 0 if store is None else store.hits - hits
    reason = reason.replace(
        "computed once", {0: "computed once", len(acts): "read from the disk cache"}.get(
            read, "computed once (partly read from the disk cache)"))
    return acts, reason
