"""Carry weights from a source model to a target model, and freeze all but the last layers.

Freezing is one utility with an explicit batch-norm policy (as Lightning's ``BaseFinetuning``):
``frozen`` keeps frozen BN layers in eval mode (running statistics fixed), ``train`` lets them
learn like any other layer, ``stats`` freezes their affine weights but keeps updating statistics.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from medtransfer.errors import ConfigError, DataError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = nn.modules.batchnorm._BatchNorm


class BNPolicy(enum.StrEnum):
    FROZEN = "frozen"
    TRAIN = "train"
    STATS = "stats"


class HeadPolicy(enum.StrEnum):
    AUTO = "auto"  # reset the output layer when the class count differs, else keep it
    KEEP = "keep"
    RESET = "reset"


@dataclass(frozen=True)
class FreezeConfig:
    """``trainable_layers``: how many of the last weight layers (conv/linear) train; None = all."""

    trainable_layers: int | None = None
    bn_policy: BNPolicy = BNPolicy.FROZEN

    def __post_init__(self) -> None:
        if self.trainable_layers is not None and self.trainable_layers < 1:
            raise ConfigError(
                f"'trainable_layers': got {self.trainable_layers}; expected an integer >= 1, "
                "or null to train every layer"
            )


@dataclass
class FreezeReport:
    trainable: list[str]
    frozen: list[str]
    trainable_params: int
    frozen_params: int


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers in registration (= forward, for our models) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def freeze(model: nn.Module, cfg: FreezeConfig) -> FreezeReport:
    """Freeze all but the last ``cfg.trainable_layers`` weight layers (and what follows them)."""
    layers = weight_layers(model)
    if cfg.trainable_layers is None:
        first_trainable = 0
    elif cfg.trainable_layers > len(layers):
        raise ConfigError(
            f"'trainable_layers': got {cfg.trainable_layers} but the model has only "
            f"{len(layers)} conv/linear layers"
        )
    else:
        first_trainable = len(layers) - cfg.trainable_layers
    boundary = layers[first_trainable][0] if layers else ""
    order = [name for name, _ in model.named_modules()]
    cut = order.index(boundary) if boundary else 0
    # Every module at or after the first trainable weight layer trains; earlier ones freeze.
    trainable_modules = set(order[cut:])
    report = FreezeReport([], [], 0, 0)
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        trains = name in trainable_modules or (
            isinstance(module, _BN) and cfg.bn_policy is BNPolicy.TRAIN
        )
        for p in own:
            p.requires_grad_(trains)
        count = sum(p.numel() for p in own)
        if trains:
            report.trainable.append(name)
            report.trainable_params += count
        else:
            report.frozen.append(name)
            report.frozen_params += count
    model._medtransfer_frozen_bn = [  # type: ignore[assignment]
        m for n, m in model.named_modules()
        if isinstance(m, _BN) and n not in trainable_modules and cfg.bn_policy is BNPolicy.FROZEN
    ]
    return report


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except frozen BN layers stay in eval mode (see :func:`freeze`)."""
    model.train()
    for bn in getattr(model, "_medtransfer_frozen_bn", []):
        bn.eval()


def _head_keys(model: nn.Module) -> set[str]:
    get = getattr(model, "get_classifier", None)
    if get is None:
        return set()
    head = get()
    prefix = next(n for n, m in model.named_modules() if m is head)
    return {f"{prefix}.{k}" for k in head.state_dict()}


def load_source_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    head: HeadPolicy = HeadPolicy.AUTO,
    source_classes: list[str] | None = None,
    target_classes: list[str] | None = None,
) -> LoadReport:
    """Copy a source state dict into ``model``; any mismatch outside the head is an error.

    The head (``get_classifier()``) is kept when its shape matches and reset (left at its
    fresh initialisation) when the class count differs, unless ``head`` says otherwise.
    """
    target = model.state_dict()
    head_keys = _head_keys(model)
    src_cls = f" {source_classes}" if source_classes else ""
    tgt_cls = f" {target_classes}" if target_classes else ""
    missing = sorted(set(target) - set(state) - head_keys)
    unexpected = sorted(set(state) - set(target) - head_keys)
    if missing or unexpected:
        raise DataError(
            "source weights do not fit the target architecture: "
            f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}. "
            "Transfer into the same architecture (and the same batch_norm setting) as the source."
        )
    bad = [k for k in target if k in state and k not in head_keys and state[k].shape != target[k].shape]
    if bad:
        k = bad[0]
        raise DataError(
            f"source weight '{k}' has shape {tuple(state[k].shape)} but the target expects "
            f"{tuple(target[k].shape)} (different input channels or image size?)"
        )
    head_fits = all(k in state and state[k].shape == target[k].shape for k in head_keys)
    if head is HeadPolicy.KEEP and not head_fits:
        raise DataError(
            f"transfer.head is 'keep' but the source classes{src_cls} and target "
            f"classes{tgt_cls} need different output layers; use head: auto or reset"
        )
    reset_head = head is HeadPolicy.RESET or (head is HeadPolicy.AUTO and not head_fits)
    report = LoadReport()
    new_state = dict(target)
    for k in target:
        if k in head_keys and reset_head:
            report.reset.append(k)
            continue
        new_state[k] = state[k]
        report.loaded.append(k)
    model.load_state_dict(new_state)
    if reset_head:
        report.messages.append(
            f"output layer reset (source classes{src_cls} → target classes{tgt_cls})"
        )
    elif source_classes and target_classes and source_classes != target_classes:
        report.messages.append(
            f"output layer kept: source classes{src_cls} map by position onto target "
            f"classes{tgt_cls}"
        )
    return report
