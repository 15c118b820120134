"""``train.compat: keras``: Keras 3's optimizer rules and defaults, its ReduceLROnPlateau, its
loss reduction with class weights, and the last epoch's weights kept (the step-by-step match with
Keras itself is ``test_keras_steps.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtransfer.config import from_dict
from medtransfer.errors import ConfigError
from medtransfer.train import TrainConfig, TrainEnv, fit
from medtransfer.train.distributed import Replicas
from medtransfer.train.keras_optim import KerasAdagrad, KerasAdam, KerasPlateau, KerasRMSprop
from medtransfer.train.optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler


def _one_step(opt_cfg: dict, grad: float, compat: str, steps: int = 1) -> float:
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer([w], from_dict(OptimizerConfig, opt_cfg), compat)
    for _ in range(steps):
        w.grad = torch.tensor([grad])
        opt.step()
    return float(w.detach())


def test_keras_defaults_and_rules_for_each_optimizer():
    lr, g = 0.1, 0.5
    # Adagrad: accumulator 0.1 + g², epsilon 1e-7 inside the root
    assert _one_step({"name": "adagrad", "lr": lr}, g, "keras") == pytest.approx(
        1 - lr * g / math.sqrt(0.1 + g * g + 1e-7), rel=1e-7)
    assert _one_step({"name": "adagrad", "lr": lr}, g, "torch") == pytest.approx(
        1 - lr * g / (math.sqrt(g * g) + 1e-10), rel=1e-7)
    # Adam: epsilon 1e-7 added to the uncorrected root; on step 1, m̂/√v̂ = sign(g)
    tiny = 1e-7
    alpha = lr * math.sqrt(1 - 0.999) / (1 - 0.9)
    want = 1 - alpha * (0.1 * tiny) / (math.sqrt(0.001 * tiny * tiny) + 1e-7)
    assert _one_step({"name": "adam", "lr": lr}, tiny, "keras") == pytest.approx(want, rel=1e-6)
    assert _one_step({"name": "adam", "lr": lr}, tiny, "torch") != pytest.approx(want, rel=1e-3)
    # RMSprop: rho 0.9, epsilon inside the root
    assert _one_step({"name": "rmsprop", "lr": lr}, g, "keras") == pytest.approx(
        1 - lr * g / math.sqrt(0.1 * g * g + 1e-7), rel=1e-7)
    # explicit values win over both frameworks' defaults
    assert _one_step({"name": "adagrad", "lr": lr, "initial_accumulator_value": 0.0, "eps": 1e-10},
                     g, "keras") == pytest.approx(1 - lr, rel=1e-6)


def test_keras_weight_decay_is_decoupled_and_sgd_momentum_is_kerass():
    w = torch.nn.Parameter(torch.tensor([2.0]))
    opt = build_optimizer([w], OptimizerConfig(name="adam", lr=0.1, weight_decay=0.5), "keras")
    w.grad = torch.tensor([0.0])
    opt.step()
    assert float(w.detach()) == pytest.approx(2.0 - 2.0 * 0.5 * 0.1)  # no gradient, only decay
    # SGD, Nesterov: m = μm − lr·g; w += μm − lr·g (two steps of g = 1)
    got = _one_step({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, 1.0, "keras", steps=2)
    m1 = -0.1
    m2 = 0.9 * m1 - 0.1
    assert got == pytest.approx(1 + (0.9 * m1 - 0.1) + (0.9 * m2 - 0.1))


def test_builders_give_keras_classes_and_refuse_other_implementations():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(params, OptimizerConfig(name="adamw"), "keras"), KerasAdam)
    assert isinstance(build_optimizer(params, OptimizerConfig(name="adagrad"), "keras"), KerasAdagrad)
    assert isinstance(build_optimizer(params, OptimizerConfig(name="rmsprop"), "keras"), KerasRMSprop)
    with pytest.raises(ConfigError, match="'optimizer.implementation': got 'fused' with compat keras"):
        from_dict(TrainConfig, {"compat": "keras", "optimizer": {"name": "adam", "implementation": "fused"}})


def test_keras_plateau_cuts_after_patience_bad_epochs_with_an_absolute_min_delta():
    def lrs(compat: str, losses: list[float], patience: int = 2) -> list[float]:
        w = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([w], lr=1.0)
        cfg = SchedulerConfig(name="plateau", factor=0.5, patience=patience)  # type: ignore[arg-type]
        sched = build_scheduler(opt, cfg, epochs=10, compat=compat)
        out = []
        for loss in losses:
            sched.step(loss)  # type: ignore[union-attr, call-arg, arg-type]
            out.append(opt.param_groups[0]["lr"])
        return out

    losses = [1.0, 0.99995, 1.0, 1.0, 1.0]  # 0.99995 is no improvement by Keras's 1e-4 (absolute)
    assert isinstance(build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1),
                                      SchedulerConfig(name="plateau"), 5, "keras"), KerasPlateau)  # type: ignore[arg-type]
    assert lrs("keras", losses) == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lrs("torch", losses) == [1.0, 1.0, 1.0, 0.5, 0.5]  # after patience + 1 bad epochs
    # 999.95 improves on 1000 by Keras's absolute 1e-4, not by PyTorch's relative 1e-4
    assert lrs("keras", [1000.0, 999.95, 999.95, 999.95], patience=1) == [1.0, 1.0, 0.5, 0.25]
    assert lrs("torch", [1000.0, 999.95, 999.95, 999.95], patience=1) == [1.0, 1.0, 0.5, 0.5]


def test_class_weighted_loss_is_divided_by_the_batch_size_under_keras(tmp_path):
    """Keras's sum(w·loss) / batch size vs PyTorch's weighted mean, in the loop's reduction and
    in a fit on uneven batches."""
    losses, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.6, 0.6, 3.0])
    proba = torch.full((3, 2), 0.5)
    reps = Replicas.current()
    torch_loss = reps.batch_loss(losses, weights, proba, True, 4.2)[0]  # type: ignore[index]
    keras_loss = reps.batch_loss(losses, weights, proba, True, 3.0, per_sample=True)[0]  # type: ignore[index]
    assert float(torch_loss) == pytest.approx((0.6 + 1.2 + 12.0) / 4.2)
    assert float(keras_loss) == pytest.approx((0.6 + 1.2 + 12.0) / 3)
    x = np.random.default_rng(0).integers(0, 256, (6, 1, 2, 2), dtype=np.uint8)
    y = np.array([0, 0, 0, 0, 0, 1])
    biases = {}
    for compat in ("torch", "keras"):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
        torch.nn.init.zeros_(model[1].weight)
        torch.nn.init.zeros_(model[1].bias)
        cfg = from_dict(TrainConfig, {"epochs": 1, "batch_size": 3, "class_weight": "balanced",
                                      "optimizer": {"name": "sgd", "lr": 0.1}, "progress": False,
                                      "checkpoint_monitor": "loss", "compat": compat})
        fit(model, (x, y), None, cfg, TrainEnv(0, tmp_path / compat, 2))
        biases[compat] = float(model[1].bias.detach())
    assert biases["keras"] != pytest.approx(biases["torch"], rel=1e-3)


def test_restore_best_follows_compat_unless_set(tmp_path):
    assert TrainConfig().restores_best and not TrainConfig(compat="keras").restores_best
    assert TrainConfig(compat="keras", restore_best=True).restores_best
    assert not TrainConfig(restore_best=False).restores_best
    with pytest.raises(ConfigError, match="'compat': got 'tf'"):
        from_dict(TrainConfig, {"compat": "tf"})
