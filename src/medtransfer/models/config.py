"""What a study says about its network: :class:`ModelConfig`, checked on creation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from medtransfer.config import Compat, check_choice, from_dict
from medtransfer.errors import ConfigError
from medtransfer.models.adapt import InChansPolicy
from medtransfer.models.head import HeadConfig, head_from

__all__ = ["NAMED_WEIGHTS", "ModelConfig", "NormSpec"]

# weights named by a word rather than a path: imagenet (ImageNet weights we or the library know),
# pretrained (the weights that come with the model: a model folder's, else its ImageNet weights)
NAMED_WEIGHTS = ("imagenet", "pretrained")


@dataclass(frozen=True)
class NormSpec:
    """An input normalisation given by its numbers: ``mean`` and ``std`` per channel, or the value
    ``range`` the pixels are mapped to; either is recorded with the model as mean/std, so
    training, predict and export apply it alike."""

    # per-channel mean subtracted from the [0, 1] pixels (one value: every channel)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None  # per-channel standard deviation the difference is divided by
    # [low, high]: [0, 1] pixels mapped linearly onto low..high (TorchXRayVision: [-1024, 1024])
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        given = (self.mean is not None, self.std is not None)
        if self.range is not None:
            low, high = self.range
            if any(given) or not high > low:
                raise ConfigError(f"'model.weights_norm': got range {list(self.range)} with mean/std "
                                  f"{self.mean}/{self.std}; allowed: range [low, high] with high > low, "
                                  "or mean and std (not both)")
            return
        if not all(given):
            raise ConfigError("'model.weights_norm': give mean and std (one value or one per "
                              "channel each), or range [low, high]")
        mean, std = tuple(self.mean or ()), tuple(self.std or ())
        if not mean or len(mean) != len(std) or not all(v > 0 for v in std):
            raise ConfigError(f"'model.weights_norm': got mean {list(mean)} and std {list(std)}; "
                              "expected as many values in each, std > 0")

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of ``(x - mean) / std`` on [0, 1] pixels: a range [a, b] is ``a + (b - a) x``."""
        if self.range is not None:
            low, high = (float(v) for v in self.range)
            return (-low / (high - low),), (1.0 / (high - low),)
        return tuple(map(float, self.mean or ())), tuple(map(float, self.std or ()))


# Names the architectures had before they were named for what they are; they still build (with a
# warning), as the same architecture, so older configs and runs keep working.
MODEL_ALIASES = {"alexnet_seed000": "alexnet_krizhevsky", "alexnet_seed002": "alexnet_small",
                 "vgg_seed002": "vgg_small", "resnet_seed002": "resnet_cifar"}


def canonical_name(name: str) -> str:
    """``name``, or the current name of an architecture named by an old alias (with a
    FutureWarning saying the new name)."""
    new = MODEL_ALIASES.get(name)
    if new is None:
        return name
    warnings.warn(f"model name '{name}' is now '{new}'; the old name will be removed in a later "
                  "version", FutureWarning, stacklevel=3)
    return new


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture, its regularization as flags (0 / False = off), its classification
    head, how grayscale input meets it, and which weights initialise it (None = random;
    ``imagenet``; ``pretrained``; ``file:PATH`` — a checkpoint or state dict; ``run:PATH`` — a
    unit folder or checkpoint of an earlier run)."""

    # a registered architecture (medtransfer models), timm:<any timm architecture>, a model folder
    # (timm:local-dir:PATH with timm's config.json + weights; timm:hf-hub:ORG/NAME from the Hugging
    # Face cache, offline) or torchvision:<any torchvision classification model>
    name: str = "alexnet_krizhevsky"
    batch_norm: bool = False  # batch norm after every conv, before its activation
    # dropout on conv feature maps: in the seeds' own CNNs (AlexNet) after each conv block's
    # activation; in block-built architectures (ResNet, DenseNet, VGG, MobileNet, EfficientNet,
    # Inception, timm:) after every stage, before the next downsampling
    conv_dropout: float = 0.0
    spatial_dropout: float = 0.0  # channel-wise (Dropout2d) rate after each conv block
    dense_dropout: float = 0.0  # dropout rate after the hidden dense layers
    # two classes: one sigmoid logit (single), two softmax logits (pair), or two independent
    # sigmoids trained with the mean binary cross-entropy on one-hot labels (sigmoid_pair: Keras's
    # Dense(2, sigmoid) + binary_crossentropy; label = argmax, probabilities = the two sigmoids
    # normalised to sum to 1, p1 / (p0 + p1)); sigmoid_pair only for two classes
    binary_output: Literal["single", "pair", "sigmoid_pair"] = "single"
    options: dict[str, Any] = field(default_factory=dict)  # the builder's own keyword arguments
    # grey images into RGB weights: native (as they are), repeat (×3 at the input), sum (first
    # conv summed over RGB)
    in_chans_policy: InChansPolicy = InChansPolicy.NATIVE
    # a classification head replacing the architecture's own (null: its own, e.g. global
    # average pool → dropout → output layer)
    head: HeadConfig | None = None
    # null (random init), imagenet, pretrained (a model folder's weights; else as imagenet),
    # file:PATH (a checkpoint or state dict), run:PATH (a unit folder or checkpoint of an earlier
    # run), keras:PATH (a Keras .h5 / .weights.h5 file of the same topology, e.g. a Keras
    # application's; needs h5py)
    weights: str | None = None
    # the input normalisation the weights expect: imagenet (torchvision's ImageNet mean/std),
    # inception (mean 0.5, std 0.5), caffe (Keras's VGG16/ResNet preprocessing: BGR, ImageNet
    # mean subtracted on 0-255; keras: files only), {mean: [...], std: [...]}, {range: [low,
    # high]} or null: what the weights carry (imagenet, model folders and run: weights carry
    # theirs; a file: state dict, e.g. a CheXNet or torchvision download, and a keras: file carry
    # none); it fills in for every weights without their own (a matrix's sources too); weights
    # that carry a different one are an error
    weights_norm: Literal["imagenet", "inception", "caffe"] | NormSpec | None = None
    # keras: the layers built here start Glorot-uniform with zero biases (not PyTorch's Kaiming
    # default; pretrained weights replace them) and every batch norm has Keras's constants (eps
    # 1e-3, or the Keras application's: 1.001e-5 for resnet/densenet; momentum 0.99, i.e. torch
    # 0.01) and moves toward the biased batch variance; torch: PyTorch's; null: the study's compat
    compat: Compat | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonical_name(self.name))
        if self.compat is not None:
            check_choice("model.compat", self.compat, ("torch", "keras"))
        check_choice("model.binary_output", self.binary_output, ("single", "pair", "sigmoid_pair"))
        for key in ("conv_dropout", "spatial_dropout", "dense_dropout"):
            rate = getattr(self, key)
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"'model.{key}': got {rate}; expected a rate in [0, 1)")
        object.__setattr__(self, "head", head_from(self.head))
        if self.head is not None and self.dense_dropout:
            raise ConfigError(
                f"'model.dense_dropout': got {self.dense_dropout} with model.head, which replaces "
                "the architecture's head and its dropout; set model.head.dropout instead"
            )
        if not isinstance(self.in_chans_policy, InChansPolicy):
            check_choice("model.in_chans_policy", self.in_chans_policy, [p.value for p in InChansPolicy])
            object.__setattr__(self, "in_chans_policy", InChansPolicy(self.in_chans_policy))
        if isinstance(self.weights_norm, dict):
            object.__setattr__(self, "weights_norm", from_dict(NormSpec, self.weights_norm,
                                                               "model.weights_norm"))
        elif self.weights_norm is not None and not isinstance(self.weights_norm, NormSpec):
            check_choice("model.weights_norm", self.weights_norm,
                         ("imagenet", "inception", "caffe", "{mean: [...], std: [...]}",
                          "{range: [low, high]}"))
        w = self.weights
        if w is not None and not (w in NAMED_WEIGHTS or (w.startswith(("file:", "run:")) and len(w) > 5)
                                  or (w.startswith("keras:") and len(w) > 6)):
            raise ConfigError(
                f"'model.weights': got {w!r}; allowed: null (random init), imagenet, pretrained, "
                "file:/path/to/weights.pt, run:/path/to/run/units/<pretrain unit> (or its .pt), "
                "keras:/path/to/keras_weights.h5"
            )

    def outputs(self, num_classes: int) -> int:
        """Logit count: binary tasks use one sigmoid logit unless ``binary_output`` is ``pair``
        or ``sigmoid_pair`` (two outputs); ``sigmoid_pair`` needs two classes."""
        if self.binary_output == "sigmoid_pair" and num_classes != 2:
            raise ConfigError(
                f"'model.binary_output': got 'sigmoid_pair' for {num_classes} classes; it is Keras's "
                "Dense(2, sigmoid) for two classes; use pair (softmax) or single for this task"
            )
        return 1 if num_classes == 2 and self.binary_output == "single" else num_classes

    def model_in_chans(self, data_chans: int) -> int:
        """Input channels of the network itself for images with ``data_chans`` channels."""
        if self.in_chans_policy is InChansPolicy.NATIVE:
            return data_chans
        if data_chans != 1:
            raise ConfigError(
                f"'model.in_chans_policy': got {self.in_chans_policy.value!r}, which adapts "
                f"1-channel images to RGB weights, but the images have {data_chans} channels; "
                "use native (or preprocess.color: grayscale)"
            )
        return 3 if self.in_chans_policy is InChansPolicy.REPEAT else 1
