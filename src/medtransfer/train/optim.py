"""Optimizer and learning-rate scheduler settings, and the torch objects built from them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError
from medtransfer.train.callbacks import check_monitor, require_metric
from medtransfer.train.keras_optim import (
    KERAS_DEFAULTS,
    KerasAdagrad,
    KerasAdam,
    KerasPlateau,
    KerasRMSprop,
    KerasSGD,
)

__all__ = [
    "OptimizerConfig",
    "OptimizerName",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerName",
    "build_optimizer",
    "build_scheduler",
    "check_layer_decay",
    "layer_decay_groups",
    "step_scheduler",
    "time_decay",
]

Scheduler = LRScheduler | ReduceLROnPlateau


class OptimizerName(StrEnum):
    adam = "adam"
    adamw = "adamw"
    adagrad = "adagrad"
    sgd = "sgd"
    rmsprop = "rmsprop"


class SchedulerName(StrEnum):
    none = "none"
    plateau = "plateau"
    step = "step"
    cosine = "cosine"


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"'{key}': got {value!r}; allowed: {allowed}")


def _coerce_enum(obj: Any, key: str, enum_type: type[Enum]) -> None:
    value = getattr(obj, key)
    if not isinstance(value, enum_type):
        try:
            object.__setattr__(obj, key, enum_type(value))
        except ValueError:
            allowed = ", ".join(str(m.value) for m in enum_type)
            raise _fail(f"{obj._section}.{key}", value, allowed) from None


def _only_for(obj: Any, applies: dict[str, tuple[Enum, ...]]) -> None:
    """Refuse a non-default setting the chosen algorithm would silently ignore."""
    defaults = {f.name: f.default for f in dataclasses.fields(obj)}
    for key, names in applies.items():
        value = getattr(obj, key)
        if obj.name not in names and value != defaults[key]:
            used_by = ", ".join(n.value for n in names)
            raise ConfigError(
                f"'{obj._section}.{key}': got {value!r}, but it is only used by {used_by} "
                f"({obj._section}.name is '{obj.name.value}'); remove it or change the name"
            )


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer settings. ``eps``, ``initial_accumulator_value`` and ``alpha`` left null take
    the framework's default for the chosen optimizer: PyTorch's, or Keras's under the training's
    ``compat: keras`` (eps 1e-7, Adagrad's accumulator 0.1, RMSprop's rho 0.9), which also runs
    Keras's update rules (:mod:`medtransfer.train.keras_optim`).

    ``implementation``: torch's ``auto`` choice for the device (a loop over tensors on CPU),
    ``for_loop``, ``foreach``, or ``fused`` (one kernel per step: on a CPU with large dense
    layers several times faster than the loop; not for rmsprop). The results of ``fused``
    differ from the loop's in the last bits (about 1e-8 after tens of steps), so changing it
    changes a run's numbers slightly; each is deterministic on CPU.

    ``decay``: Keras's time-based decay (``Adam(lr, decay=...)``): the step after ``k`` optimizer
    steps uses ``lr / (1 + decay * k)``; 0 (default) is off. It replaces the epoch scheduler, so
    it needs ``scheduler.name: none`` without warm-up.
    """

    name: OptimizerName = OptimizerName.adam  # the torch optimizer
    lr: float = 1e-3  # the (initial) learning rate
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    momentum: float = 0.0  # sgd / rmsprop momentum
    nesterov: bool = False  # sgd: Nesterov momentum
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw moment decay rates
    eps: float | None = None  # the denominator's epsilon (null: the framework's, 1e-8 / Keras 1e-7)
    # adagrad's starting accumulator (null: the framework's, torch 0 / Keras 0.1)
    initial_accumulator_value: float | None = None
    alpha: float | None = None  # rmsprop's decay of the squared mean (null: torch 0.99 / Keras rho 0.9)
    implementation: Literal["auto", "for_loop", "foreach", "fused"] = "auto"
    decay: float = 0.0  # Keras time-based decay per step: lr / (1 + decay * steps); 0 = off
    # layer-wise lr decay (BEiT / timm recipe for fine-tuning ViTs): layer k of L (timm's grouping:
    # stem, each block, head) trains at lr × layer_decay^(L-k); null = off
    layer_decay: float | None = None

    _section = "optimizer"

    def __post_init__(self) -> None:
        _coerce_enum(self, "name", OptimizerName)
        o = OptimizerName
        _only_for(
            self,
            {
                "momentum": (o.sgd, o.rmsprop),
                "nesterov": (o.sgd,),
                "betas": (o.adam, o.adamw),
                "eps": (o.adam, o.adamw, o.adagrad, o.rmsprop),
                "initial_accumulator_value": (o.adagrad,),
                "alpha": (o.rmsprop,),
            },
        )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise _fail("optimizer.lr", self.lr, "a finite number > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise _fail("optimizer.weight_decay", self.weight_decay, "a finite number >= 0")
        if not 0.0 <= self.momentum < 1.0:
            raise _fail("optimizer.momentum", self.momentum, "a number in [0, 1)")
        if self.nesterov and self.momentum <= 0:
            raise ConfigError(
                "'optimizer.nesterov': got true with optimizer.momentum "
                f"{self.momentum!r}; Nesterov momentum needs momentum > 0 (e.g. 0.9)"
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise _fail("optimizer.betas", self.betas, "two numbers in [0, 1)")
        if self.eps is not None and not (math.isfinite(self.eps) and self.eps > 0):
            raise _fail("optimizer.eps", self.eps, "null (torch default) or a number > 0")
        if not (math.isfinite(self.decay) and self.decay >= 0):
            raise _fail("optimizer.decay", self.decay, "a finite number >= 0 (0: off)")
        iav = self.initial_accumulator_value
        if iav is not None and not (math.isfinite(iav) and iav >= 0):
            raise _fail("optimizer.initial_accumulator_value", iav, "null or a number >= 0")
        if self.alpha is not None and not 0.0 < self.alpha < 1.0:
            raise _fail("optimizer.alpha", self.alpha, "null or a number in (0, 1)")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise _fail("optimizer.layer_decay", self.layer_decay, "null (off) or a number in (0, 1]")
        check_choice("optimizer.implementation", self.implementation,
                     ("auto", "for_loop", "foreach", "fused"))
        if self.implementation == "fused" and self.name is OptimizerName.rmsprop:
            raise ConfigError("'optimizer.implementation': got 'fused', but torch has no fused "
                              "rmsprop; allowed for rmsprop: auto, for_loop, foreach")


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-epoch learning-rate schedule.

    ``plateau`` multiplies the lr by ``factor`` after ``patience`` epochs without improvement of
    ``monitor``; ``step`` by ``gamma`` every ``step_size`` epochs; ``cosine`` anneals to ``min_lr``
    over ``t_max`` epochs (default: the epochs after warm-up). ``warmup_epochs`` ramps the lr
    linearly from ``lr / (warmup_epochs + 1)`` up to ``lr`` first (not with ``plateau``).
    """

    name: SchedulerName = SchedulerName.none  # none, plateau, step or cosine
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"  # plateau: whether lower (min) or higher (max) monitor is better
    factor: float = 0.1
    patience: int = 10
    min_lr: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    t_max: int | None = None
    warmup_epochs: int = 0

    _section = "scheduler"

    def __post_init__(self) -> None:
        _coerce_enum(self, "name", SchedulerName)
        s = SchedulerName
        _only_for(
            self,
            {
                "monitor": (s.plateau,),
                "mode": (s.plateau,),
                "factor": (s.plateau,),
                "patience": (s.plateau,),
                "min_lr": (s.plateau, s.cosine),
                "step_size": (s.step,),
                "gamma": (s.step,),
                "t_max": (s.cosine,),
                "warmup_epochs": (s.none, s.step, s.cosine),
            },
        )
        check_monitor("scheduler.monitor", self.monitor, self.mode, "scheduler.mode")
        if not 0.0 < self.factor < 1.0:
            raise _fail("scheduler.factor", self.factor, "a number in (0, 1)")
        if self.patience < 0:
            raise _fail("scheduler.patience", self.patience, "an integer >= 0")
        if not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            raise _fail("scheduler.min_lr", self.min_lr, "a number >= 0")
        if self.step_size < 1:
            raise _fail("scheduler.step_size", self.step_size, "an integer >= 1")
        if not 0.0 < self.gamma <= 1.0:
            raise _fail("scheduler.gamma", self.gamma, "a number in (0, 1]")
        if self.t_max is not None and self.t_max < 1:
            raise _fail("scheduler.t_max", self.t_max, "null (the epochs after warm-up) or >= 1")
        if self.warmup_epochs < 0:
            raise _fail("scheduler.warmup_epochs", self.warmup_epochs, "an integer >= 0")


_IMPLEMENTATION: dict[str, dict[str, bool]] = {
    "auto": {}, "for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True},
}


def build_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], cfg: OptimizerConfig,
    compat: str | None = None, *, model: nn.Module | None = None,
) -> Optimizer:
    """The torch optimizer ``cfg`` describes, over ``params`` (tensors or param groups), with
    ``cfg.decay`` applied after each step (see :func:`time_decay`); with ``cfg.layer_decay``,
    over the trainable parameters of ``model`` grouped by layer (see :func:`layer_decay_groups`);
    ``compat: keras`` builds Keras's algorithm with Keras's defaults
    (:mod:`medtransfer.train.keras_optim`)."""
    if cfg.layer_decay is not None:
        if model is None:
            raise ConfigError("'optimizer.layer_decay': set, but the optimizer was given no model to "
                              "group into layers")
        params = layer_decay_groups(model, cfg)
    opt = _build_keras(params, cfg) if compat == "keras" else _build(params, cfg)
    return time_decay(opt, cfg.decay) if cfg.decay > 0 else opt


def _build_keras(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 cfg: OptimizerConfig) -> Optimizer:
    """Keras 3's optimizer: its update rule, its defaults where ``cfg`` leaves them null."""
    groups: list[Any] = list(params)
    if not groups:
        raise ConfigError("build_optimizer: no parameters to optimize (is every parameter frozen?)")
    if cfg.implementation != "auto":
        raise ConfigError(f"'optimizer.implementation': got {cfg.implementation!r} with compat keras, "
                          "whose optimizers have one implementation; allowed: auto")
    k = KERAS_DEFAULTS
    eps = k["eps"] if cfg.eps is None else cfg.eps
    name, o = cfg.name, OptimizerName
    if name in (o.adam, o.adamw):
        return KerasAdam(groups, lr=cfg.lr, betas=cfg.betas, eps=eps, weight_decay=cfg.weight_decay)
    if name is o.adagrad:
        iav = k["initial_accumulator_value"] if cfg.initial_accumulator_value is None \
            else cfg.initial_accumulator_value
        return KerasAdagrad(groups, lr=cfg.lr, initial_accumulator_value=iav, eps=eps,
                            weight_decay=cfg.weight_decay)
    if name is o.rmsprop:
        rho = k["rho"] if cfg.alpha is None else cfg.alpha
        return KerasRMSprop(groups, lr=cfg.lr, rho=rho, momentum=cfg.momentum, eps=eps,
                            weight_decay=cfg.weight_decay)
    return KerasSGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                    weight_decay=cfg.weight_decay)


def _groupable(model: nn.Module) -> nn.Module:
    """The model inside wrappers (a cached-activation tail's ``model``, DDP's ``module``) that
    has timm's ``group_matcher``; ConfigError naming the key when there is none."""
    inner: Any = model
    while not hasattr(inner, "group_matcher"):
        inner = getattr(inner, "model", None) or getattr(inner, "module", None)
        if not isinstance(inner, nn.Module):
            raise ConfigError(
                f"'optimizer.layer_decay': model {type(model).__name__} cannot be grouped into "
                "layers (it has no timm group_matcher); use a timm: model (ViT, ResNet, "
                "EfficientNet, ...) or remove layer_decay")
    return inner


def check_layer_decay(model: nn.Module) -> None:
    """ConfigError naming ``optimizer.layer_decay`` unless ``model`` can be grouped by layer."""
    _groupable(model)


def layer_decay_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict[str, Any]]:
    """Param groups of ``model``'s trainable parameters, one per layer, each with the learning rate
    ``cfg.lr × layer_decay^(L-k)`` (timm's ``param_groups_layer_decay``: layers by the model's
    ``group_matcher``, the head last) and ``cfg.weight_decay`` for every parameter alike."""
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(_groupable(model), weight_decay=cfg.weight_decay,
                                      weight_decay_exclude_1d=False, layer_decay=cfg.layer_decay or 1.0)
    return [{"params": g["params"], "weight_decay": g["weight_decay"], "lr": cfg.lr * g["lr_scale"]}
            for g in groups]


def time_decay(optimizer: Optimizer, decay: float) -> Optimizer:
    """Keras's time-based decay: after ``k`` steps each group's ``lr`` is its initial ``lr /
    (1 + decay * k)``. The initial lr and ``k`` live in the param groups (``decay_base_lr``,
    ``decay_steps``), so the optimizer's ``state_dict`` resumes the decay where it stopped."""
    for group in optimizer.param_groups:
        group.setdefault("decay_base_lr", group["lr"])
        group.setdefault("decay_steps", 0)

    def after_step(opt: Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            group["decay_steps"] += 1
            group["lr"] = group["decay_base_lr"] / (1.0 + decay * group["decay_steps"])

    optimizer.register_step_post_hook(after_step)
    return optimizer


def _build(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], cfg: OptimizerConfig) -> Optimizer:
    """The bare torch optimizer, without decay."""
    groups: list[Any] = list(params)
    if not groups:
        raise ConfigError(
            "build_optimizer: no parameters to optimize (is every parameter frozen?)"
        )
    eps: dict[str, Any] = {} if cfg.eps is None else {"eps": cfg.eps}
    common: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                              **_IMPLEMENTATION[cfg.implementation]}
    name = cfg.name
    if name is OptimizerName.adam:
        return torch.optim.Adam(groups, betas=cfg.betas, **common, **eps)
    if name is OptimizerName.adamw:
        return torch.optim.AdamW(groups, betas=cfg.betas, **common, **eps)
    if name is OptimizerName.adagrad:
        return torch.optim.Adagrad(
            groups, initial_accumulator_value=cfg.initial_accumulator_value or 0.0, **common, **eps
        )
    if name is OptimizerName.sgd:
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if name is OptimizerName.rmsprop:
        return torch.optim.RMSprop(
            groups, alpha=0.99 if cfg.alpha is None else cfg.alpha, momentum=cfg.momentum,
            **common, **eps
        )
    raise AssertionError(f"unhandled optimizer {name!r}")


def build_scheduler(optimizer: Optimizer, cfg: SchedulerConfig, epochs: int,
                    compat: str | None = None) -> Scheduler | None:
    """The per-epoch lr scheduler ``cfg`` describes for a run of ``epochs``, or None;
    ``compat: keras`` makes ``plateau`` Keras's (:class:`KerasPlateau`)."""
    warmup = cfg.warmup_epochs
    if warmup and warmup >= epochs:
        raise ConfigError(
            f"'scheduler.warmup_epochs': got {warmup}, but training runs only {epochs} epochs; "
            f"allowed: fewer than {epochs}"
        )
    main: Scheduler | None
    if cfg.name is SchedulerName.plateau and compat == "keras":
        return KerasPlateau(optimizer, mode=cfg.mode, factor=cfg.factor, patience=cfg.patience,
                            min_lr=cfg.min_lr)
    if cfg.name is SchedulerName.plateau:
        return ReduceLROnPlateau(
            optimizer, mode=cfg.mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
        )
    if cfg.name is SchedulerName.step:
        main = StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif cfg.name is SchedulerName.cosine:
        t_max = cfg.t_max if cfg.t_max is not None else max(epochs - warmup, 1)
        main = CosineAnnealingLR(optimizer, T_max=t_max, eta_min=cfg.min_lr)
    else:
        main = None
    if not warmup:
        return main
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    if main is None:
        return ramp
    return SequentialLR(optimizer, schedulers=[ramp, main], milestones=[warmup])


def step_scheduler(
    scheduler: Scheduler | None, cfg: SchedulerConfig, metrics: dict[str, float]
) -> None:
    """Advance ``scheduler`` one epoch; plateau reads ``cfg.monitor`` from ``metrics``."""
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(require_metric("scheduler.monitor", cfg.monitor, metrics))
    else:
        scheduler.step()
