"""TrainConfig.sampling: config checks and what fit feeds each epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtransfer.config import from_dict, to_dict
from medtransfer.errors import ConfigError
from medtransfer.train import Callback, OptimizerConfig, TrainConfig, TrainEnv, fit
from medtransfer.train.loop import Sampling


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 8, "optimizer": OptimizerConfig(lr=0.05), "progress": False}
    return TrainConfig(**{**base, **kw})


class CountImages(Callback):
    def __init__(self) -> None:
        self.per_epoch: list[int] = []

    def on_epoch_start(self, state) -> None:
        self.per_epoch.append(0)

    def on_train_batch_end(self, state, loss, n) -> None:
        self.per_epoch[-1] += n


def test_config_round_trip_and_errors():
    cfg = from_dict(TrainConfig, {"sampling": "oversample"})
    assert cfg.sampling is Sampling.oversample and to_dict(cfg)["sampling"] == "oversample"
    assert TrainConfig().sampling is Sampling.none
    allowed = "'sampling': got 'balanced'; allowed: none, oversample, undersample"
    with pytest.raises(ConfigError, match=allowed):
        TrainConfig(sampling="balanced")  # type: ignore[arg-type]
    both = "'sampling': got 'undersample' together with class_weight 'balanced'"
    with pytest.raises(ConfigError, match=both):
        from_dict(TrainConfig, {"sampling": "undersample", "class_weight": "balanced"})


@pytest.mark.parametrize(("kind", "images"), [("undersample", 20), ("oversample", 60), ("none", 60)])
def test_fit_epoch_sizes(make_data, make_model, tmp_path: Path, kind: str, images: int):
    labels = np.repeat([0, 1], [50, 10])
    train = make_data(60, labels=labels)
    counter = CountImages()
    res = fit(make_model(2), train, None, _cfg(sampling=kind, checkpoint_monitor="loss"),
              TrainEnv(seed=0, out_dir=tmp_path, num_classes=2, callbacks=[counter]))
    assert counter.per_epoch == [images, images] and len(res.history) == 2


def test_sampled_fit_is_reproducible(make_data, make_model, tmp_path: Path):
    train = make_data(48, labels=np.repeat([0, 1], [40, 8]))
    cfg = _cfg(sampling="oversample", checkpoint_monitor="loss")
    runs = [fit(make_model(2), train, None, cfg, TrainEnv(seed=3, out_dir=tmp_path / str(i), num_classes=2))
            for i in range(2)]
    assert runs[0].history == runs[1].history
    other = fit(make_model(2), train, None, cfg, TrainEnv(seed=4, out_dir=tmp_path / "o", num_classes=2))
    assert other.history != runs[0].history
