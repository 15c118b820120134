"""Training: optimizer/scheduler settings, the seeded fit loop, callbacks, checkpoints and DDP."""

from medtransfer.train.allocator import tune_allocator
from medtransfer.train.callbacks import (
    ALL_METRICS,
    TRAIN_METRICS,
    VAL_METRICS,
    Callback,
    CSVLogger,
    EarlyStopping,
    ProgressBar,
    StopReason,
    TrainState,
)
from medtransfer.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from medtransfer.train.distributed import init_distributed, is_main_process
from medtransfer.train.env import TrainEnv
from medtransfer.train.loop import (
    ClassWeight,
    EarlyStoppingConfig,
    FitResult,
    TrainConfig,
    fit,
    metric_names,
    predict_proba,
)
from medtransfer.train.model_checkpoint import ModelCheckpoint
from medtransfer.train.optim import (
    OptimizerConfig,
    OptimizerName,
    SchedulerConfig,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    step_scheduler,
)
from medtransfer.train.sources import Arrays, Augment, BatchSource, ImageBatches, TensorBatches

__all__ = [
    "ALL_METRICS",
    "TRAIN_METRICS",
    "VAL_METRICS",
    "Arrays",
    "Augment",
    "BatchSource",
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "ClassWeight",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "FitResult",
    "ImageBatches",
    "ModelCheckpoint",
    "OptimizerConfig",
    "OptimizerName",
    "ProgressBar",
    "SchedulerConfig",
    "SchedulerName",
    "StopReason",
    "TensorBatches",
    "TrainConfig",
    "TrainEnv",
    "TrainState",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "metric_names",
    "predict_proba",
    "save_checkpoint",
    "step_scheduler",
    "tune_allocator",
]
