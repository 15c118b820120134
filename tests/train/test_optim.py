import itertools
import math

import pytest
import torch
from torch import nn

from medtransfer.config import from_dict, to_dict
from medtransfer.errors import ConfigError
from medtransfer.train.config import TrainConfig
from medtransfer.train.optim import (
    OptimizerConfig,
    OptimizerName,
    SchedulerConfig,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    step_scheduler,
)


def _linear() -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(3, 2)


def _lrs(cfg: SchedulerConfig, epochs: int, run: int | None = None, metric=lambda e: 1.0):
    """The lr of each of ``run`` (default ``epochs``) epochs under ``cfg``, starting at lr 1."""
    opt = build_optimizer(_linear().parameters(), OptimizerConfig(lr=1.0))
    sched = build_scheduler(opt, cfg, epochs)
    out = []
    for e in range(epochs if run is None else run):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        step_scheduler(sched, cfg, {"val_loss": metric(e)})
    return out


@pytest.mark.parametrize(
    ("cfg", "cls"),
    [
        (OptimizerConfig(), torch.optim.Adam),
        (OptimizerConfig(name=OptimizerName.adamw, weight_decay=0.01), torch.optim.AdamW),
        (OptimizerConfig(name="adagrad", initial_accumulator_value=0.1, eps=1e-7),
         torch.optim.Adagrad),
        (OptimizerConfig(name="sgd", momentum=0.9, nesterov=True), torch.optim.SGD),
        (OptimizerConfig(name="rmsprop", momentum=0.5, alpha=0.9), torch.optim.RMSprop),
    ],
)
def test_each_optimizer_builds_and_steps(cfg, cls):
    model = _linear()
    before = model.weight.detach().clone()
    opt = build_optimizer(model.parameters(), cfg)
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == cfg.lr
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


def test_optimizer_settings_reach_torch():
    model = _linear()
    opt = build_optimizer(model.parameters(), OptimizerConfig(name="adagrad",
                                                              initial_accumulator_value=0.1))
    assert opt.param_groups[0]["initial_accumulator_value"] == 0.1
    assert opt.param_groups[0]["eps"] == 1e-10  # eps=None keeps torch's default
    sgd = build_optimizer(model.parameters(), OptimizerConfig(name="sgd", momentum=0.9,
                                                              nesterov=True))
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9
    adam = build_optimizer(model.parameters(), OptimizerConfig(betas=(0.8, 0.9), eps=1e-7))
    assert adam.param_groups[0]["betas"] == (0.8, 0.9) and adam.param_groups[0]["eps"] == 1e-7


def test_nesterov_without_momentum_is_an_error():
    with pytest.raises(ConfigError, match=r"nesterov.*momentum > 0"):
        OptimizerConfig(name="sgd", nesterov=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "optimizer.lr"),
        ({"lr": float("inf")}, "optimizer.lr"),
        ({"weight_decay": -1.0}, "optimizer.weight_decay"),
        ({"name": "sgd", "momentum": 1.0}, r"optimizer.momentum.*\[0, 1\)"),
        ({"betas": (0.9, 1.0)}, "optimizer.betas"),
        ({"eps": 0.0}, "optimizer.eps"),
        ({"momentum": 0.9}, r"only used by sgd, rmsprop .*'adam'"),
        ({"name": "sgd", "eps": 1e-7}, "optimizer.eps"),
        ({"name": "sgd", "initial_accumulator_value": 0.1}, "only used by adagrad"),
        ({"name": "adamw", "alpha": 0.9}, "only used by rmsprop"),
        ({"implementation": "fuse"}, r"optimizer.implementation.*did you mean 'fused'"),
        ({"name": "rmsprop", "implementation": "fused"}, "no fused rmsprop"),
    ],
)
def test_optimizer_config_errors_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OptimizerConfig(**kwargs)


def test_optimizer_config_from_yaml_data_roundtrips():
    data = {"name": "adagrad", "lr": "1e-2", "initial_accumulator_value": 0.1}
    cfg = from_dict(OptimizerConfig, data, "optimizer")
    assert cfg.name is OptimizerName.adagrad and cfg.lr == 0.01
    assert from_dict(OptimizerConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"did you mean 'adam'.*adamw, adagrad, sgd, rmsprop"):
        from_dict(OptimizerConfig, {"name": "adan"}, "optimizer")


@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad", "sgd"])
def test_implementations_reach_torch_and_agree(name):
    """for_loop is torch's CPU default; foreach gives the same bits, fused the same to rounding."""
    weights = {}
    for impl in ("auto", "for_loop", "foreach", "fused"):
        model = _linear()
        opt = build_optimizer(model.parameters(), OptimizerConfig(name=name, implementation=impl))
        group = opt.param_groups[0]
        assert bool(group["fused"]) is (impl == "fused")
        assert group["foreach"] == {"for_loop": False, "foreach": True}.get(impl)
        for step in range(20):
            opt.zero_grad()
            (model(torch.full((4, 3), 0.1 * step)) ** 2).sum().backward()
            opt.step()
        weights[impl] = model.weight.detach().clone()
    assert torch.equal(weights["auto"], weights["for_loop"])
    assert torch.equal(weights["auto"], weights["foreach"])
    torch.testing.assert_close(weights["fused"], weights["auto"], rtol=1e-5, atol=1e-6)


def test_no_parameters_is_an_error():
    with pytest.raises(ConfigError, match="no parameters"):
        build_optimizer([], OptimizerConfig())


def test_no_scheduler():
    opt = build_optimizer(_linear().parameters(), OptimizerConfig(lr=1.0))
    assert build_scheduler(opt, SchedulerConfig(), epochs=5) is None
    step_scheduler(None, SchedulerConfig(), {})  # a no-op


def test_plateau_reduces_after_patience():
    cfg = SchedulerConfig(name="plateau", factor=0.5, patience=1, min_lr=0.2)
    opt = build_optimizer(_linear().parameters(), OptimizerConfig(lr=1.0))
    assert isinstance(build_scheduler(opt, cfg, 8), torch.optim.lr_scheduler.ReduceLROnPlateau)
    # val_loss stalls from the start: cut after every 2 bad epochs, floored at min_lr
    assert _lrs(cfg, 8) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2]
    assert _lrs(cfg, 4, metric=lambda e: 1.0 - e) == [1.0] * 4  # improving: no cut


def test_plateau_missing_metric_lists_available():
    cfg = SchedulerConfig(name="plateau", monitor="val_auc", mode="max")
    opt = build_optimizer(_linear().parameters(), OptimizerConfig())
    sched = build_scheduler(opt, cfg, epochs=3)
    with pytest.raises(ConfigError, match=r"scheduler.monitor 'val_auc' .*available: loss, acc"):
        step_scheduler(sched, cfg, {"loss": 1.0, "accuracy": 0.5})


def test_step_and_cosine_schedules():
    step = SchedulerConfig(name="step", step_size=2, gamma=0.5)
    assert _lrs(step, 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    lrs = _lrs(SchedulerConfig(name="cosine", min_lr=0.1), 4, run=5)  # t_max defaults to 4
    assert lrs[0] == 1.0 and lrs[2] == pytest.approx(0.55) and lrs[4] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(lrs))


def test_warmup_ramps_then_hands_over():
    cfg = SchedulerConfig(name="cosine", warmup_epochs=2)
    lrs = _lrs(cfg, 6)
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[3:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)])
    assert _lrs(SchedulerConfig(warmup_epochs=1), 3) == pytest.approx([0.5, 1.0, 1.0])
    with pytest.raises(ConfigError, match="warmup_epochs.*only 2 epochs"):
        _lrs(cfg, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "plateau", "warmup_epochs": 1}, r"warmup_epochs.*only used by none, step, cos"),
        ({"name": "plateau", "factor": 1.0}, "scheduler.factor"),
        ({"name": "plateau", "monitor": "val_auc"}, r"scheduler.mode.*higher is better.*max"),
        ({"name": "plateau", "monitor": "val_f2"}, r"did you mean 'val_f1'|Allowed: lr, loss"),
        ({"name": "step", "step_size": 0}, "scheduler.step_size"),
        ({"name": "cosine", "t_max": 0}, "scheduler.t_max"),
        ({"name": "step", "t_max": 5}, "only used by cosine"),
        ({"gamma": 0.5}, r"scheduler.gamma.*only used by step.*'none'"),
    ],
)
def test_scheduler_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SchedulerConfig(**kwargs)


def test_scheduler_names():
    assert [n.value for n in SchedulerName] == ["none", "plateau", "step", "cosine"]
    assert [n.value for n in OptimizerName] == ["adam", "adamw", "adagrad", "sgd", "rmsprop"]


def _steps(opt: torch.optim.Optimizer, model: nn.Linear, k: int) -> list[float]:
    """The lr each of ``k`` steps on a fixed loss ran with (read before the step)."""
    lrs = []
    for _ in range(k):
        opt.zero_grad()
        model(torch.ones(4, 3)).square().sum().backward()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
    return lrs


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_keras_time_decay_per_step(name):
    """Keras ``Adam(lr, decay=d)``: the step after k steps uses lr / (1 + d * k), and the weights
    move as a plain optimizer whose lr is set so before each step; decay 0 changes nothing."""
    lr, decay = 0.01, 0.1
    model = _linear()
    opt = build_optimizer(model.parameters(), OptimizerConfig(name=name, lr=lr, decay=decay))
    assert _steps(opt, model, 5) == [lr / (1 + decay * k) for k in range(5)]
    assert opt.param_groups[0]["lr"] == pytest.approx(lr / (1 + decay * 5))
    manual = _linear()
    plain = build_optimizer(manual.parameters(), OptimizerConfig(name=name, lr=lr))
    for k in range(5):
        plain.param_groups[0]["lr"] = lr / (1 + decay * k)
        _steps(plain, manual, 1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), manual.parameters(), strict=True))
    # Resumed from its state_dict, the decay carries on from step 5.
    again = build_optimizer(model.parameters(), OptimizerConfig(name=name, lr=lr, decay=decay))
    again.load_state_dict(opt.state_dict())
    assert _steps(again, model, 2) == [lr / (1 + decay * k) for k in (5, 6)]
    # Off by default: the lr stays put.
    still = _linear()
    off = build_optimizer(still.parameters(), OptimizerConfig(name=name, lr=lr))
    assert _steps(off, still, 3) == [lr] * 3 and "decay_steps" not in off.param_groups[0]


def test_keras_time_decay_config_errors():
    with pytest.raises(ConfigError, match="optimizer.decay"):
        OptimizerConfig(decay=-0.1)
    with pytest.raises(ConfigError, match=r"optimizer.decay.*scheduler.name: none"):
        TrainConfig(optimizer=OptimizerConfig(decay=0.01), scheduler=SchedulerConfig(name="step"))
    TrainConfig(optimizer=OptimizerConfig(decay=0.01))


def test_keras_time_decay_in_fit(toy, make_model, tmp_path):
    """fit logs each epoch's starting lr: lr / (1 + decay * steps so far)."""
    from medtransfer.train import TrainEnv, fit

    train, val = toy  # 64 training images: 4 steps of 16 per epoch
    cfg = TrainConfig(epochs=3, batch_size=16, progress=False, optimizer=OptimizerConfig(lr=0.01, decay=0.5))
    res = fit(make_model(2), train, val, cfg, TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert [r["lr"] for r in res.history] == pytest.approx([0.01 / (1 + 0.5 * 4 * e) for e in range(3)])
