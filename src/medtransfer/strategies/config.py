"""Transfer strategies as typed configs, one dataclass per ``kind``.

``scratch``  random init (the caller builds the model without weights), train everything.
``features`` frozen backbone → features from one layer → linear SVM, logistic regression or a
             small MLP.
``freeze``   freeze all but the last N layers / named blocks, train the rest.
``finetune`` two stages: a new head on the frozen base, then unfreeze all (or from a block on)
             with a small learning rate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError
from medtransfer.freezing import BNPolicy, FreezeConfig
from medtransfer.train import OptimizerConfig, TrainConfig
from medtransfer.train.precision import Precision, check_precision


@dataclass(frozen=True)
class CacheConfig:
    """Train the tail on cached activations of the frozen prefix when that is exact (see
    :mod:`medtransfer.strategies.cached`); ``max_gib`` caps the memory the cache may take.

    ``disk``: also keep the activations in the study's cache folder, keyed by the frozen
    prefix's layers and weights and the images, so a later run with the same frozen part and
    images (another seed, a search trial over the tail's settings, a rerun) reads them instead
    of running the prefix again. An entry is as large as the activations in memory.
    """

    enabled: bool = True  # false: always train the full model, frozen part included
    max_gib: float = 4.0
    disk: bool = True

    def __post_init__(self) -> None:
        if not self.max_gib > 0:
            raise ConfigError(f"'cache.max_gib': got {self.max_gib!r}; allowed: a number > 0")


@dataclass(frozen=True)
class ScratchStrategy:
    kind: Literal["scratch"] = "scratch"
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class FreezeStrategy:
    """Train what ``freeze`` leaves trainable (default: the last 3 weight layers).
    A config written by a user must freeze something (:func:`strategy_from_dict`); a study
    written as source/target whose ``transfer.freeze`` freezes nothing trains the whole model
    from the source's weights in one stage."""

    kind: Literal["freeze"] = "freeze"
    freeze: FreezeConfig = field(default_factory=lambda: FreezeConfig(trainable_layers=3))
    train: TrainConfig = field(default_factory=TrainConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


def _small_lr() -> TrainConfig:
    return TrainConfig(optimizer=OptimizerConfig(lr=1e-5))


def _bn_eval() -> FreezeConfig:
    return FreezeConfig(bn_policy=BNPolicy.EVAL)


@dataclass(frozen=True)
class FinetuneStrategy:
    """Stage ``head``: the output layer is fitted on the frozen base. ``head_fit: logreg``
    (default) solves it to convergence as an L2 logistic regression (``head_C``) on the cached
    ``pre_logits`` features (LP-FT); ``train`` trains ``head_freeze``'s trainable part by
    ``head`` (SGD/Adam epochs). Stage ``finetune``: ``unfreeze`` (default: everything, batch
    norm in eval mode so its ImageNet statistics are not re-estimated on a small target) trains
    with ``finetune``'s (small) learning rate, starting from stage 1's weights."""

    kind: Literal["finetune"] = "finetune"
    # stage 1: logreg fits the output layer by logistic regression on cached features (LP-FT);
    # train trains head_freeze's part for the head settings' epochs
    head_fit: Literal["logreg", "train"] = "logreg"
    head_C: float = 1.0  # inverse L2 strength of head_fit: logreg (on standardised features)
    head: TrainConfig = field(default_factory=TrainConfig)  # stage 1's training (head_fit: train)
    finetune: TrainConfig = field(default_factory=_small_lr)  # stage 2's training (lr 1e-5 by default)
    head_freeze: FreezeConfig = field(default_factory=lambda: FreezeConfig(trainable_layers=1))
    unfreeze: FreezeConfig = field(default_factory=_bn_eval)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        check_choice("strategy.head_fit", self.head_fit, ("logreg", "train"))
        if not self.head_C > 0:
            raise ConfigError(f"'strategy.head_C': got {self.head_C!r}; allowed: a number > 0")
        if self.head_freeze.trains_everything:
            raise ConfigError(
                "'strategy.head_freeze': stage 1 must freeze the base; set trainable_layers "
                "(default 1: the output layer), train_from or trainable_blocks"
            )
        if self.head_fit == "logreg":
            head = dataclasses.replace(self.head, compat=None)  # the study's compat is not a setting
            for key, value, default in (("head", head, TrainConfig()),
                                        ("head_freeze", self.head_freeze, FreezeConfig(trainable_layers=1))):
                if value != default:
                    raise ConfigError(
                        f"'strategy.{key}': set, but head_fit is logreg (the default), which "
                        "fits the output layer by logistic regression (head_C) and trains no "
                        f"epochs; set head_fit: train to train the head by '{key}'"
                    )


@dataclass(frozen=True)
class MLPHeadConfig:
    """A small dense head on features: Dense(hidden) → ReLU → Dropout(dropout) → output."""

    hidden: int = 128  # width of the hidden dense layer
    dropout: float = 0.5  # dropout rate after it
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ConfigError(f"'mlp.hidden': got {self.hidden!r}; allowed: an integer >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"'mlp.dropout': got {self.dropout!r}; allowed: a rate in [0, 1)")


@dataclass(frozen=True)
class FeaturesStrategy:
    """Frozen backbone as a feature extractor, features cached on disk.

    ``layer``: ``pre_logits`` (input of the output layer, e.g. VGG16's second 4096-d dense; a
    ViT's own pooling: its class token or mean token, as the model was trained), ``pooled``
    (``forward_features`` pooled by ``pool``) or any module name (its output, pooled by ``pool``).
    ``pool``: ``avg`` / ``max`` over the positions of a feature map (N, C, H, W) or over the patch
    tokens of a transformer's tokens (N, T, D), ``mean`` (as ``avg``), ``cls`` (a transformer's
    class token) or ``flatten``. ``classifier``: ``logreg`` (scikit-learn LogisticRegression),
    ``svm`` (LinearSVC, one-vs-rest, probabilities by Platt scaling — sigmoid calibration of its
    decision function over ``calibration_folds`` stratified folds; ``isotonic`` on request;
    ``none``: its raw decision values through a sigmoid, or a softmax over classes — the SVM's
    own ranking, for an AUC of the raw SVM) or ``mlp``. ``C`` is the inverse regularization
    strength of both linear models. ``precision``: of the feature extraction, as
    ``train.precision`` (the MLP head trains by ``mlp.train``).
    """

    kind: Literal["features"] = "features"
    # pre_logits (the output layer's input; a ViT's own pooling, e.g. its class token), pooled
    # (forward_features pooled by pool) or a module name (its output, pooled by pool)
    layer: str = "pre_logits"
    # avg / max over a feature map's positions or a transformer's patch tokens, mean (as avg),
    # cls (a transformer's class token) or flatten
    pool: Literal["avg", "max", "flatten", "cls", "mean"] = "avg"
    classifier: Literal["logreg", "svm", "mlp"] = "logreg"
    C: float = 1.0
    standardize: bool = True  # scale features to zero mean and unit variance first
    # svm probabilities: Platt (sigmoid), isotonic, or none (raw decision values, uncalibrated)
    calibration: Literal["sigmoid", "isotonic", "none"] = "sigmoid"
    calibration_folds: int = 5
    max_iter: int = 5000  # the solver's iteration limit
    batch_size: int = 64  # images per batch while extracting features
    mlp: MLPHeadConfig = field(default_factory=MLPHeadConfig)
    disk_cache: bool = True  # keep extracted features in the study's cache folder
    precision: Precision = "fp32"  # of the feature extraction: fp32, bf16, fp16 or auto
    channels_last: bool = False  # extract in NHWC layout (faster on CPUs; same numbers up to rounding)
    # Another strategy of the study (finetune or freeze) whose trained model of the same
    # source, target, repeat and fold is the backbone (an SVM on a fine-tuned network's features);
    # null: the cell's source model
    backbone_from: str | None = None

    def __post_init__(self) -> None:
        check_precision("strategy.precision", self.precision)
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"'strategy.channels_last': got {self.channels_last!r}; allowed: true, false")
        check_choice("strategy.pool", self.pool, ("avg", "max", "flatten", "cls", "mean"))
        check_choice("strategy.classifier", self.classifier, ("logreg", "svm", "mlp"))
        check_choice("strategy.calibration", self.calibration, ("sigmoid", "isotonic", "none"))
        if not self.C > 0:
            raise ConfigError(f"'strategy.C': got {self.C!r}; allowed: a number > 0")
        if self.calibration_folds < 2:
            raise ConfigError(
                f"'strategy.calibration_folds': got {self.calibration_folds!r}; allowed: >= 2"
            )
        for key in ("max_iter", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'strategy.{key}': got {getattr(self, key)!r}; allowed: >= 1")
        if self.mlp.train.optimizer.layer_decay is not None:
            raise ConfigError("'strategy.mlp.train.optimizer.layer_decay': the MLP head on features "
                              "has no layers to decay; remove it")


StrategyConfig = ScratchStrategy | FeaturesStrategy | FreezeStrategy | FinetuneStrategy



def train_configs(cfg: Any) -> list[TrainConfig]:
    """Every TrainConfig in a strategy config (its stages', a features MLP head's)."""
    if isinstance(cfg, TrainConfig):
        return [cfg]
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return []
    return [t for f in dataclasses.fields(cfg) for t in train_configs(getattr(cfg, f.name))]


def freeze_configs(cfg: StrategyConfig) -> list[FreezeConfig]:
    """The freezings a strategy applies, in order (to check them before training); a plug-in
    kind's ``freeze`` field, if it has one."""
    if isinstance(cfg, FinetuneStrategy):
        return [cfg.head_freeze, cfg.unfreeze]
    freeze = getattr(cfg, "freeze", None)
    return [freeze] if isinstance(freeze, FreezeConfig) else []
