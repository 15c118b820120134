"""Feature extraction (layers, disk cache) and the classifiers of the ``features`` strategy."""

import numpy as np
import pytest
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from medtransfer.data import ImageCache
from medtransfer.errors import ConfigError, DataError
from medtransfer.models import create_model
from medtransfer.strategies import FeaturesStrategy, extract_features, make_estimator
from medtransfer.strategies.config import MLPHeadConfig
from medtransfer.strategies.features import fit_mlp, mlp_proba, sklearn_proba
from medtransfer.train import TrainConfig, TrainEnv


def _data(n, seed, size=32, classes=2):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    x = np.clip(rng.normal(60 + 140 * y[:, None, None, None] / (classes - 1), 30, (n, 1, size, size)), 0, 255)
    return x.astype(np.uint8), y.astype(np.int64)


def _vgg():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model("vgg_small", num_classes=1, in_chans=1, img_size=32, base=4)


def test_layers_give_the_expected_features():
    m, (x, _) = _vgg(), _data(6, 0)
    assert extract_features(m, x, FeaturesStrategy(layer="pre_logits")).shape == (6, 64)
    assert extract_features(m, x, FeaturesStrategy(layer="pooled")).shape == (6, 32)
    conv = extract_features(m, x, FeaturesStrategy(layer="features.3", pool="max"))
    assert conv.shape == (6, 4) and conv.dtype == np.float32
    with torch.no_grad():
        pixels = torch.from_numpy(x).float() / 255
        direct = m.eval().forward_head(m.forward_features(pixels), pre_logits=True)
    ours = extract_features(m, x, FeaturesStrategy())
    np.testing.assert_allclose(ours, direct.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="'strategy.layer': got 'featurs.3'; did you mean 'features.3'"):
        extract_features(m, x, FeaturesStrategy(layer="featurs.3"))


def test_channels_last_extraction_matches_and_has_its_own_cache_entry(tmp_path):
    cache, m, (x, _) = ImageCache(tmp_path), _vgg(), _data(6, 0)
    nchw = extract_features(m, x, FeaturesStrategy(), cache=cache)
    nhwc = extract_features(m, x, FeaturesStrategy(channels_last=True), cache=cache)
    np.testing.assert_allclose(nhwc, nchw, rtol=1e-4, atol=1e-5)  # other kernels, same numbers
    assert (cache.hits, cache.misses) == (0, 2)  # not served the NCHW entry
    assert all(p.is_contiguous() for p in m.parameters())  # the model is given back in NCHW
    with pytest.raises(ConfigError, match=r"'strategy.channels_last': got 'yes'; allowed: true, false"):
        FeaturesStrategy(channels_last="yes")  # type: ignore[arg-type]


def test_features_are_cached_by_weights_layer_and_images(tmp_path):
    cache, m, (x, _) = ImageCache(tmp_path), _vgg(), _data(6, 0)
    cfg = FeaturesStrategy()
    first = extract_features(m, x, cfg, cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    np.testing.assert_array_equal(extract_features(m, x, cfg, cache=cache), first)
    assert cache.hits == 1
    extract_features(m, x[:5], cfg, cache=cache)  # other images
    extract_features(m, x, FeaturesStrategy(layer="pooled"), cache=cache)  # other layer
    with torch.no_grad():
        m.classifier[0].weight.add_(1.0)  # other weights
    extract_features(m, x, cfg, cache=cache)
    assert (cache.hits, cache.misses) == (1, 4)


@pytest.mark.parametrize("classifier", ["logreg", "svm"])
def test_linear_classifiers_follow_the_estimator_contract(classifier):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    feats = rng.normal(0, 1, (60, 5)) + y[:, None] * 2.0
    est = make_estimator(FeaturesStrategy(classifier=classifier, calibration_folds=3), seed=0, labels=y)
    est.fit(feats, y)
    check_is_fitted(est)
    proba = sklearn_proba(est, feats, 3)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (proba.argmax(1) == y).mean() > 0.8  # well-separated classes are learned
    if classifier == "svm":
        calibrated = est[-1]
        assert isinstance(calibrated, CalibratedClassifierCV) and calibrated.method == "sigmoid"
        assert len(calibrated.calibrated_classifiers_) == 3


def test_svm_needs_two_images_per_class_and_missing_classes_are_named():
    with pytest.raises(DataError, match="at least 2 training images of every class"):
        make_estimator(FeaturesStrategy(classifier="svm"), 0, np.array([0, 0, 0, 1]))
    est = make_estimator(FeaturesStrategy(), 0, np.array([0, 1]))
    est.fit(np.array([[0.0], [1.0], [0.1]]), np.array([0, 1, 0]))
    with pytest.raises(DataError, match="classes \\[0, 1\\] in training; every one of 0..2"):
        sklearn_proba(est, np.zeros((2, 1)), 3)


def test_mlp_head_trains_with_fit_on_cached_features(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    feats = (rng.normal(0, 1, (40, 8)) + y[:, None]).astype(np.float32)
    cfg = MLPHeadConfig(hidden=16, dropout=0.5, train=TrainConfig(epochs=3, batch_size=8, progress=False))
    head, res = fit_mlp(feats, y, (feats[:10], y[:10]), cfg,
                        TrainEnv(num_classes=2, seed=0, out_dir=tmp_path), outputs=1)
    assert len(res.history) == 3 and (tmp_path / "history.csv").is_file()
    assert [type(m).__name__ for m in head.net] == ["Linear", "ReLU", "Dropout", "Linear"]
    proba = mlp_proba(head, feats)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)


def test_mlp_head_of_a_sigmoid_pair_model_is_a_sigmoid_pair(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    feats = (rng.normal(0, 1, (40, 8)) + y[:, None]).astype(np.float32)
    cfg = MLPHeadConfig(hidden=16, dropout=0.0, train=TrainConfig(epochs=1, batch_size=8, progress=False))
    env = TrainEnv(num_classes=2, seed=0, out_dir=tmp_path)
    head, res = fit_mlp(feats, y, (feats[:10], y[:10]), cfg, env, outputs=2, sigmoid_pair=True)
    assert type(head.net[-1]).__name__ == "SigmoidPairLinear"
    with torch.no_grad():
        z = (head.net[:-1](torch.from_numpy(feats)) @ head.net[-1].weight.T + head.net[-1].bias).double()
    p = torch.sigmoid(z).numpy()
    np.testing.assert_allclose(mlp_proba(head, feats), p / p.sum(1, keepdims=True), rtol=1e-5)
    # val_loss: Keras's binary_crossentropy, the two sigmoids against one-hot labels
    t = np.eye(2)[y[:10]]
    bce = -(t * np.log(p[:10]) + (1 - t) * np.log(1 - p[:10])).mean()
    assert res.history[0]["val_loss"] == pytest.approx(bce, rel=1e-5)


def test_weights_hash_covers_0_dim_buffers_and_changes_with_weights():
    from medtransfer.strategies.features import weights_hash

    # BatchNorm carries a 0-dim buffer (num_batches_tracked)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    before = weights_hash(model)
    assert before == weights_hash(model)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1.0
    assert weights_hash(model) != before


def test_svm_without_calibration_gives_its_decision_values_own_ranking():
    """``calibration: none`` (seed 003): the one-vs-rest LinearSVC's raw decision values, through
    a sigmoid (binary) or a softmax (multiclass), with no standardisation when switched off."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * 10
    y = (x[:, 0] + rng.normal(size=60) > 0).astype(int)
    cfg = FeaturesStrategy(classifier="svm", calibration="none", standardize=False)
    est = make_estimator(cfg, 0, y).fit(x, y)
    raw = LinearSVC(C=1.0, max_iter=5000, random_state=0).fit(x, y).decision_function(x)
    proba = sklearn_proba(est, x, 2)
    assert np.allclose(proba[:, 1], 1 / (1 + np.exp(-raw))) and np.allclose(proba.sum(1), 1)
    y3 = np.digitize(x[:, 0], [-5, 5])
    p3 = sklearn_proba(make_estimator(cfg, 0, y3).fit(x, y3), x, 3)
    assert p3.shape == (60, 3) and np.allclose(p3.sum(1), 1)
