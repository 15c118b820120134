"""What :func:`medtransfer.train.fit` takes and gives: the training config and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from medtransfer.config import Compat, check_choice
from medtransfer.data.sampling import Sampling
from medtransfer.errors import ConfigError
from medtransfer.train.callbacks import (
    TRAIN_METRICS,
    VAL_METRICS,
    EarlyStoppingConfig,
    StopReason,
    check_monitor,
)
from medtransfer.train.optim import OptimizerConfig, SchedulerConfig
from medtransfer.train.precision import Precision, check_precision

__all__ = ["ClassWeight", "FitResult", "TrainConfig", "metric_names"]


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"  # n_samples / (n_classes * count[c]), as scikit-learn


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model. Monitors name a logged metric: ``lr``, ``loss``, ``accuracy``,
    ``precision``, ``recall``, ``auc``, ``f1`` or a ``val_`` one (e.g. ``val_f1`` with mode
    ``max``); ``mode`` must match its direction. ``f1`` is the positive class's (binary, at 0.5)
    or the macro mean (multiclass), as in ``results.csv``.
    ``sampling`` rebalances each epoch (see :mod:`medtransfer.data.sampling`); it and
    ``class_weight: balanced`` both correct for imbalance, so only one of them may be on.
    ``checkpoint_every``: ``epoch`` writes ``last.pt`` every epoch and ``best.pt`` on every
    improvement; ``end`` keeps the best weights in memory and writes the same files once, when
    fit ends (for short epochs, where whole-model writes dominate; a crash keeps only ``best.pt``);
    ``auto`` is ``end`` on the cached-activation path and ``epoch`` otherwise.
    ``precision``: ``fp32`` (default, bit-reproducible on the CPU), ``bf16`` / ``fp16`` (autocast;
    fp16 with a gradient scaler, CUDA only) or ``auto`` (bf16 on CUDA GPUs with bf16, fp16 on
    other CUDA GPUs, fp32 on the CPU); see :mod:`medtransfer.train.precision`. It applies to
    training, validation and the strategies' prediction and activation caching.
    ``channels_last`` trains 4-D inputs and weights in NHWC memory layout (same numbers up to
    rounding; faster for some models and devices). ``deterministic: false`` lets cuDNN benchmark
    convolution algorithms (CUDA only; no effect on the CPU). ``keep_optimizer``: a finished study
    unit keeps ``last.pt`` whole, with its optimizer state; by default the unit drops ``last.pt``
    where ``best.pt`` exists and else keeps its weights only (see ``study.units``).
    ``compile``: :func:`torch.compile` the model for training and validation (see
    :mod:`medtransfer.train.compiled`); off by default, as it rarely pays off on a CPU."""

    epochs: int = 10  # the most epochs to train (early stopping may end sooner)
    batch_size: int = 32  # images per optimizer step
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint_monitor: str = "val_loss"  # the logged metric that picks best.pt, e.g. val_auc
    checkpoint_mode: Literal["min", "max"] = "min"  # lower (min) or higher (max) monitor is better
    checkpoint_every: Literal["auto", "epoch", "end"] = "auto"
    # balanced: weight each class's loss by n / (k · its count); none: equal weights
    class_weight: ClassWeight = ClassWeight.none
    # end training with best.pt's weights (true) or the last epoch's (false, as Keras); null:
    # true, false under compat keras
    restore_best: bool | None = None
    progress: bool = True  # show a progress bar per epoch
    sampling: Sampling = Sampling.none
    precision: Precision = "fp32"  # fp32 exact; bf16/fp16 autocast; auto: bf16/fp16 on CUDA, fp32 on CPU
    channels_last: bool = False  # train 4-D inputs and weights in NHWC memory layout
    deterministic: bool = True  # false: cuDNN benchmarks convolution algorithms (CUDA only)
    keep_optimizer: bool = False  # a finished unit keeps last.pt with its optimizer state
    compile: bool = False  # torch.compile the model (needs a C++ compiler on the CPU); measure first
    # keras: Keras 3's optimizers (update rules and defaults: eps 1e-7, Adagrad's accumulator
    # 0.1, RMSprop's rho 0.9, decoupled weight decay) and ReduceLROnPlateau (absolute min_delta
    # 1e-4, lr cut after `patience` bad epochs), class-weighted losses divided by the batch size
    # (not by the weight sum), the last epoch's weights kept (restore_best: null → false);
    # torch: PyTorch's; null: the study's compat
    compat: Compat | None = None

    def __post_init__(self) -> None:
        check_precision("precision", self.precision)
        if self.compat is not None:
            check_choice("compat", self.compat, ("torch", "keras"))
        if self.restore_best is not None and not isinstance(self.restore_best, bool):
            raise ConfigError(f"'restore_best': got {self.restore_best!r}; allowed: true, false, null")
        if self.compat == "keras" and self.optimizer.implementation != "auto":
            raise ConfigError(f"'optimizer.implementation': got {self.optimizer.implementation!r} "
                              "with compat keras, whose optimizers have one implementation; "
                              "allowed: auto")
        for key in ("channels_last", "deterministic", "keep_optimizer", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"'{key}': got {getattr(self, key)!r}; allowed: true, false")
        if self.epochs < 1:
            raise ConfigError(f"'epochs': got {self.epochs!r}; allowed: an integer >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"'batch_size': got {self.batch_size!r}; allowed: an integer >= 1")
        check_monitor("checkpoint_monitor", self.checkpoint_monitor, self.checkpoint_mode,
                      "checkpoint_mode")
        check_choice("checkpoint_every", self.checkpoint_every, ("auto", "epoch", "end"))
        if not isinstance(self.class_weight, ClassWeight):
            try:
                object.__setattr__(self, "class_weight", ClassWeight(self.class_weight))
            except ValueError:
                raise ConfigError(
                    f"'class_weight': got {self.class_weight!r}; allowed: none, balanced"
                ) from None
        if not isinstance(self.sampling, Sampling):
            try:
                object.__setattr__(self, "sampling", Sampling(self.sampling))
            except ValueError:
                allowed = ", ".join(s.value for s in Sampling)
                raise ConfigError(f"'sampling': got {self.sampling!r}; allowed: {allowed}") from None
        if self.sampling is not Sampling.none and self.class_weight is not ClassWeight.none:
            raise ConfigError(
                f"'sampling': got {self.sampling.value!r} together with class_weight "
                f"{self.class_weight.value!r}; both rebalance the classes, so use one of them "
                "(allowed with class_weight balanced: sampling none)"
            )
        if self.optimizer.decay > 0 and (self.scheduler.name != "none" or self.scheduler.warmup_epochs):
            raise ConfigError(
                f"'optimizer.decay': got {self.optimizer.decay!r} with scheduler "
                f"{self.scheduler.name.value!r} (warmup_epochs {self.scheduler.warmup_epochs}); "
                "decay is its own schedule, so set scheduler.name: none without warm-up, or decay: 0"
            )
        if self.scheduler.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"'scheduler.warmup_epochs': got {self.scheduler.warmup_epochs}, but epochs is "
                f"{self.epochs}; allowed: fewer than epochs"
            )

    @property
    def keras(self) -> bool:
        """Whether this training follows Keras's semantics (``compat: keras``)."""
        return self.compat == "keras"

    @property
    def restores_best(self) -> bool:
        """``restore_best`` resolved: null is true, or false under ``compat: keras``."""
        return (not self.keras) if self.restore_best is None else self.restore_best


@dataclass
class FitResult:
    """Outcome of :func:`fit`. ``best_*`` follow ``checkpoint_monitor`` (epoch 0 / NaN / None
    when no epoch produced a finite value); ``images_per_second`` counts training steps only;
    ``precision`` is the one that ran (``auto`` resolved)."""

    history: list[dict[str, float]]
    stop_reason: StopReason
    best_epoch: int
    best_metric: float
    best_path: Path | None
    last_path: Path
    seconds: float
    images_per_second: float
    precision: str = "fp32"


def metric_names(has_val: bool) -> list[str]:
    """The keys of each history row :func:`fit` logs, in order."""
    return ["lr", *TRAIN_METRICS, *(VAL_METRICS if has_val else ())]
