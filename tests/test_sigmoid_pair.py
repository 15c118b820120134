"""Two independent sigmoids (``model.binary_output: sigmoid_pair``): the loss is Keras's
``binary_crossentropy`` on one-hot labels, the probabilities are the sigmoids normalised, the
output layer keeps a Linear's parameters, and its raw outputs come back for Grad-CAM. (Training
step by step against Keras itself: ``tests/train/test_keras_steps.py``, case ``vgg_sigmoid``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.sigmoid_pair import (
    SigmoidPairLinear,
    has_sigmoid_pair,
    sigmoid_pair_logits,
    sigmoid_pair_loss,
    use_sigmoid_pair,
)
from medtransfer.train.batches import logits_to_proba, loss_and_proba

Z = np.array([[-3.0, 2.0], [0.5, 0.5], [4.0, -1.0], [-0.2, 7.0]])  # the dense layer's outputs
Y = np.array([1, 0, 0, 0])


def _keras_bce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Keras's binary_crossentropy per image, written out: p = sigmoid(z), one-hot targets t,
    -[t log p + (1 - t) log(1 - p)] averaged over the last axis."""
    p = 1.0 / (1.0 + np.exp(-z))
    t = np.eye(2)[y]
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        self.fc = nn.Linear(3, 2)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def test_loss_is_keras_binary_crossentropy_on_one_hot_labels():
    scores = F.logsigmoid(torch.tensor(Z))
    losses, proba = loss_and_proba(scores, torch.tensor(Y), 2, sigmoid_pair=True)
    np.testing.assert_allclose(losses.numpy(), _keras_bce(Z, Y), rtol=1e-12)
    p = 1.0 / (1.0 + np.exp(-Z))
    np.testing.assert_allclose(proba.numpy(), p / p.sum(axis=1, keepdims=True), rtol=1e-12)
    assert (proba.numpy().argmax(axis=1) == Z.argmax(axis=1)).all()
    # the same scores read as softmax logits give a different loss: the flag decides
    plain, _ = loss_and_proba(scores, torch.tensor(Y), 2)
    assert not np.allclose(plain.numpy(), losses.numpy())


def test_loss_stays_finite_where_a_sigmoid_rounds_to_one():
    scores = F.logsigmoid(torch.tensor([[120.0, -3.0]]))  # log σ(120) is 0 in float32
    loss = sigmoid_pair_loss(scores, torch.tensor([1]))
    assert torch.isfinite(loss).all() and float(loss) > 40


def test_loss_for_other_shapes_is_an_error():
    with pytest.raises(ConfigError, match="sigmoid pair is"):
        loss_and_proba(torch.zeros(2, 3), torch.tensor([0, 2]), 3, sigmoid_pair=True)


def test_layer_is_a_linear_with_log_sigmoid_outputs():
    torch.manual_seed(0)
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net.fc.weight
    use_sigmoid_pair(net)
    assert isinstance(net.fc, SigmoidPairLinear) and net.fc.weight is weight and has_sigmoid_pair(net)
    assert list(net.state_dict()) == list(before)
    x = torch.rand(5, 1, 2, 2)
    z = F.linear(net.body(x), before["fc.weight"], before["fc.bias"])
    out = net(x)
    torch.testing.assert_close(out, F.logsigmoid(z))
    torch.testing.assert_close(sigmoid_pair_logits(out), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_to_proba(out), torch.sigmoid(z) / torch.sigmoid(z).sum(1, keepdim=True))
    use_sigmoid_pair(net)  # already one: unchanged
    assert net.fc.weight is weight


def test_layer_outputs_float32_under_bfloat16():
    layer = SigmoidPairLinear(3, 2).to(torch.bfloat16)
    assert layer(torch.ones(1, 3, dtype=torch.bfloat16)).dtype == torch.float32


def test_an_output_layer_that_is_not_two_linear_outputs_is_an_error():
    net = _Net()
    net.fc = nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="'model.binary_output'.*Linear of 3 outputs"):
        use_sigmoid_pair(net)
    with pytest.raises(ConfigError, match="'model.binary_output'.*Sequential's is missing"):
        use_sigmoid_pair(nn.Sequential())
