"""A fit interrupted after epoch 3 of 6 and resumed from last.pt ends with exactly the weights,
history and files of an uninterrupted fit (CPU, fp32): shuffling, augmentation, dropout,
optimizer, scheduler and early stopping all continue where they stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from medtransfer.train import (
    Callback,
    EarlyStoppingConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
    TrainEnv,
    TrainState,
    fit,
    load_checkpoint,
)
from medtransfer.train.checkpoint import lean_checkpoints, save_checkpoint

EPOCHS = 6


class Stop(Callback):
    """Raise ``exc`` as epoch ``at`` starts (or at its second batch: ``mid_epoch``)."""

    def __init__(self, at: int, exc: type[BaseException] = RuntimeError, mid_epoch: bool = False) -> None:
        self.at, self.exc, self.mid_epoch = at, exc, mid_epoch
        self.batches = 0

    def on_epoch_start(self, state: TrainState) -> None:
        if state.epoch == self.at and not self.mid_epoch:
            raise self.exc("injected")

    def on_train_batch_end(self, state: TrainState, loss: float, batch_size: int) -> None:
        self.batches += state.epoch == self.at
        if self.mid_epoch and self.batches == 2:
            raise self.exc("injected")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)


SETUPS: dict[str, dict[str, Any]] = {
    # the lr changes every epoch; augmentation and dropout draw from their generators
    "step_augment_dropout": {"scheduler": SchedulerConfig(name="step", step_size=1, gamma=0.7)},
    # early stopping's and plateau's waiting counts must survive: they stop / cut the lr late
    "plateau_early_stopping": {
        "scheduler": SchedulerConfig(name="plateau", patience=1, factor=0.5, monitor="lr", mode="max"),
        "early_stopping": EarlyStoppingConfig(patience=4, min_delta=1e9)},
    "cosine_warmup_sgd": {"scheduler": SchedulerConfig(name="cosine", warmup_epochs=2),
                          "optimizer": OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)},
}


def _cfg(**kw: Any) -> TrainConfig:
    base = {"epochs": EPOCHS, "batch_size": 16, "progress": False,
            "optimizer": OptimizerConfig(name="adam", lr=0.05)}
    return TrainConfig(**{**base, **kw})


def _fit(make_model, toy, out: Path, cfg: TrainConfig, *, callbacks=(), seed: int = 5, resume: bool = True):
    model = make_model(2, dropout=0.3)
    res = fit(model, *toy, cfg, TrainEnv(seed=seed, out_dir=out, num_classes=2, callbacks=callbacks),
              augment=_augment, resume=resume)
    return model, res


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_interrupted_after_epoch_3_resumes_to_the_same_weights(setup, make_model, toy, tmp_path, caplog):
    cfg = _cfg(**SETUPS[setup])
    ref_model, ref = _fit(make_model, toy, tmp_path / "ref", cfg, resume=False)

    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="injected"):
        _fit(make_model, toy, out, cfg, callbacks=[Stop(4)])
    assert load_checkpoint(out / "last.pt")["epoch"] == 3
    with caplog.at_level(logging.INFO, logger="medtransfer"):
        model, res = _fit(make_model, toy, out, cfg)
    assert f"resumed from epoch 3 of {EPOCHS}" in caplog.text

    assert _same_model(model, ref_model)  # the best epoch's weights, restored from best.pt
    last, ref_last = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "ref" / "last.pt")
    assert all(torch.equal(v, ref_last["model_state"][k]) for k, v in last["model_state"].items())
    assert res.history == ref.history and res.stop_reason is ref.stop_reason
    assert (res.best_epoch, res.best_metric) == (ref.best_epoch, ref.best_metric)
    assert (out / "history.csv").read_text() == (tmp_path / "ref" / "history.csv").read_text()
    if setup == "plateau_early_stopping":
        assert len(ref.history) == 5 and ref.stop_reason.value == "early_stopping"
        assert len({row["lr"] for row in ref.history}) > 1  # the plateau did cut the lr


def test_ctrl_c_mid_epoch_resumes_from_the_last_finished_one(make_model, toy, tmp_path):
    cfg = _cfg(**SETUPS["step_augment_dropout"])
    ref_model, ref = _fit(make_model, toy, tmp_path / "ref", cfg, resume=False)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _fit(make_model, toy, out, cfg, callbacks=[Stop(4, KeyboardInterrupt, mid_epoch=True)])
    last = load_checkpoint(out / "last.pt")  # Ctrl-C under resume keeps the finished epoch's
    assert last["epoch"] == 3 and "partial_epoch" not in last["extra"]
    model, res = _fit(make_model, toy, out, cfg)
    assert _same_model(model, ref_model) and res.history == ref.history


def test_a_last_pt_of_another_training_or_damaged_is_not_resumed_from(make_model, toy, tmp_path, caplog):
    cfg = _cfg()
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        _fit(make_model, toy, out, cfg, callbacks=[Stop(4)])
    fresh_model, fresh = _fit(make_model, toy, tmp_path / "fresh", cfg, seed=6, resume=False)
    with caplog.at_level(logging.WARNING, logger="medtransfer"):
        model, res = _fit(make_model, toy, out, cfg, seed=6)  # another seed: trained afresh
    assert "not resumed from, as it was written for other data, seed or device" in caplog.text
    assert _same_model(model, fresh_model) and res.history == fresh.history

    with pytest.raises(RuntimeError):
        _fit(make_model, toy, out, cfg, callbacks=[Stop(4)])
    ck = load_checkpoint(out / "last.pt")
    ck["model_state"]["classifier.bias"][0] += 1.0  # what a flipped bit does, unseen by torch.load
    save_checkpoint(out / "last.pt", model_state=ck["model_state"], config=ck["config"], epoch=ck["epoch"],
                    metrics=ck["metrics"], optimizer_state=ck["optimizer_state"], extra=ck["extra"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medtransfer"):
        _, res = _fit(make_model, toy, out, cfg)
    assert "does not match its digest (damaged)" in caplog.text and len(res.history) == EPOCHS


def test_without_resume_a_fit_starts_over_and_lean_drops_the_resume_state(make_model, toy, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        _fit(make_model, toy, out, _cfg(), callbacks=[Stop(4)])
    _, res = _fit(make_model, toy, out, _cfg(), resume=False)
    assert len(res.history) == EPOCHS
    assert "resume" in load_checkpoint(out / "last.pt")["extra"]
    (out / "best.pt").unlink()  # lean keeps last.pt only when there is no best.pt
    lean_checkpoints(out)
    last = load_checkpoint(out / "last.pt")
    assert "resume" not in last["extra"] and last["optimizer_state"] is None
