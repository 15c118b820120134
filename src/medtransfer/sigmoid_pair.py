"""Two independent sigmoid outputs for two classes (``model.binary_output: sigmoid_pair``):
Keras's ``Dense(2, activation="sigmoid")`` trained with ``binary_crossentropy`` on one-hot labels.

The output layer, :class:`SigmoidPairLinear`, returns the log of its two sigmoids,
``s_k = log σ(z_k)`` (z: the dense layer's outputs), in at least float32. Everything that reads a
network's scores reads them as it reads logits, so nothing downstream needs to know: their softmax
is ``σ(z_k) / (σ(z_0) + σ(z_1))``, the two sigmoids normalised to sum to 1 — the probabilities of
the metrics, ROC curves, temperature calibration, TTA, predict and export — and their argmax is
``argmax(z)``, the label Keras's ``argmax(model.predict(x))`` gives. The normalised probability
(not the raw ``σ(z_1)``) is used so that probabilities sum to 1 and the predicted class is the
more probable one; for a trained network ``σ(z_0) + σ(z_1)`` is close to 1 and they nearly agree.

The loss (:func:`sigmoid_pair_loss`) is Keras's: per image the mean over the two outputs of the
binary cross-entropy against the one-hot label (``binary_crossentropy`` averages over the last
axis), ``-[y log σ(z) + (1 - y) log(1 - σ(z))]`` with ``log(1 - σ(z)) = log(-expm1(s))``. It is
exact while ``z`` < 87 (float32; beyond, ``s`` rounds to 0 and that term is held at 87.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medtransfer.errors import ConfigError

__all__ = ["SigmoidPairLinear", "has_sigmoid_pair", "sigmoid_pair_logits", "sigmoid_pair_loss",
           "use_sigmoid_pair"]

KEY = "model.binary_output"
# the largest score whose log(1 - exp(s)) is finite in float32: log(1 - σ(z)) stays >= -87.3
_NEAR_ZERO = -torch.finfo(torch.float32).tiny


class SigmoidPairLinear(nn.Linear):
    """A dense layer followed by a sigmoid per output, returned as log-sigmoids (see the module
    docstring); its state dict is a ``Linear``'s."""

    def forward(self, x: Tensor) -> Tensor:
        z = super().forward(x)
        return F.logsigmoid(z.to(torch.promote_types(z.dtype, torch.float32)))


def use_sigmoid_pair(model: nn.Module) -> None:
    """Make ``model``'s output layer (``get_classifier()``, one ``Linear`` of 2 outputs) a
    :class:`SigmoidPairLinear` sharing its parameters."""
    get = getattr(model, "get_classifier", None)
    layer = get() if callable(get) else None
    if isinstance(layer, SigmoidPairLinear):
        return
    if not isinstance(layer, nn.Linear) or layer.out_features != 2:
        what = (f"a Linear of {layer.out_features} outputs" if isinstance(layer, nn.Linear)
                else "missing (no get_classifier())" if layer is None else type(layer).__name__)
        raise ConfigError(f"'{KEY}': sigmoid_pair needs an output layer (get_classifier()) that is "
                          f"one Linear of 2 outputs; {type(model).__name__}'s is {what}; use single or pair")
    name = next(n for n, m in model.named_modules() if m is layer)
    pair = SigmoidPairLinear(layer.in_features, 2, bias=layer.bias is not None,
                             device=layer.weight.device, dtype=layer.weight.dtype)
    pair.weight = layer.weight
    pair.bias = layer.bias
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, pair)


def has_sigmoid_pair(model: nn.Module) -> bool:
    """Whether ``model`` outputs a sigmoid pair (has a :class:`SigmoidPairLinear`)."""
    return any(isinstance(m, SigmoidPairLinear) for m in model.modules())


def sigmoid_pair_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Per-image losses: the mean binary cross-entropy of the two sigmoids (``scores`` (B, 2),
    the log-sigmoids) against the one-hot labels of ``y`` (B,)."""
    onehot = F.one_hot(y, scores.shape[1]).to(scores.dtype)
    return -(onehot * scores + (1 - onehot) * _log_one_minus(scores)).mean(dim=1)


def sigmoid_pair_logits(scores: Tensor) -> Tensor:
    """The dense layer's outputs ``z`` back from the log-sigmoids (Grad-CAM's targets)."""
    return scores - _log_one_minus(scores)


def _log_one_minus(scores: Tensor) -> Tensor:
    """``log(1 - σ(z))`` from ``s = log σ(z)``: ``log(1 - exp(s))``, finite for s = 0."""
    return torch.log(-torch.expm1(scores.clamp(max=_NEAR_ZERO)))
