import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.config import from_dict, to_dict
from medtransfer.errors import ConfigError, DataError
from medtransfer.train import (
    Callback,
    ClassWeight,
    EarlyStoppingConfig,
    OptimizerConfig,
    SchedulerConfig,
    StopReason,
    TrainConfig,
    TrainEnv,
    fit,
    load_checkpoint,
    metric_names,
    predict_proba,
)


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "optimizer": OptimizerConfig(lr=0.05), "progress": False}
    return TrainConfig(**{**base, **kw})


class Bias(nn.Module):
    """Constant logits: per-sample losses depend only on the label, so they are known exactly."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(len(x), len(self.b))


class Emit(nn.Module):
    """Finite logits for the first ``good`` forward passes, then ``value``."""

    def __init__(self, value: float, good: int = 0) -> None:
        super().__init__()
        self.lin, self.value, self.good, self.calls = nn.Linear(1, 2), value, good, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.lin(x.mean(dim=(2, 3)))
        return out if self.calls <= self.good else out * 0 + self.value


def test_fit_learns_bright_vs_dark(toy, make_model, tmp_path: Path):
    train, val = toy
    res = fit(make_model(2), train, val, _cfg(epochs=8), TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    h = res.history
    assert len(h) == 8 and res.stop_reason is StopReason.completed
    assert list(h[0]) == metric_names(True)
    assert h[-1]["loss"] < 0.5 * h[0]["loss"]
    assert h[-1]["val_accuracy"] >= 0.9 and h[-1]["val_auc"] >= 0.95
    assert res.best_epoch == 1 + int(np.argmin([r["val_loss"] for r in h]))
    assert res.best_metric == h[res.best_epoch - 1]["val_loss"]
    assert res.best_path == tmp_path / "best.pt" and res.last_path == tmp_path / "last.pt"
    assert load_checkpoint(res.last_path)["epoch"] == 8
    assert res.seconds > 0 and res.images_per_second > 0


@pytest.mark.parametrize("outputs", [1, 2])
def test_single_logit_and_two_logit_heads(toy, make_model, tmp_path: Path, outputs: int):
    train, val = toy
    model = make_model(outputs)
    res = fit(model, train, val, _cfg(epochs=6), TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert res.history[-1]["val_accuracy"] >= 0.9
    proba = predict_proba(model, val[0], batch_size=7)
    assert proba.shape == (32, 2) and np.allclose(proba.sum(1), 1, atol=1e-6)
    best = res.history[res.best_epoch - 1]
    assert ((proba[:, 1] >= 0.5) == val[1]).mean() == best["val_accuracy"]


def test_multiclass(make_data, make_model, tmp_path: Path):
    train = make_data(90, seed=1, num_classes=3)
    val = make_data(30, seed=2, num_classes=3)
    model = make_model(3)
    res = fit(model, train, val, _cfg(epochs=10, optimizer=OptimizerConfig(lr=0.1)),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=3))
    last = res.history[-1]
    assert last["val_accuracy"] > 0.6 and 0 <= last["val_auc"] <= 1
    assert predict_proba(model, val[0]).shape == (30, 3)
    with pytest.raises(ConfigError, match=r"expected \(batch, 3\)"):
        fit(make_model(2), train, val, _cfg(), TrainEnv(seed=0, out_dir=tmp_path, num_classes=3))


@pytest.mark.parametrize(
    ("logits", "l0", "l1"), [([1.0, 0.0], 0.31326, 1.31326), ([1.0], 1.31326, 0.31326)]
)
def test_balanced_class_weights(make_data, tmp_path: Path, logits, l0, l1):
    labels = np.array([0] * 12 + [1] * 4)
    train = make_data(16, labels=labels)
    cfg = _cfg(epochs=1, batch_size=16)  # one batch: the epoch loss is the loss before the step
    plain = fit(Bias(logits), train, train, cfg, TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    model = Bias(logits)
    weighted = fit(model, train, train, _cfg(epochs=1, batch_size=16, class_weight="balanced"),
                   TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert plain.history[0]["loss"] == pytest.approx((12 * l0 + 4 * l1) / 16, abs=1e-4)
    # balanced weights 16/(2*12) and 16/(2*4): the weighted mean is the mean of the class losses
    assert weighted.history[0]["loss"] == pytest.approx((l0 + l1) / 2, abs=1e-4)
    # val_loss is not weighted (as in Keras): the plain mean over the validation samples
    proba = predict_proba(model, train[0])
    plain_mean = -np.log(proba[np.arange(16), labels]).mean()
    assert weighted.history[0]["val_loss"] == pytest.approx(plain_mean, rel=1e-5)


def test_balanced_weights_need_every_class(make_data, tmp_path: Path):
    train = make_data(8, labels=np.zeros(8, dtype=int))
    with pytest.raises(DataError, match=r"class\(es\) \[1\] have no training samples"):
        fit(Bias([0.0, 0.0]), train, None, _cfg(class_weight="balanced", checkpoint_monitor="loss"),
            TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))


def test_frozen_parameters_do_not_change_and_train_mode_hook_runs(toy, make_model, tmp_path):
    train, val = toy
    model = make_model(2)
    for p in model.features.parameters():
        p.requires_grad_(False)
    frozen_bn = model.features[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def keep_bn_frozen(m: nn.Module) -> None:
        calls.append(m.training)
        m.train()
        frozen_bn.eval()

    fit(model, train, val, _cfg(), TrainEnv(seed=0, out_dir=tmp_path, num_classes=2),
        train_mode=keep_bn_frozen)
    after = model.state_dict()
    assert len(calls) == 3  # once per epoch
    for k in before:
        if k.startswith("features."):  # weights and BN running stats alike
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not model.training  # left in eval mode


def test_same_seed_is_bitwise_identical_and_leaves_global_rng(toy, make_model, tmp_path: Path):
    train, val = toy

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return (x + 0.05 * torch.randn(x.shape, generator=gen, device=gen.device)).clamp(0, 1)

    def run(seed: int, name: str):
        model = make_model(2, dropout=0.5)
        res = fit(model, train, val, _cfg(epochs=2),
                  TrainEnv(seed=seed, out_dir=tmp_path / name, num_classes=2), augment=augment)
        return res, model.state_dict()

    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    a, wa = run(0, "a")
    assert torch.equal(torch.get_rng_state(), rng_before)
    b, wb = run(0, "b")
    c, wc = run(1, "c")
    assert a.history == b.history
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    csv_a, csv_b = ((tmp_path / d / "history.csv").read_text() for d in "ab")
    assert csv_a == csv_b
    assert a.history != c.history
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_history_csv_columns_and_rows(toy, make_model, tmp_path: Path):
    train, val = toy
    fit(make_model(2), train, val, _cfg(epochs=3), TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert list(rows[0]) == ["epoch", "lr", "loss", "accuracy", "precision", "recall", "auc", "f1",
                             "val_loss", "val_accuracy", "val_precision", "val_recall", "val_auc",
                             "val_f1"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    res = fit(make_model(2), train, None, _cfg(epochs=2, checkpoint_monitor="loss"),
              TrainEnv(seed=0, out_dir=tmp_path / "noval", num_classes=2))
    rows = list(csv.DictReader((tmp_path / "noval" / "history.csv").open()))
    assert list(rows[0]) == ["epoch", "lr", "loss", "accuracy", "precision", "recall", "auc", "f1"]
    assert len(rows) == len(res.history) == 2


def test_early_stopping_in_fit(toy, make_model, tmp_path: Path):
    train, val = toy
    es = EarlyStoppingConfig(patience=2, min_delta=1e9)  # nothing after epoch 1 counts
    res = fit(make_model(2), train, val, _cfg(epochs=10, early_stopping=es),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert res.stop_reason is StopReason.early_stopping
    assert len(res.history) == 3
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 4


def test_val_f1_as_checkpoint_and_early_stopping_monitor(toy, make_model, tmp_path: Path):
    train, val = toy
    es = EarlyStoppingConfig(monitor="val_f1", mode="max", patience=1)
    res = fit(make_model(2), train, val,
              _cfg(epochs=4, checkpoint_monitor="val_f1", checkpoint_mode="max", early_stopping=es),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    f1s = [row["val_f1"] for row in res.history]
    assert all(0 <= v <= 1 for v in f1s)
    assert res.best_metric == max(f1s) and f1s[res.best_epoch - 1] == max(f1s)
    with pytest.raises(ConfigError, match=r"checkpoint_mode.*higher is better.*max"):
        _cfg(checkpoint_monitor="val_f1")


def test_missing_monitor_fails_before_training(toy, make_model, tmp_path: Path):
    train, _ = toy
    expected = (r"checkpoint_monitor 'val_loss' is not a logged metric; "
                r"available: lr, loss, accuracy, precision, recall, auc, f1$")
    with pytest.raises(ConfigError, match=expected):
        fit(make_model(2), train, None, _cfg(), TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    cfg = _cfg(checkpoint_monitor="loss", early_stopping=EarlyStoppingConfig("val_auc", "max"))
    with pytest.raises(ConfigError, match="early_stopping.monitor 'val_auc'"):
        fit(make_model(2), train, None, cfg, TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert not (tmp_path / "history.csv").exists()


def test_plateau_scheduler_in_fit(toy, make_model, tmp_path: Path):
    train, val = toy
    sched = SchedulerConfig(name="plateau", monitor="val_loss", factor=0.5, patience=0)
    es = EarlyStoppingConfig(patience=5, min_delta=1e9)
    res = fit(make_model(2), train, val, _cfg(epochs=4, scheduler=sched, early_stopping=es),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    lrs = [h["lr"] for h in res.history]
    assert lrs[0] == 0.05 and all(b <= a for a, b in itertools.pairwise(lrs))


def test_non_finite_loss_stops_training(toy, tmp_path: Path):
    train, val = toy
    res = fit(Emit(math.inf), train, val, _cfg(), TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert res.stop_reason is StopReason.non_finite_loss
    assert res.history == [] and res.best_path is None and math.isnan(res.best_metric)
    assert load_checkpoint(res.last_path)["epoch"] == 0
    # fine for one epoch (4 train batches + 2 val batches), then NaN: epoch 1 is kept
    model = Emit(math.nan, good=6)
    res = fit(model, train, val, _cfg(), TrainEnv(seed=0, out_dir=tmp_path / "b", num_classes=2))
    assert res.stop_reason is StopReason.non_finite_loss and len(res.history) == 1
    assert res.best_epoch == 1 and load_checkpoint(res.last_path)["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())  # best weights restored


def test_keyboard_interrupt_saves_last_and_reraises(toy, make_model, tmp_path: Path):
    train, val = toy
    seen = []

    class Interrupt(Callback):
        def on_train_batch_end(self, state, loss, batch_size):
            if state.epoch == 2:
                raise KeyboardInterrupt

        def on_fit_end(self, state):
            seen.append(state.stop_reason)

    with pytest.raises(KeyboardInterrupt):
        fit(make_model(2), train, val, _cfg(),
            TrainEnv(seed=0, out_dir=tmp_path, num_classes=2, callbacks=[Interrupt()]))
    assert seen == [StopReason.interrupted]
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 1 and last["extra"]["partial_epoch"] is True
    assert last["extra"]["stop_reason"] == "interrupted"
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 2


def test_restore_best_and_checkpoint_contents(toy, make_model, tmp_path: Path):
    train, val = toy
    model = make_model(2)
    res = fit(model, train, val, _cfg(epochs=4),
              TrainEnv(seed=3, out_dir=tmp_path, num_classes=2, input_norm=([0.5], [0.25]),
                       checkpoint_config={"study": "demo", "size": (8, 8)}))
    best = load_checkpoint(res.best_path)
    assert all(torch.equal(best["model_state"][k], v) for k, v in model.state_dict().items())
    assert best["config"] == {"study": "demo", "size": [8, 8]}
    assert best["extra"]["input_norm"] == [[0.5], [0.25]] and best["extra"]["seed"] == 3
    default = fit(make_model(2), train, val, _cfg(epochs=1),
                  TrainEnv(seed=0, out_dir=tmp_path / "d", num_classes=2))
    assert load_checkpoint(default.last_path)["config"] == {"train": to_dict(_cfg(epochs=1))}


def test_uint16_and_input_norm(make_data, make_model, tmp_path: Path):
    train = make_data(32, seed=1, dtype=np.uint16, channels=3)
    model = make_model(2, channels=3)
    norm = ([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    fit(model, train, None, _cfg(epochs=1, checkpoint_monitor="loss"),
        TrainEnv(seed=0, out_dir=tmp_path, num_classes=2, input_norm=norm))
    x = torch.from_numpy(train[0].astype(np.float32) / 65535)
    with torch.no_grad():
        expected = torch.softmax(model((x - 0.5) / 0.2), dim=1).numpy()
    np.testing.assert_allclose(predict_proba(model, train[0], input_norm=norm), expected,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="input_norm.*3 values each"):
        predict_proba(model, train[0], input_norm=([0.5], [0.2]))


def test_bad_inputs_are_named(toy, make_model, tmp_path: Path):
    (x, y), _ = toy
    model = make_model(2)
    cases = [
        ((x.astype(np.float32), y), DataError, "uint8 or uint16"),
        ((x, y + 1), DataError, r"train labels: must lie in \[0, 1\]"),
        ((x, y[:5]), DataError, "64 images but 5 labels"),
    ]
    for train, exc, match in cases:
        with pytest.raises(exc, match=match):
            fit(model, train, None, _cfg(checkpoint_monitor="loss"),
                TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    with pytest.raises(ConfigError, match="seed"):
        fit(model, (x, y), None, _cfg(checkpoint_monitor="loss"),
            TrainEnv(seed=-1, out_dir=tmp_path, num_classes=2))
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit(model, (x, y), None, _cfg(checkpoint_monitor="loss"),
            TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))


def test_train_config_from_yaml_data():
    data = {
        "epochs": 6,
        "optimizer": {"name": "adagrad", "lr": 0.01, "initial_accumulator_value": 0.1},
        "scheduler": {"name": "plateau", "monitor": "val_loss", "factor": 0.01, "patience": 2,
                      "min_lr": 1.0e-6},
        "early_stopping": {"monitor": "val_auc", "mode": "max"},
        "class_weight": "balanced",
    }
    cfg = from_dict(TrainConfig, data, "train")
    assert cfg.early_stopping == EarlyStoppingConfig("val_auc", "max")
    assert cfg.class_weight is ClassWeight.balanced
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"checkpoint_mode.*higher is better"):
        from_dict(TrainConfig, {"checkpoint_monitor": "val_auc"}, "train")
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrainConfig(epochs=2, scheduler=SchedulerConfig(warmup_epochs=2))
    with pytest.raises(ConfigError, match="'epochs'"):
        TrainConfig(epochs=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_leaves_global_rngs_alone(toy, make_model, tmp_path: Path):
    train, val = toy
    cpu_state, cuda_state = torch.get_rng_state(), torch.cuda.get_rng_state()

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        assert x.is_cuda and gen.device.type == "cuda"
        return x + 0.01 * torch.rand(x.shape, generator=gen, device=gen.device)

    model = make_model(2, dropout=0.5)
    res = fit(model, train, val, _cfg(epochs=2),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=2, device="cuda"), augment=augment)
    assert len(res.history) == 2 and next(model.parameters()).is_cuda
    assert predict_proba(model, val[0], device="cuda").shape == (32, 2)
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
