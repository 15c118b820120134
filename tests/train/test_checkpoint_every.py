"""``checkpoint_every: end``: the same best.pt/last.pt as per-epoch writing, written once."""

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import medtransfer.train.model_checkpoint as checkpoint_module
from medtransfer.config import from_dict
from medtransfer.errors import ConfigError
from medtransfer.strategies.cached import fit_on_activations
from medtransfer.train import (
    Callback,
    EarlyStoppingConfig,
    ModelCheckpoint,
    OptimizerConfig,
    SchedulerConfig,
    StopReason,
    TrainConfig,
    TrainEnv,
    TrainState,
    fit,
    load_checkpoint,
)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names ModelCheckpoint writes, in order."""
    names: list[str] = []
    real = checkpoint_module.save_checkpoint

    def counting(path: Any, **kwargs: Any) -> Path:
        names.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", counting)
    return names


def _cfg(**kw: Any) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 16, "progress": False,
            "optimizer": OptimizerConfig(name="adam", lr=0.05),
            # the lr changes after every epoch: last.pt must hold the lr the epoch trained with
            "scheduler": SchedulerConfig(name="step", step_size=1, gamma=0.5)}
    return TrainConfig(**{**base, **kw})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _checkpoint(path: Path) -> dict[str, Any]:
    ck = load_checkpoint(path)
    del ck["config"]["train"]["checkpoint_every"]  # the one setting that differs
    ck["extra"].pop("resume", None)  # per-epoch last.pt also holds what a resume needs
    return ck


@pytest.mark.parametrize("early", [False, True])
def test_end_writes_the_same_files_once(toy, make_model, tmp_path: Path, writes, early: bool):
    train, val = toy

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)

    es = EarlyStoppingConfig(patience=1, min_delta=1e9) if early else None
    results, states = {}, {}
    for every in ("epoch", "end"):
        model = make_model(2, dropout=0.3)  # batch norm buffers and dropout too
        writes.clear()
        results[every] = fit(model, train, val, _cfg(checkpoint_every=every, early_stopping=es),
                             TrainEnv(seed=5, out_dir=tmp_path / every, num_classes=2), augment=augment)
        states[every] = (list(writes), model.state_dict())
    per_epoch, at_end = results["epoch"], results["end"]
    epochs = 2 if early else 4
    assert len(per_epoch.history) == len(at_end.history) == epochs
    assert _same(per_epoch.history, at_end.history)
    assert (tmp_path / "epoch" / "history.csv").read_text() == (tmp_path / "end" / "history.csv").read_text()
    assert (at_end.best_epoch, at_end.best_metric) == (per_epoch.best_epoch, per_epoch.best_metric)
    assert at_end.best_path == tmp_path / "end" / "best.pt"
    assert at_end.stop_reason is per_epoch.stop_reason
    for name in ("best.pt", "last.pt"):
        assert _same(_checkpoint(tmp_path / "epoch" / name), _checkpoint(tmp_path / "end" / name)), name
    last = load_checkpoint(tmp_path / "end" / "last.pt")
    assert last["epoch"] == epochs
    assert last["optimizer_state"]["param_groups"][0]["lr"] == 0.05 / 2 ** (epochs - 1)
    assert _same(states["epoch"][1], states["end"][1])  # restored best weights
    assert states["end"][0] == ["best.pt", "last.pt"]
    improvements = states["epoch"][0].count("best.pt")
    assert improvements >= 1 and states["epoch"][0].count("last.pt") == 1 + epochs


def test_end_after_non_finite_loss_marks_last_partial(toy, tmp_path: Path, writes):
    train, val = toy

    class Emit(nn.Module):
        """Finite logits for the first ``good`` forward passes, then NaN."""

        def __init__(self, good: int) -> None:
            super().__init__()
            self.lin, self.good, self.calls = nn.Linear(1, 2), good, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            out = self.lin(x.mean(dim=(2, 3)))
            return out if self.calls <= self.good else out * math.nan

    # epoch 1: 4 train + 2 val batches; epoch 2 fails at its second batch, after one step
    res = fit(Emit(good=7), train, val, _cfg(checkpoint_every="end"),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    assert res.stop_reason is StopReason.non_finite_loss and len(res.history) == 1
    last, best = load_checkpoint(res.last_path), load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 1 and last["extra"]["partial_epoch"] is True
    assert last["extra"]["stop_reason"] == "non_finite_loss"
    assert best["epoch"] == 1 and writes == ["best.pt", "last.pt"]


def test_end_on_interrupt_and_on_error(toy, make_model, tmp_path: Path, writes):
    train, val = toy

    class Fail(Callback):
        def __init__(self, exc: type[BaseException]) -> None:
            self.exc = exc

        def on_epoch_start(self, state: TrainState) -> None:
            if state.epoch == 3:
                raise self.exc

    with pytest.raises(KeyboardInterrupt):
        fit(make_model(2), train, val, _cfg(checkpoint_every="end"),
            TrainEnv(seed=0, out_dir=tmp_path / "ctrl-c", num_classes=2, callbacks=[Fail(KeyboardInterrupt)]))
    last = load_checkpoint(tmp_path / "ctrl-c" / "last.pt")
    assert last["epoch"] == 2 and last["extra"]["partial_epoch"] is False  # between epochs
    assert last["extra"]["stop_reason"] == "interrupted"
    assert load_checkpoint(tmp_path / "ctrl-c" / "best.pt")["epoch"] in (1, 2)
    assert sorted(writes) == ["best.pt", "last.pt"]

    writes.clear()
    with pytest.raises(RuntimeError):
        fit(make_model(2), train, val, _cfg(checkpoint_every="end"),
            TrainEnv(seed=0, out_dir=tmp_path / "error", num_classes=2, callbacks=[Fail(RuntimeError)]))
    # the best weights so far survive an error; last.pt (never written) does not exist
    assert load_checkpoint(tmp_path / "error" / "best.pt")["epoch"] in (1, 2)
    assert writes == ["best.pt"] and not (tmp_path / "error" / "last.pt").exists()


def test_model_checkpoint_end_and_no_files(tmp_path: Path):
    model = nn.Linear(2, 1)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       out_dir=tmp_path, max_epochs=3)
    (tmp_path / "last.pt").write_bytes(b"stale")
    ck = ModelCheckpoint(tmp_path, "val_loss", "min", every="end")
    ck.on_fit_start(state)
    assert not (tmp_path / "last.pt").exists()
    for epoch, value in enumerate([0.9, 0.5, 0.7], start=1):
        state.epoch = epoch
        with torch.no_grad():
            model.weight.fill_(epoch)
        ck.on_epoch_end(state, {"val_loss": value})
        state.history.append({"val_loss": value})
    assert list(tmp_path.iterdir()) == [] and ck.best_epoch == 2
    assert torch.equal(ck.best_model_state()["weight"], torch.full((1, 2), 2.0))
    ck.on_fit_end(state)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3

    quiet = ModelCheckpoint(tmp_path / "quiet", "val_loss", "min", write_files=False)
    quiet.on_fit_start(state)
    state.epoch = 1
    quiet.on_epoch_end(state, {"val_loss": 0.3})
    quiet.on_fit_end(state)
    assert quiet.best_epoch == 1 and quiet.best_path == tmp_path / "quiet" / "best.pt"
    assert not (tmp_path / "quiet").exists()


def test_checkpoint_every_config():
    assert TrainConfig().checkpoint_every == "auto"
    assert from_dict(TrainConfig, {"checkpoint_every": "end"}, "train").checkpoint_every == "end"
    with pytest.raises(ConfigError, match=r"'train.checkpoint_every': got 'weekly'.*'auto', 'epoch', 'end'"):
        from_dict(TrainConfig, {"checkpoint_every": "weekly"}, "train")
    with pytest.raises(ConfigError, match=r"'checkpoint_every': got 'weekly'.*Allowed: auto, epoch, end"):
        TrainConfig(checkpoint_every="weekly")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'checkpoint_every'"):
        ModelCheckpoint(".", every="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("every", ["auto", "epoch"])
def test_cached_path_writes_at_end_unless_told(tmp_path: Path, writes, every: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    acts = torch.from_numpy(np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32))
    cfg = TrainConfig(epochs=3, batch_size=8, progress=False, checkpoint_monitor="loss",
                      checkpoint_every=every)  # type: ignore[arg-type]
    fit_on_activations(model, model[1], acts, np.arange(40) % 2, None, cfg,
                       TrainEnv(seed=0, out_dir=tmp_path, num_classes=2))
    if every == "auto":
        assert writes == ["best.pt", "last.pt"]
    else:
        assert writes.count("last.pt") == 1 + 3 and writes.count("best.pt") >= 1
