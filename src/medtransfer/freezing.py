"""Freeze all but the last layers of a model: one utility with an explicit batch-norm policy
(as Lightning's ``BaseFinetuning``). ``frozen`` keeps frozen BN layers in eval mode (running
statistics fixed); ``train`` lets them learn like any other layer; ``stats`` freezes their affine
weights but keeps updating statistics; ``eval`` keeps every BN layer in eval mode, trainable ones
too (Keras' fine-tuning recipe: unfrozen BN layers still use their pretrained statistics).
What trains is given by the number of last layers — conv/linear layers, a transformer block (a
ViT's ``blocks.i``) counting as one — by the first trainable block (``train_from``) or by a list
of blocks (``trainable_blocks``), module names as in ``model.named_modules()``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import nn

from medtransfer.config import closest
from medtransfer.errors import ConfigError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = nn.modules.batchnorm._BatchNorm


class BNPolicy(enum.StrEnum):
    FROZEN = "frozen"
    TRAIN = "train"
    STATS = "stats"
    EVAL = "eval"


@dataclass(frozen=True)
class FreezeConfig:
    """What trains; the rest is frozen. At most one of: ``trainable_layers`` (how many of the
    last layers train: conv/linear layers, a transformer block counting as one), ``train_from``
    (the first trainable block: it and every module registered after it train),
    ``trainable_blocks`` (exactly these blocks train).
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


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers in registration (= forward, for our models) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def transformer_blocks(model: nn.Module) -> list[str]:
    """Names of the model's transformer blocks, outermost only: modules with an ``attn`` and an
    ``mlp`` child (timm's ViT, DeiT, BEiT, EVA, DINOv2, CLIP towers; Swin's blocks)."""
    out: list[str] = []
    for name, module in model.named_modules():
        children = {child for child, _ in module.named_children()}
        if {"attn", "mlp"} <= children and not any(name.startswith(f"{b}.") for b in out):
            out.append(name)
    return out


def layer_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """What ``trainable_layers`` counts, in order: conv/linear layers, except that the layers of a
    transformer block count as the block (so "the last N layers" of a ViT are its last blocks)."""
    blocks = transformer_blocks(model)
    if not blocks:
        return weight_layers(model)
    units: list[tuple[str, nn.Module]] = []
    for name, module in weight_layers(model):
        block = next((b for b in blocks if name.startswith(f"{b}.")), None)
        if block is None:
            units.append((name, module))
        elif not units or units[-1][0] != block:
            units.append((block, model.get_submodule(block)))
    return units


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
    layers = layer_units(model)
    if cfg.trainable_layers is None:
        return set(order)
    if cfg.trainable_layers > len(layers):
        blocks = " (a transformer block counting as one)" if transformer_blocks(model) else ""
        raise ConfigError(
            f"'trainable_layers': got {cfg.trainable_layers} but the model has only "
            f"{len(layers)} conv/linear layers{blocks}"
        )
    boundary = layers[len(layers) - cfg.trainable_layers][0]
    # Every module at or after the first trainable layer trains; earlier ones freeze.
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
