"""The sections of a study config a study is built from: its data sets (a task and how it is
split, a matrix's sources, external test sets), the pretraining and transfer sections, and a
variant's overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medtransfer.config import (
    ConfigError,
)
from medtransfer.data import AugmentConfig, DataConfig, SplitConfig
from medtransfer.freezing import FreezeConfig
from medtransfer.models.config import NAMED_WEIGHTS
from medtransfer.models.loading import HeadPolicy
from medtransfer.strategies import (
    CacheConfig,
)
from medtransfer.train import TrainConfig


@dataclass(frozen=True)
class ExternalConfig:
    """An external test set: images from another collection (hospital, scanner, data set),
    never split or trained on, with the target's classes matched by name."""

    data: DataConfig


STUDY_SEED_MAX = 2**31 - 1
RESERVED_TEST_NAMES = ("train", "val", "test", "pooled", "none")


@dataclass(frozen=True)
class TaskConfig:
    """A data set and how it is split; a target may name ``external`` test sets."""

    data: DataConfig
    split: SplitConfig = field(default_factory=SplitConfig)
    external: dict[str, ExternalConfig] = field(default_factory=dict)  # named external test sets

    def check_external(self, where: str) -> None:
        for name in self.external:
            _check_name(f"{where}.external", name)
            lowered = name.lower()
            if lowered in RESERVED_TEST_NAMES or lowered.startswith(("test_", "fold_")):
                raise ConfigError(f"'{where}.external': name {name!r} is taken by the study's own "
                                  "parts (train, val, test_N, fold_N, pooled); choose another")
        if self.external and self.split.folds:
            raise ConfigError(f"'{where}.external' with '{where}.split.folds': external test sets "
                              "are evaluated with a fixed split only (not yet with cross-validation)")


@dataclass(frozen=True)
class SourceSpec:
    """A matrix study's source: pretrained ``weights`` (``imagenet``, ``pretrained``,
    ``file:PATH``, ``run:UNIT_DIR``), a data set to pretrain on (``data``, split by ``split``),
    or both (the weights, then pretraining on the data)."""

    data: DataConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.data is None and self.weights is None:
            raise ConfigError("a source needs 'data' (to pretrain on), 'weights' "
                              "(imagenet, pretrained, file:PATH, run:UNIT_DIR or keras:PATH), or both")
        if self.weights is not None and self.weights not in NAMED_WEIGHTS \
                and not self.weights.startswith(("file:", "run:", "keras:")):
            raise ConfigError(f"'weights': got {self.weights!r}; allowed: imagenet, pretrained, "
                              "file:PATH, run:UNIT_DIR, keras:PATH")


@dataclass(frozen=True)
class PretrainConfig:
    """Training on the source data set (a study written as source/target)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # the pretrained weights transfer starts from: best (the best epoch's, best.pt) or last (the
    # last epoch's, kept as final.pt); null: best, last under
    # train.compat keras (a Keras model after fit is the last epoch's)
    transfer_from: Literal["best", "last"] | None = None
    # keys of 'model' that differ for the pretraining only, e.g. {conv_dropout: 0.3}: pretrain
    # with them, transfer into 'model' (a "unified" model); the two must have the
    # same tensors, except batch_norm in the seeds' AlexNets (folded into the convs)
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transfer_from == "best" and not self.train.restores_best:
            raise ConfigError("'pretrain.transfer_from': got 'best' with train.restore_best false "
                              "(set, or by compat keras): the pretraining keeps no best epoch; use "
                              "transfer_from last (or null), or restore_best true")

    @property
    def transfers_last(self) -> bool:
        """``transfer_from`` resolved: last, or null under ``train.compat: keras``."""
        return self.transfer_from == "last" or (self.transfer_from is None and self.train.keras)


@dataclass(frozen=True)
class TransferConfig:
    """A source/target study's transfer: ``freeze`` leaves the last layers trainable; they train on cached
    activations of the frozen part when that is exact (``cache``; see
    :mod:`medtransfer.strategies.cached`), else on the full model."""

    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    head: HeadPolicy = HeadPolicy.AUTO  # output layer: reset when the class count differs (auto)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass(frozen=True)
class VariantSpec:
    """One arm of the study: a name and the overrides that make it differ."""

    name: str  # the variant's name in tables and folder names
    model: dict[str, Any] = field(default_factory=dict)  # keys of 'model' this variant changes
    pretrain: dict[str, Any] = field(default_factory=dict)  # keys of 'pretrain' it changes
    transfer: dict[str, Any] = field(default_factory=dict)  # keys of 'transfer' it changes
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)  # a matrix's, by name
    # the matrix strategies this variant runs, e.g. [scratch] for an architecture that has no
    # pretrained weights (null: every strategy)
    only: list[str] | None = None
    # the matrix sources this variant starts from, e.g. [chexnet] for settings tuned for that
    # source (null: every source; scratch cells have none)
    only_sources: list[str] | None = None
    # the matrix targets this variant transfers to (null: every target)
    only_targets: list[str] | None = None

    def __post_init__(self) -> None:
        _check_name("variants", self.name)


def _check_name(where: str, name: str) -> None:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"'{where}': name {name!r} must be letters, digits, '-' or '_' "
                          "(it names folders)")
