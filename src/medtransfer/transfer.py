"""Carry weights from a source model to a target model, and freeze all but the last layers.

Freezing is one utility with an explicit batch-norm policy (as Lightning's ``BaseFinetuning``):
``frozen`` keeps frozen BN layers in eval mode (running statistics fixed), ``train`` lets them
learn like any other layer, ``stats`` freezes their affine weights but keeps updating statistics,
``eval`` keeps every BN layer in eval mode, trainable ones too (Keras' fine-tuning recipe:
unfrozen BN layers still use their pretrained statistics).
What trains is given by the number of last weight layers, by the first trainable block
(``train_from``) or by a list of blocks (``trainable_blocks``), module names as in
``model.named_modules()``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from timm.models import adapt_input_conv
from torch import nn

from medtransfer.config import closest
from medtransfer.errors import ConfigError, DataError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = nn.modules.batchnorm._BatchNorm


class BNPolicy(enum.StrEnum):
    FROZEN = "frozen"
    TRAIN = "train"
    STATS = "stats"
    EVAL = "eval"


class HeadPolicy(enum.StrEnum):
    AUTO = "auto"  # reset the output layer when the class count differs, else keep it
    KEEP = "keep"
    RESET = "reset"


@dataclass(frozen=True)
class FreezeConfig:
    """What trains; the rest is frozen. At most one of: ``trainable_layers`` (how many of the
    last weight layers, conv/linear, train), ``train_from`` (the first trainable block: it and
    every module registered after it train), ``trainable_blocks`` (exactly these blocks train).
    All unset = everything trains."""

    trainable_layers: int | None = None
    # batch norm: frozen outside the trainable part, train (always), stats (running statistics
    # update, weights frozen), eval (never updated)
    bn_policy: BNPolicy = BNPolicy.FROZEN
    train_from: str | None = None
    trainable_blocks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.trainable_layers is not None and self.trainable_layers < 1:
            raise ConfigError(
                f"'trainable_layers': got {self.trainable_layers}; expected an integer >= 1, "
                "or null to train every layer"
            )
        if self.trainable_blocks is not None:
            object.__setattr__(self, "trainable_blocks", tuple(self.trainable_blocks))
            if not self.trainable_blocks:
                raise ConfigError(
                    "'trainable_blocks': got an empty list; name at least one block, or null"
                )
        given = [k for k in ("trainable_layers", "train_from", "trainable_blocks")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"freeze: got {' and '.join(given)}; allowed: at most one of trainable_layers, "
                "train_from, trainable_blocks"
            )

    @property
    def trains_everything(self) -> bool:
        return self.trainable_layers is None and self.train_from is None and self.trainable_blocks is None


@dataclass
class FreezeReport:
    trainable: list[str]
    frozen: list[str]
    trainable_params: int
    frozen_params: int


@dataclass
class LoadReport:
    """What :func:`load_source_weights` did with each tensor: ``loaded`` as is, ``adapted``
    (changed to fit, e.g. the first conv summed over RGB), ``reset`` (target tensors left at
    their fresh initialisation) and ``dropped`` (source tensors not used)."""

    loaded: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers in registration (= forward, for our models) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def block_names(model: nn.Module, depth: int = 2) -> list[str]:
    """Module names up to ``depth`` dots deep: the names ``train_from``/``trainable_blocks`` take."""
    return [n for n, _ in model.named_modules() if n and n.count(".") < depth]


def _check_block(key: str, name: str, order: list[str], model: nn.Module) -> None:
    if name in order and name:
        return
    hint = closest(name, [n for n in order if n])
    extra = f"; did you mean '{hint}'?" if hint else ""
    shown = block_names(model, 1)
    raise ConfigError(
        f"'{key}': got {name!r}{extra} Allowed: a module name of the model, e.g. {', '.join(shown)}"
    )


def _trainable_modules(model: nn.Module, cfg: FreezeConfig) -> set[str]:
    order = [name for name, _ in model.named_modules()]
    if cfg.trainable_blocks is not None:
        for block in cfg.trainable_blocks:
            _check_block("trainable_blocks", block, order, model)
        return {n for n in order if any(n == b or n.startswith(b + ".") for b in cfg.trainable_blocks)}
    if cfg.train_from is not None:
        _check_block("train_from", cfg.train_from, order, model)
        return set(order[order.index(cfg.train_from):])
    layers = weight_layers(model)
    if cfg.trainable_layers is None:
        return set(order)
    if cfg.trainable_layers > len(layers):
        raise ConfigError(
            f"'trainable_layers': got {cfg.trainable_layers} but the model has only "
            f"{len(layers)} conv/linear layers"
        )
    boundary = layers[len(layers) - cfg.trainable_layers][0]
    # Every module at or after the first trainable weight layer trains; earlier ones freeze.
    return set(order[order.index(boundary):])


def freeze(model: nn.Module, cfg: FreezeConfig) -> FreezeReport:
    """Freeze all but what ``cfg`` names as trainable (and apply its BN policy)."""
    trainable_modules = _trainable_modules(model, cfg)
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
        if isinstance(m, _BN) and (
            cfg.bn_policy is BNPolicy.EVAL
            or (n not in trainable_modules and cfg.bn_policy is BNPolicy.FROZEN)
        )
    ]
    return report


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except BN layers the policy keeps in eval mode (see :func:`freeze`)."""
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


def _fmt_classes(classes: list[str] | None) -> str:
    if not classes:
        return ""
    if len(classes) <= 8:
        return f" {list(classes)}"
    return f" [{', '.join(repr(c) for c in classes[:3])}, … {len(classes)} classes]"


def _adapt_first_conv(
    key: str, src: torch.Tensor, dst: torch.Tensor, report: LoadReport
) -> torch.Tensor | None:
    """``src`` summed/repeated over input channels to fit ``dst``, or None if that cannot fit."""
    if src.ndim != 4 or dst.ndim != 4 or src.shape[0] != dst.shape[0] or src.shape[2:] != dst.shape[2:]:
        return None
    out = adapt_input_conv(int(dst.shape[1]), src, base_chans=int(src.shape[1]))
    report.adapted.append(key)
    how = "summed over" if dst.shape[1] == 1 else "repeated/rescaled from"
    report.messages.append(
        f"input conv '{key}': {how} {src.shape[1]} source input channels → {dst.shape[1]}"
    )
    return out


def load_source_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    head: HeadPolicy = HeadPolicy.AUTO,
    source_classes: list[str] | None = None,
    target_classes: list[str] | None = None,
    adapt_input: str | None = None,
) -> LoadReport:
    """Copy a source state dict into ``model``; any mismatch outside the head is an error.

    The head (``get_classifier()``) is kept when its shape matches and reset (left at its
    fresh initialisation, the source's head tensors dropped) when the class count differs,
    unless ``head`` says otherwise. ``adapt_input`` names the first conv module: its weight may
    differ in input channels and is then adapted (summed to 1 channel, as timm does).
    """
    target = model.state_dict()
    head_keys = _head_keys(model)
    src_cls, tgt_cls = _fmt_classes(source_classes), _fmt_classes(target_classes)
    missing = sorted(set(target) - set(state) - head_keys)
    unexpected = sorted(set(state) - set(target) - head_keys)
    if missing or unexpected:
        raise DataError(
            "source weights do not fit the target architecture: "
            f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}. "
            "Transfer into the same architecture (and the same batch_norm setting) as the source."
        )
    report = LoadReport()
    adapted: dict[str, torch.Tensor] = {}
    first_conv = f"{adapt_input}.weight" if adapt_input else None
    bad = [k for k in target if k in state and k not in head_keys and state[k].shape != target[k].shape]
    for k in bad:
        fitted = _adapt_first_conv(k, state[k], target[k], report) if k == first_conv else None
        if fitted is None:
            raise DataError(
                f"source weight '{k}' has shape {tuple(state[k].shape)} but the target expects "
                f"{tuple(target[k].shape)} (different input channels or image size?)"
            )
        adapted[k] = fitted
    head_fits = all(k in state and state[k].shape == target[k].shape for k in head_keys)
    if head is HeadPolicy.KEEP and not head_fits:
        raise DataError(
            f"transfer.head is 'keep' but the source classes{src_cls} and target "
            f"classes{tgt_cls} need different output layers; use head: auto or reset"
        )
    reset_head = head is HeadPolicy.RESET or (head is HeadPolicy.AUTO and not head_fits)
    new_state = dict(target)
    for k in target:
        if k in head_keys and reset_head:
            report.reset.append(k)
            continue
        new_state[k] = adapted.get(k, state[k])
        if k not in adapted:
            report.loaded.append(k)
    report.dropped = sorted(k for k in state if (k in head_keys and reset_head) or k not in target)
    model.load_state_dict(new_state)
    if reset_head:
        report.messages.append(
            f"output layer reset (source classes{src_cls} → target classes{tgt_cls}); "
            f"dropped source tensors {report.dropped}"
        )
    elif source_classes and target_classes and source_classes != target_classes:
        report.messages.append(
            f"output layer kept: source classes{src_cls} map by position onto target "
            f"classes{tgt_cls}"
        )
    return report
