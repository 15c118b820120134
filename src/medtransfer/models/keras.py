"""Keras semantics for the layers medtransfer builds (``model.compat: keras``).

Where Keras 3 and PyTorch differ for the same architecture:

* **Initialisation.** Keras's ``Conv2D`` and ``Dense`` start Glorot-uniform with zero biases;
  PyTorch's layers start Kaiming-uniform with uniform biases. :func:`apply_keras` re-initialises
  every conv and dense layer of a freshly built model the Keras way (pretrained weights loaded
  afterwards replace them; layers they do not cover, such as a new head, keep it).
* **Batch norm.** Keras's ``BatchNormalization`` defaults to ``epsilon=1e-3`` and
  ``momentum=0.99`` (PyTorch: ``eps=1e-5``, ``momentum=0.1``, counted the other way round: torch
  momentum = 1 − Keras momentum), and moves its averages toward the batch's *biased* variance,
  where PyTorch uses the unbiased one (:class:`KerasBatchNorm2d`). Keras applications set their
  own epsilon (ResNet, DenseNet 1.001e-5; MobileNetV2 momentum 0.999): :func:`keras_bn`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KerasBatchNorm2d", "apply_keras", "glorot_init", "keras_bn"]

KERAS_BN = (1e-3, 0.01)  # (eps, torch momentum) of keras.layers.BatchNormalization()
# Keras applications that set their own batch-norm constants (keras.applications sources)
_APPLICATION_BN = {
    "resnet50": (1.001e-5, 0.01),
    "resnet101": (1.001e-5, 0.01),
    "resnet152": (1.001e-5, 0.01),
    "densenet121": (1.001e-5, 0.01),
    "mobilenet_v2": (1e-3, 0.001),
}


def keras_bn(name: str) -> tuple[float, float]:
    """(eps, torch momentum) of the batch norms Keras uses in architecture ``name``."""
    return _APPLICATION_BN.get(name, KERAS_BN)


class KerasBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose running variance moves toward the batch's biased variance, as
    Keras's ``BatchNormalization`` does (PyTorch uses the unbiased one). Normalisation is the
    same in both: by the batch's biased statistics in training, the running ones in eval."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats) or self.momentum is None:
            return super().forward(x)
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
        return out


def glorot_init(module: nn.Module) -> None:
    """Keras's initialisation of ``Conv2D`` / ``Dense``: Glorot-uniform kernel, zero bias."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def apply_keras(model: nn.Module, name: str) -> nn.Module:
    """``model`` (freshly built) with Keras's initialisation and batch-norm semantics, in
    place; ``model.bn_eps`` records the epsilon (folding a BN into a conv needs it)."""
    model.apply(glorot_init)
    eps, momentum = keras_bn(name)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps, module.momentum = eps, momentum
            if type(module) is nn.BatchNorm2d:
                module.__class__ = KerasBatchNorm2d
    model.bn_eps = eps  # type: ignore[assignment]
    return model
