"""The features strategy's scikit-learn classifiers rebuilt from arrays give scikit-learn's own
probabilities (binary and multiclass, logistic regression and calibrated linear SVM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.strategies.config import FeaturesStrategy
from medtransfer.strategies.features import make_estimator
from medtransfer.strategies.linear_head import FeatureHead, classifier_arrays, load_head, save_head


@pytest.mark.parametrize("classifier", ["logreg", "svm"])
@pytest.mark.parametrize("classes", [2, 4])
def test_rebuilt_head_equals_sklearn(classifier, classes, tmp_path):
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(120, 6)).astype(np.float32) * 3 + 1
    y = np.arange(120) % classes
    x[:, 0] += y  # learnable, not separable
    cfg = FeaturesStrategy(classifier=classifier, calibration_folds=3)
    est = make_estimator(cfg, 0, y).fit(x, y)
    arrays = classifier_arrays(est, x.shape[1])
    assert arrays is not None
    save_head(arrays, tmp_path)
    head = load_head(tmp_path)
    test = rng.normal(size=(40, 6)).astype(np.float32) * 3
    with torch.no_grad():
        got = torch.softmax(head(torch.from_numpy(test)), dim=1).numpy()
    np.testing.assert_allclose(got, est.predict_proba(test), atol=1e-6)


def test_isotonic_calibration_is_not_rebuilt():
    y = np.arange(60) % 2
    x = np.random.default_rng(0).normal(size=(60, 3)) + y[:, None]
    est = make_estimator(FeaturesStrategy(classifier="svm", calibration="isotonic"), 0, y).fit(x, y)
    assert classifier_arrays(est, 3) is None
    assert isinstance(FeatureHead({"kind": np.array("logreg"), "coef": np.zeros((1, 1, 3)),
                                   "intercept": np.zeros((1, 1))}), torch.nn.Module)
