"""Keras 3's optimizers and ``ReduceLROnPlateau`` as torch objects (``train.compat: keras``).

The update rules are those of ``keras.optimizers`` (Keras 3.15 sources), step for step:

* ``Adam``: ``m += (g − m)(1 − β1)``, ``v += (g² − v)(1 − β2)``, ``w −= m·α / (√v + ε)`` with
  ``α = lr·√(1 − β2ᵗ) / (1 − β1ᵗ)``: ε is added to the *uncorrected* √v, so its weight grows
  by ``1 / √(1 − β2ᵗ)`` in the first steps (PyTorch adds ε to the bias-corrected one); ε = 1e-7.
* ``Adagrad``: ``a += g²``, ``w −= lr·g / √(a + ε)``: ε inside the root (PyTorch: outside),
  the accumulator starting at 0.1 (PyTorch: 0); ε = 1e-7.
* ``RMSprop``: ``v = ρv + (1 − ρ)g²``, ``w −= lr·g / √(v + ε)`` (ε inside the root), with
  momentum ``m = μm + that step``; ρ = 0.9, ε = 1e-7 (PyTorch: α = 0.99, ε = 1e-8 outside).
* ``SGD``: ``m = μm − lr·g``, ``w += m`` (Nesterov: ``w += μm − lr·g``), which equals
  PyTorch's while the learning rate is constant.
* ``weight_decay`` is decoupled in every Keras optimizer: ``w −= w·wd·lr`` before the update
  (PyTorch's Adam, Adagrad, RMSprop and SGD add ``wd·w`` to the gradient instead).

:class:`KerasPlateau` is ``keras.callbacks.ReduceLROnPlateau``: an epoch improves when it beats
the best by more than ``min_delta`` = 1e-4 (absolute; PyTorch: relative), and the rate drops
after ``patience`` epochs without improvement (PyTorch: after ``patience + 1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, SupportsFloat

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

__all__ = ["KERAS_DEFAULTS", "KerasAdagrad", "KerasAdam", "KerasPlateau", "KerasRMSprop", "KerasSGD"]

# Keras 3 constructor defaults that differ from PyTorch's
KERAS_DEFAULTS: dict[str, float] = {"eps": 1e-7, "initial_accumulator_value": 0.1, "rho": 0.9,
                                    "plateau_min_delta": 1e-4}

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class _KerasOptimizer(Optimizer):
    """Shared step loop: decoupled weight decay, then the subclass's update of each tensor."""

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.sub_(p * (group["weight_decay"] * group["lr"]))
                self.update(p, p.grad, self.state[p], group)
        return loss


class KerasAdam(_KerasOptimizer):
    """``keras.optimizers.Adam`` (``AdamW`` with ``weight_decay``)."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["step"] += 1
        b1, b2 = group["betas"]
        t = state["step"]
        alpha = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        m, v = state["m"], state["v"]
        m.add_((g - m) * (1 - b1))
        v.add_((g * g - v) * (1 - b2))
        p.sub_(m * alpha / (v.sqrt() + group["eps"]))


class KerasAdagrad(_KerasOptimizer):
    """``keras.optimizers.Adagrad``."""

    def __init__(self, params: Params, lr: float = 1e-3, initial_accumulator_value: float = 0.1,
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "initial_accumulator_value": initial_accumulator_value,
                                  "eps": eps, "weight_decay": weight_decay})

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["sum"] = torch.full_like(p, group["initial_accumulator_value"])
        acc = state["sum"]
        acc.add_(g * g)
        p.sub_(group["lr"] * g / (acc + group["eps"]).sqrt())


class KerasRMSprop(_KerasOptimizer):
    """``keras.optimizers.RMSprop`` (not centered)."""

    def __init__(self, params: Params, lr: float = 1e-3, rho: float = 0.9, momentum: float = 0.0,
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "momentum": momentum, "eps": eps,
                                  "weight_decay": weight_decay})

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["v"] = torch.zeros_like(p)
            if group["momentum"] > 0:
                state["m"] = torch.zeros_like(p)
        rho, v = group["rho"], state["v"]
        v.mul_(rho).add_(g * g * (1 - rho))
        increment = group["lr"] * g / (v + group["eps"]).sqrt()
        if group["momentum"] > 0:
            state["m"].mul_(group["momentum"]).add_(increment)
            increment = state["m"]
        p.sub_(increment)


class KerasSGD(_KerasOptimizer):
    """``keras.optimizers.SGD`` (momentum kept as a velocity in parameter units)."""

    def __init__(self, params: Params, lr: float = 1e-2, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        mu, lr = group["momentum"], group["lr"]
        if not mu:
            p.sub_(g * lr)
            return
        if not state:
            state["m"] = torch.zeros_like(p)
        m = state["m"]
        m.mul_(mu).sub_(g * lr)
        p.add_(m * mu - g * lr if group["nesterov"] else m)


class KerasPlateau(ReduceLROnPlateau):
    """``keras.callbacks.ReduceLROnPlateau`` (no cooldown): see the module docstring."""

    def __init__(self, optimizer: Optimizer, *, mode: str, factor: float, patience: int,
                 min_lr: float) -> None:
        super().__init__(optimizer, mode=mode, factor=factor, patience=patience,  # type: ignore[arg-type]
                         threshold=KERAS_DEFAULTS["plateau_min_delta"], threshold_mode="abs",
                         min_lr=min_lr)
        self.keras_mode = mode

    def step(self, metrics: SupportsFloat, epoch: Any = None) -> None:  # type: ignore[override]
        current = float(metrics)
        self.last_epoch += 1
        delta = KERAS_DEFAULTS["plateau_min_delta"]
        better = (current < self.best - delta if self.keras_mode == "min"
                  else current > self.best + delta)
        if better:
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
            if self.num_bad_epochs >= self.patience:
                self._reduce_lr(self.last_epoch)
                self.num_bad_epochs = 0
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
