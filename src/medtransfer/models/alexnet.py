"""AlexNet variants of the seeds, as data: conv specs plus dense widths; BN and dropout are flags.

``alexnet_krizhevsky``: Krizhevsky-style convs 96-256-384-384-256 (11/4, 5, 3, 3, 3; Keras "same"
padding), 2×2 max-pools after conv 1, 2 and 5, dense 4096-4096-1000 then the output layer.
``alexnet_small``: the course-lab AlexNet with a ``base`` width (base, 2b, 4b, 4b, 2b; 3×3),
pools after blocks 1, 2 and 5, dense 64-64 then the output layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.models.chain import Step, module_steps
from medtransfer.models.registry import register_model


@dataclass(frozen=True)
class ConvSpec:
    out: int
    kernel: int
    stride: int = 1
    pool: bool = False
    dropout_site: bool = True  # where conv_dropout / spatial_dropout go when switched on


class Conv2dSame(nn.Conv2d):
    """Conv with TensorFlow/Keras "same" padding (asymmetric when needed), so strided convs
    give the same output sizes as the seeds' Keras models."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_block(
    in_ch: int, spec: ConvSpec, *, batch_norm: bool, conv_dropout: float, spatial_dropout: float
) -> nn.Sequential:
    # Order as in the seeds: conv → BN → ReLU → (spatial) dropout → max-pool.
    layers: list[nn.Module] = [Conv2dSame(in_ch, spec.out, spec.kernel, spec.stride, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(spec.out))
    layers.append(nn.ReLU(inplace=True))
    if spec.dropout_site and spatial_dropout:
        layers.append(nn.Dropout2d(spatial_dropout))
    if spec.dropout_site and conv_dropout:
        layers.append(nn.Dropout(conv_dropout))
    if spec.pool:
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # = Keras pool 2/2 with "same"
    return nn.Sequential(*layers)


def keras_init(module: nn.Module) -> None:
    """Keras defaults (Glorot-uniform weights, zero biases). The seeds were trained with them;
    with torch's defaults the deep 4096-wide dense stack barely trains at lr 1e-2."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_BN_EPS = 1e-5  # the eps of the BN layers _conv_block makes (PyTorch's default)


class AlexNet(nn.Module):
    """Conv feature extractor + dense head; exposes ``forward_features``, ``forward_head``,
    ``reset_classifier`` like timm models."""

    first_conv = "features.0.0"
    head_modules = ("pre_logits", "classifier")  # what model.head replaces

    def __init__(
        self,
        convs: list[ConvSpec],
        dense: list[int],
        *,
        num_classes: int,
        in_chans: int,
        img_size: int,
        batch_norm: bool = False,
        conv_dropout: float = 0.0,
        spatial_dropout: float = 0.0,
        dense_dropout: float = 0.0,
        init: Literal["keras", "torch"] = "keras",
    ) -> None:
        super().__init__()
        blocks, ch = [], in_chans
        for spec in convs:
            blocks.append(
                _conv_block(
                    ch, spec, batch_norm=batch_norm, conv_dropout=conv_dropout,
                    spatial_dropout=spatial_dropout,
                )
            )
            ch = spec.out
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_chans, img_size, img_size)).numel()
        hidden: list[nn.Module] = [nn.Flatten()]
        width = flat
        for units in dense:
            hidden += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            if dense_dropout:
                hidden.append(nn.Dropout(dense_dropout))
            width = units
        self.pre_logits = nn.Sequential(*hidden)
        self.num_features = width
        self.num_classes = num_classes
        self.classifier = nn.Linear(width, num_classes)
        self.init = init
        if init == "keras":
            self.apply(keras_init)

    def fold_batch_norm(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch-norm model's weights for this model without batch norm: each BN folded into
        its conv (weight × γ/σ, bias β − μ·γ/σ), so the convs compute what the BN model computed
        in eval mode (BN-pretrained weights transferred into the plain AlexNet). σ uses the
        epsilon of this model's compat (``bn_eps``: Keras's 1e-3 with ``model.compat: keras``)."""
        if any(isinstance(m, nn.BatchNorm2d) for m in self.modules()):
            return dict(state)
        out = dict(state)
        eps = float(getattr(self, "bn_eps", _BN_EPS))
        for i in range(len(self.features)):
            conv, bn = f"features.{i}.0", f"features.{i}.1"
            if f"{bn}.running_var" not in state or f"{conv}.bias" in state:
                continue
            scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + eps)
            out[f"{conv}.weight"] = state[f"{conv}.weight"] * scale[:, None, None, None]
            out[f"{conv}.bias"] = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                out.pop(f"{bn}.{key}", None)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def body_chain(self) -> list[Step]:
        return module_steps(self, ["features"])

    def forward_chain(self) -> list[Step]:
        return module_steps(self, ["features", "pre_logits", "classifier"])

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        if self.init == "keras":
            keras_init(self.classifier)


KRIZHEVSKY_CONVS = [
    ConvSpec(96, 11, 4, pool=True, dropout_site=False),  # no dropout on conv 1
    ConvSpec(256, 5, 1, pool=True),
    ConvSpec(384, 3),
    ConvSpec(384, 3),
    ConvSpec(256, 3, pool=True),
]


def _small_convs(base: int) -> list[ConvSpec]:
    widths = [base, 2 * base, 4 * base, 4 * base, 2 * base]
    pools = [True, True, False, False, True]
    return [ConvSpec(w, 3, 1, pool=p) for w, p in zip(widths, pools, strict=True)]


@register_model(family="alexnet")
def alexnet_krizhevsky(
    *,
    num_classes: int,
    in_chans: int = 1,
    img_size: int = 256,
    batch_norm: bool = False,
    conv_dropout: float = 0.0,
    spatial_dropout: float = 0.0,
    dense_dropout: float = 0.0,
    dense: tuple[int, ...] = (4096, 4096, 1000),
    init: Literal["keras", "torch"] = "keras",
) -> AlexNet:
    """Krizhevsky's AlexNet: convs 96-256-384-384-256 (11/4, 5, 3, 3, 3), a configurable dense stack."""
    return AlexNet(
        KRIZHEVSKY_CONVS, list(dense), num_classes=num_classes, in_chans=in_chans, img_size=img_size,
        batch_norm=batch_norm, conv_dropout=conv_dropout, spatial_dropout=spatial_dropout,
        dense_dropout=dense_dropout, init=init,
    )


@register_model(family="alexnet")
def alexnet_small(
    *,
    num_classes: int,
    in_chans: int = 1,
    img_size: int = 128,
    base: int = 8,
    batch_norm: bool = False,
    conv_dropout: float = 0.0,
    spatial_dropout: float = 0.0,
    dense_dropout: float = 0.0,
    dense: tuple[int, ...] = (64, 64),
    init: Literal["keras", "torch"] = "keras",
) -> AlexNet:
    """A small AlexNet: widths base·(1, 2, 4, 4, 2), 3×3 convs, dense 64-64."""
    return AlexNet(
        _small_convs(base), list(dense), num_classes=num_classes, in_chans=in_chans,
        img_size=img_size, batch_norm=batch_norm, conv_dropout=conv_dropout,
        spatial_dropout=spatial_dropout, dense_dropout=dense_dropout, init=init,
    )
