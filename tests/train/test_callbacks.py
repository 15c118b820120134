import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.train import (
    CSVLogger,
    EarlyStopping,
    EarlyStoppingConfig,
    ModelCheckpoint,
    ProgressBar,
    StopReason,
    TrainState,
    load_checkpoint,
)


def _state(tmp_path: Path, max_epochs: int = 100) -> TrainState:
    model = nn.Linear(2, 1)
    return TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      out_dir=tmp_path, max_epochs=max_epochs, batches_per_epoch=3)


def _run(cb, state: TrainState, values: list[float], key: str = "val_loss") -> int:
    """Feed a scripted metric sequence; return the epoch at which training would stop."""
    cb.on_fit_start(state)
    for epoch, value in enumerate(values, start=1):
        state.epoch = epoch
        cb.on_epoch_end(state, {"loss": 0.0, key: value})
        if state.should_stop:
            return epoch
    return 0


def test_early_stopping_stops_after_patience(tmp_path: Path):
    es = EarlyStopping("val_loss", "min", patience=3)
    state = _state(tmp_path)
    # best at epoch 2; epochs 3, 4, 5 do not improve -> stop at 5
    assert _run(es, state, [1.0, 0.5, 0.6, 0.5, 0.7, 0.1]) == 5
    assert state.stop_reason is StopReason.early_stopping
    assert (es.best, es.best_epoch, es.stopped_epoch) == (0.5, 2, 5)


def test_early_stopping_min_delta_and_max_mode(tmp_path: Path):
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    # compared with the best so far (1.0): 0.95 and 0.92 are not 0.1 better
    assert _run(es, _state(tmp_path), [1.0, 0.95, 0.92, 0.85]) == 3
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    assert _run(es, _state(tmp_path), [1.0, 0.95, 0.85, 0.8, 0.78]) == 5
    es = EarlyStopping("val_auc", "max", patience=1)
    assert _run(es, _state(tmp_path), [0.5, 0.6, 0.7, 0.7], key="val_auc") == 4
    es = EarlyStopping("val_auc", "max", patience=0)
    assert _run(es, _state(tmp_path), [0.5, 0.4], key="val_auc") == 2


def test_nan_never_improves_and_final_epoch_is_completion(tmp_path: Path):
    es = EarlyStopping("val_auc", "max", patience=2)
    state = _state(tmp_path)
    assert _run(es, state, [math.nan, math.nan, math.nan], key="val_auc") == 2
    assert es.best_epoch == 0
    es = EarlyStopping(patience=1)
    state = _state(tmp_path, max_epochs=2)
    assert _run(es, state, [1.0, 2.0]) == 0  # patience runs out on the last epoch anyway
    assert state.stop_reason is StopReason.completed


def test_missing_metric_lists_available(tmp_path: Path):
    state = _state(tmp_path)
    metrics = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_auc": 0.5}
    for cb in (EarlyStopping("val_f1"), ModelCheckpoint(tmp_path, "val_f1", "max")):
        cb.on_fit_start(state)
        with pytest.raises(ConfigError) as info:
            cb.on_epoch_end(state, metrics)
        expected = "'val_f1' is not a logged metric; available: loss, accuracy, val_loss, val_auc"
        assert expected in str(info.value)
    assert "early_stopping.monitor 'val_f1'" in str(_missing(EarlyStopping("val_f1"), state))


def _missing(cb, state) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cb.on_epoch_end(state, {"loss": 1.0})
    return info.value


def test_early_stopping_config_is_checked_statically():
    with pytest.raises(ConfigError, match=r"did you mean 'val_auc'.*Allowed: lr, loss"):
        EarlyStoppingConfig(monitor="val_aux", mode="max")
    with pytest.raises(ConfigError, match=r"early_stopping.mode.*higher is better.*max"):
        EarlyStoppingConfig(monitor="val_accuracy")
    with pytest.raises(ConfigError, match="early_stopping.patience"):
        EarlyStoppingConfig(patience=-1)


def test_early_stopping_state_dict_roundtrip(tmp_path: Path):
    es = EarlyStopping(patience=5)
    _run(es, _state(tmp_path), [1.0, 2.0])
    other = EarlyStopping(patience=5)
    other.load_state_dict(es.state_dict())
    assert other.state_dict() == {"best": 1.0, "best_epoch": 1, "wait": 1, "stopped_epoch": 0}


def test_model_checkpoint_best_and_last(tmp_path: Path):
    state = _state(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"stale from an earlier run")
    ck = ModelCheckpoint(tmp_path, "val_loss", "min")
    ck.on_fit_start(state)
    assert not (tmp_path / "best.pt").exists()
    assert load_checkpoint(ck.last_path)["epoch"] == 0  # initial weights
    weights = []
    for epoch, value in enumerate([0.9, 0.5, 0.7], start=1):
        state.epoch = epoch
        with torch.no_grad():
            state.model.weight.fill_(epoch)
        weights.append(state.model.weight.clone())
        ck.on_epoch_end(state, {"val_loss": value})
    assert (ck.best_epoch, ck.best, ck.best_path) == (2, 0.5, tmp_path / "best.pt")
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(ck.last_path)
    assert best["epoch"] == 2 and best["metrics"] == {"val_loss": 0.5}
    assert best["optimizer_state"] is None and last["optimizer_state"] is not None
    assert torch.equal(best["model_state"]["weight"], weights[1])
    assert last["epoch"] == 3 and torch.equal(last["model_state"]["weight"], weights[2])


def test_csv_logger_fixed_columns(tmp_path: Path):
    state = _state(tmp_path)
    log = CSVLogger(tmp_path / "logs" / "history.csv")
    log.on_fit_start(state)
    for epoch in (1, 2):
        state.epoch = epoch
        log.on_epoch_end(state, {"lr": 0.1, "loss": 1.0 / epoch, "val_loss": math.nan})
        rows = list(csv.DictReader(log.path.open()))  # readable after every epoch
        assert len(rows) == epoch
    assert list(rows[0]) == ["epoch", "lr", "loss", "val_loss"]
    assert rows[1]["loss"] == "0.5" and rows[1]["val_loss"] == "nan"
    with pytest.raises(ValueError, match="val_auc appeared after the first epoch"):
        log.on_epoch_end(state, {"lr": 0.1, "loss": 1.0, "val_loss": 1.0, "val_auc": 0.5})
    log.on_fit_start(state)  # a new fit truncates
    assert log.path.read_text() == ""


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_runs_with_and_without_display(tmp_path: Path, enabled: bool):
    state = _state(tmp_path)
    bar = ProgressBar(enabled=enabled)
    state.epoch = 1
    bar.on_epoch_start(state)
    for loss in (1.0, 0.5, 0.3):
        bar.on_train_batch_end(state, loss, 4)
    assert bar._loss_sum / bar._count == pytest.approx(0.6)
    bar.on_epoch_end(state, {"loss": 0.6, "val_loss": 0.7})
    bar.teardown(state)
