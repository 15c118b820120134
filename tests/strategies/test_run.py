"""run_strategy for every kind, and strategy configs from plain data."""

import csv
import types

import numpy as np
import pytest
import torch

from medtransfer.config import to_dict
from medtransfer.data import ImageCache
from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.strategies import (
    STRATEGIES,
    STRATEGY_RUNNERS,
    FeaturesStrategy,
    FinetuneStrategy,
    FreezeStrategy,
    MLPHeadConfig,
    ScratchStrategy,
    register_strategy,
    run_strategy,
    strategy_for,
    strategy_from_dict,
)
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv

TRAIN = TrainConfig(epochs=2, batch_size=8, progress=False)


def _data(n, seed, size=32):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    x = np.clip(rng.normal(90 + 70 * y[:, None, None, None], 40, (n, 1, size, size)), 0, 255)
    return x.astype(np.uint8), y.astype(np.int64)


def _run(cfg, tmp_path, disk_cache=None, **kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("alexnet_small", num_classes=1, in_chans=1, img_size=32, base=4)
    tests = {"test_1": _data(10, 3), "test_2": _data(6, 4)}
    return run_strategy(cfg, model, _data(24, 1), _data(8, 2), tests,
                        TrainEnv(num_classes=2, seed=0, out_dir=tmp_path, cache=disk_cache), **kw)


def _check_probabilities(res):
    assert set(res.probabilities) == {"val", "test_1", "test_2"}
    for name, n in (("val", 8), ("test_1", 10), ("test_2", 6)):
        p = res.probabilities[name]
        assert p.shape == (n, 2) and np.allclose(p.sum(1), 1.0)


def test_scratch_trains_everything(tmp_path):
    res = _run(ScratchStrategy(train=TRAIN), tmp_path)
    _check_probabilities(res)
    (stage,) = res.stages
    assert stage.path == "full" and stage.freeze.frozen_params == 0 and stage.reason == "nothing is frozen"
    assert len(res.history) == 2 and {r["stage"] for r in res.history} == {"scratch"}
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "history.csv").is_file()
    assert res.summary()["stages"][0]["epochs_run"] == 2


def test_freeze_trains_the_tail_on_cached_activations(tmp_path):
    res = _run(FreezeStrategy(train=TRAIN), tmp_path)
    _check_probabilities(res)
    (stage,) = res.stages
    assert stage.path == "cached" and "computed once" in stage.reason
    assert stage.freeze.trainable == ["pre_logits.1", "pre_logits.3", "classifier"]


def test_finetune_runs_head_then_everything_with_a_small_lr(tmp_path):
    cfg = FinetuneStrategy(head_fit="train", head=TRAIN,
                           finetune=TrainConfig(epochs=2, batch_size=8, progress=False,
                                                optimizer=OptimizerConfig(lr=1e-5)))
    res = _run(cfg, tmp_path)
    _check_probabilities(res)
    head, tune = res.stages
    assert head.freeze.trainable == ["classifier"] and head.path == "cached"
    assert tune.freeze.frozen_params == 0 and tune.path == "full"
    with (tmp_path / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("head", "1"), ("head", "2"),
                                                        ("finetune", "1"), ("finetune", "2")]
    assert float(rows[-1]["lr"]) == pytest.approx(1e-5)
    assert (tmp_path / "head" / "best.pt").is_file() and (tmp_path / "best.pt").is_file()


@pytest.mark.parametrize("classifier", ["logreg", "svm", "mlp"])
def test_features_strategy(tmp_path, classifier):
    cfg = FeaturesStrategy(classifier=classifier, calibration_folds=3, mlp=MLPHeadConfig(train=TRAIN))
    res = _run(cfg, tmp_path / "run", disk_cache=ImageCache(tmp_path / "cache"))
    _check_probabilities(res)
    assert res.stages[0].path == ("cached" if classifier == "mlp" else "sklearn")
    assert res.extra["features_dim"] == 64 and res.estimator is not None
    again = _run(cfg, tmp_path / "again", disk_cache=ImageCache(tmp_path / "cache"))
    assert again.extra["feature_cache_hits"] == 4  # train, val and both tests
    for name, p in res.probabilities.items():
        np.testing.assert_allclose(again.probabilities[name], p, rtol=1e-5)


def test_features_refuse_augmentation(tmp_path):
    from medtransfer.data import AugmentConfig, Augmenter

    with pytest.raises(ConfigError, match="features computes each image's features once"):
        _run(FeaturesStrategy(), tmp_path, augment=Augmenter(AugmentConfig(vertical_flip=True)))


def test_strategy_configs_from_plain_data():
    cfg = strategy_from_dict({"kind": "freeze", "freeze": {"train_from": "pre_logits"},
                              "train": {"epochs": 3}}, "transfer.strategy")
    assert isinstance(cfg, FreezeStrategy) and cfg.freeze.train_from == "pre_logits"
    assert strategy_from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="'transfer.strategy.kind': got 'fine-tune'; did you mean"):
        strategy_from_dict({"kind": "fine-tune"}, "transfer.strategy")
    with pytest.raises(ConfigError, match="unknown key 'classifer' in 'strategy'; did you mean 'classifier'"):
        strategy_from_dict({"kind": "features", "classifer": "svm"})
    with pytest.raises(ConfigError, match="'strategy.classifier': got 'rf'"):
        strategy_from_dict({"kind": "features", "classifier": "rf"})
    with pytest.raises(ConfigError, match="freezes nothing"):
        strategy_from_dict({"kind": "freeze", "freeze": {"trainable_layers": None}})
    with pytest.raises(ConfigError, match="missing required key 'strategy.kind'"):
        strategy_from_dict({})


def test_every_strategy_kind_has_a_registered_runner():
    assert sorted(STRATEGY_RUNNERS) == sorted(STRATEGIES)
    for kind, cls in STRATEGIES.items():
        assert type(strategy_for(cls())).__name__.lower() == kind
    unknown = types.SimpleNamespace(kind="transplant")
    with pytest.raises(ConfigError, match=r"'strategy.kind': got 'transplant'.*Allowed: features, finetune"):
        strategy_for(unknown)
    with pytest.raises(ValueError, match="registered twice"):
        register_strategy("freeze", config=FreezeStrategy)(object)
