from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.config import to_dict
from medtransfer.errors import DataError
from medtransfer.train import OptimizerConfig, TrainConfig, build_optimizer
from medtransfer.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = build_optimizer(model.parameters(), OptimizerConfig())
    model(torch.ones(5, 3)).sum().backward()
    opt.step()
    return model, opt


def test_roundtrip_loads_with_weights_only(tmp_path: Path):
    model, opt = _model_and_optimizer()
    config = {"train": to_dict(TrainConfig()), "path": Path("/data/x"), "size": (64, 64),
              "score": np.float32(0.5), "classes": ["a", "b"]}
    path = save_checkpoint(
        tmp_path / "sub" / "ck.pt", model_state=model.state_dict(), config=config, epoch=3,
        metrics={"val_loss": 0.25, "val_auc": float("nan")}, optimizer_state=opt.state_dict(),
        extra={"seed": 7, "input_norm": [[0.5], [0.25]], "tensor": torch.arange(3)},
    )
    raw = torch.load(path, weights_only=True)  # what a cautious user would do
    assert raw["epoch"] == 3 and raw["format_version"] == 1
    ck = load_checkpoint(path)
    assert ck["config"]["train"] == to_dict(TrainConfig())
    assert ck["config"]["path"] == "/data/x" and ck["config"]["size"] == [64, 64]
    assert ck["config"]["score"] == 0.5 and type(ck["config"]["score"]) is float
    assert ck["metrics"]["val_loss"] == 0.25 and np.isnan(ck["metrics"]["val_auc"])
    assert torch.equal(ck["extra"]["tensor"], torch.arange(3)) and ck["extra"]["seed"] == 7
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model_state"][k], v)
    fresh, fresh_opt = _model_and_optimizer()
    fresh.load_state_dict(ck["model_state"])
    fresh_opt.load_state_dict(ck["optimizer_state"])
    exp_avg = fresh_opt.state_dict()["state"][0]["exp_avg"]
    assert exp_avg.equal(opt.state_dict()["state"][0]["exp_avg"])
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["ck.pt"]  # no temp files


def test_non_plain_config_names_the_key(tmp_path: Path):
    with pytest.raises(TypeError, match=r"'config.model.layer': Linear"):
        save_checkpoint(tmp_path / "c.pt", model_state={},
                        config={"model": {"layer": nn.Linear(1, 1)}}, epoch=0, metrics={})
    with pytest.raises(TypeError, match="tensors are not allowed"):
        save_checkpoint(tmp_path / "c.pt", model_state={}, config={"w": torch.ones(1)},
                        epoch=0, metrics={})
    assert not (tmp_path / "c.pt").exists()


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = save_checkpoint(tmp_path / "c.pt", model_state={"w": torch.ones(2)}, config={},
                           epoch=1, metrics={})

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model_state={"w": torch.zeros(2)}, config={}, epoch=2, metrics={})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_missing_and_corrupt_files_are_named(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"bad\.pt is corrupt") as info:
        load_checkpoint(bad)
    assert isinstance(info.value, DataError)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(CheckpointError, match="not a medtransfer checkpoint"):
        load_checkpoint(other)


def test_checkpoints_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.pt", model_state={"w": torch.zeros(2)}, config={},
                               epoch=1, metrics={})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600
