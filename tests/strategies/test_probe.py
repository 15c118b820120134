"""finetune's default stage 1: the output layer fitted as a logistic regression (LP-FT)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medtransfer.errors import ConfigError
from medtransfer.freezing import BNPolicy
from medtransfer.models import create_model
from medtransfer.strategies import (
    FeaturesStrategy,
    FinetuneStrategy,
    run_strategy,
    strategy_from_dict,
)
from medtransfer.strategies.base import TransferData
from medtransfer.strategies.features import extract_features
from medtransfer.strategies.probe import fit_probe, probe_weights
from medtransfer.train import TrainConfig, TrainEnv, predict_proba
from medtransfer.train.batches import logits_to_proba as probabilities
from medtransfer.train.batches import loss_and_proba
from medtransfer.train.config import ClassWeight

TRAIN = TrainConfig(epochs=2, batch_size=8, progress=False)


def _feats(n, k, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return (rng.normal(size=(n, 6)) * 3 + 5 + y[:, None]).astype(np.float32), y


@pytest.mark.parametrize(("k", "outputs"), [(2, 1), (2, 2), (3, 3)])
def test_probe_weights_give_scikit_learns_probabilities(k, outputs):
    x, y = _feats(40, k, 0)
    w, b = probe_weights(x, y, outputs, k, C=0.5, balanced=False)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000)).fit(x, y)
    logits = torch.from_numpy(x) @ torch.from_numpy(w).T + torch.from_numpy(b)
    np.testing.assert_allclose(probabilities(logits).numpy(), ref.predict_proba(x), atol=1e-5)


def test_probe_weights_for_a_sigmoid_pair_give_the_regressions_probabilities_and_loss():
    x, y = _feats(40, 2, 0)
    w, b = probe_weights(x, y, 2, 2, C=0.5, balanced=False, sigmoid_pair=True)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000)).fit(x, y)
    np.testing.assert_allclose(w[0], -w[1]) and np.testing.assert_allclose(b[0], -b[1])
    scores = torch.nn.functional.logsigmoid(torch.from_numpy(x) @ torch.from_numpy(w).T + torch.from_numpy(b))
    np.testing.assert_allclose(probabilities(scores).numpy(), ref.predict_proba(x), atol=1e-5)
    losses, _ = loss_and_proba(scores, torch.from_numpy(y), 2, sigmoid_pair=True)
    log_loss = -np.log(ref.predict_proba(x)[np.arange(len(y)), y])
    np.testing.assert_allclose(losses.numpy(), log_loss, rtol=1e-4)


def test_probe_needs_every_class():
    x, y = _feats(10, 2, 0)
    with pytest.raises(ConfigError, match="1 of 3 classes|2 of 3 classes"):
        probe_weights(x, y, 3, 3, C=1.0, balanced=False)


def _data(n, seed, size=32):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    x = np.clip(rng.normal(90 + 70 * y[:, None, None, None], 40, (n, 1, size, size)), 0, 255)
    return x.astype(np.uint8), y.astype(np.int64)


def _model():
    torch.manual_seed(0)
    return create_model("alexnet_small", num_classes=1, in_chans=1, img_size=32, base=4)


def test_fit_probe_sets_the_output_layer_to_the_logistic_regression(tmp_path):
    model, (x, y) = _model(), _data(24, 1)
    env = TrainEnv(num_classes=2, seed=0, out_dir=tmp_path)
    stage = fit_probe(model, TransferData((x, y)), env, C=1.0, class_weight=ClassWeight.none)
    assert stage.path == "sklearn" and stage.freeze.trainable == ["classifier"]
    feats = extract_features(model, x, FeaturesStrategy(layer="pre_logits"))
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(feats, y)
    ours = predict_proba(model, x, batch_size=8)
    np.testing.assert_allclose(ours, ref.predict_proba(feats), atol=1e-4)


def test_default_finetune_probes_then_trains_everything_with_bn_in_eval_mode(tmp_path):
    cfg = FinetuneStrategy(finetune=TRAIN)
    assert cfg.unfreeze.bn_policy is BNPolicy.EVAL
    res = run_strategy(cfg, _model(), _data(24, 1), _data(8, 2), {"test": _data(10, 3)},
                       TrainEnv(num_classes=2, seed=0, out_dir=tmp_path))
    probe, tune = res.stages
    assert probe.path == "sklearn" and "logistic regression" in probe.reason and probe.fit is None
    assert tune.fit is not None and len(tune.fit.history) == 2 and tune.freeze.frozen_params == 0
    assert not (tmp_path / "head").exists()
    assert [r["stage"] for r in res.history] == ["finetune", "finetune"]
    assert res.probabilities["test"].shape == (10, 2)


def test_head_fit_logreg_refuses_head_training_settings():
    with pytest.raises(ConfigError, match=r"'strategy.head': set, but head_fit is logreg"):
        strategy_from_dict({"kind": "finetune", "head": {"epochs": 5}})
    with pytest.raises(ConfigError, match=r"'strategy.head_fit': got 'sgd'"):
        strategy_from_dict({"kind": "finetune", "head_fit": "sgd"})
    with pytest.raises(ConfigError, match=r"'strategy.head_C': got 0"):
        strategy_from_dict({"kind": "finetune", "head_C": 0})
    cfg = strategy_from_dict({"kind": "finetune", "head_fit": "train", "head": {"epochs": 5}})
    assert isinstance(cfg, FinetuneStrategy) and cfg.head.epochs == 5
