"""Temperature scaling and test-time augmentation (medtransfer.calibration): the fitted
temperature undoes a known over-confidence, the wrapped network computes exactly the evaluated
probabilities, and the config records only what is on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.calibration import (
    EvaluateConfig,
    PosthocModel,
    calibration_metrics,
    fit_temperature,
    posthoc_log_proba,
)
from medtransfer.config import from_dict
from medtransfer.errors import ConfigError
from medtransfer.train.batches import logits_to_proba


def _overconfident(n: int, k: int, t: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), scores z × t: a network over-confident by a factor t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return (z * t)[None].astype(np.float32), y


@pytest.mark.parametrize("k", [1, 3])
def test_the_fitted_temperature_undoes_a_known_overconfidence(k):
    scores, y = _overconfident(4000, max(k, 2), 3.0)
    if k == 1:  # a single-logit binary head: sigmoid(z), z the logit of the positive class
        scores = scores[..., 1:] - scores[..., :1]
    t = fit_temperature(scores, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = calibration_metrics(y, posthoc_log_proba(torch.from_numpy(scores)).exp().numpy())
    after = calibration_metrics(y, posthoc_log_proba(torch.from_numpy(scores), t).exp().numpy())
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]


@pytest.mark.parametrize("outputs", [1, 3])
def test_the_wrapped_network_gives_the_evaluated_probabilities(outputs):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(outputs)).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        net(x)
        views = torch.stack([net(x), net(torch.flip(x, dims=(3,))), net(torch.flip(x, dims=(2,)))])
        expected = posthoc_log_proba(views, 1.7).exp()
        got = logits_to_proba(PosthocModel(net, ("hflip", "vflip"), 1.7)(x))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        # without TTA the scores are the network's own divided by T: exactly temperature scaling
        torch.testing.assert_close(PosthocModel(net, (), 2.0)(x), net(x) / 2.0)


def test_evaluate_is_off_by_default_and_keys_only_what_is_on():
    assert not EvaluateConfig().on and EvaluateConfig().key() == {}
    cfg = from_dict(EvaluateConfig, {"calibration": "temperature", "tta": ["hflip", "rot180"]}, "evaluate")
    assert cfg.on and cfg.key() == {"calibration": "temperature", "tta": ["hflip", "rot180"]}
    assert EvaluateConfig(tta=("vflip",)).key() == {"tta": ["vflip"]}
    with pytest.raises(ConfigError, match=r"'evaluate.tta': got 'hflp'; did you mean 'hflip'"):
        EvaluateConfig(tta=("hflp",))
    with pytest.raises(ConfigError, match="name each transform once"):
        EvaluateConfig(tta=("hflip", "hflip"))
    with pytest.raises(ConfigError, match="evaluate.calibration"):
        from_dict(EvaluateConfig, {"calibration": "platt"}, "evaluate")

