"""Transfer strategies (scratch, features, freeze, finetune) and cached-activation training."""

from medtransfer.strategies.base import (
    Stage,
    StageResult,
    Strategy,
    StrategyResult,
    TransferData,
)
from medtransfer.strategies.cached import (
    CachePlan,
    PrefixSplit,
    TailModel,
    fit_on_activations,
    plan_cache,
    prefix_activations,
)
from medtransfer.strategies.config import (
    CacheConfig,
    FeaturesStrategy,
    FinetuneStrategy,
    FreezeStrategy,
    MLPHeadConfig,
    ScratchStrategy,
    StrategyConfig,
    freeze_configs,
    train_configs,
)
from medtransfer.strategies.features import extract_features, make_estimator
from medtransfer.strategies.registry import (
    STRATEGIES,
    STRATEGY_RUNNERS,
    register_strategy,
    strategy_for,
    strategy_from_dict,
)
from medtransfer.strategies.run import run_strategy
from medtransfer.strategies.stage import train_stage

__all__ = [
    "STRATEGIES",
    "STRATEGY_RUNNERS",
    "CacheConfig",
    "CachePlan",
    "FeaturesStrategy",
    "FinetuneStrategy",
    "FreezeStrategy",
    "MLPHeadConfig",
    "PrefixSplit",
    "ScratchStrategy",
    "Stage",
    "StageResult",
    "Strategy",
    "StrategyConfig",
    "StrategyResult",
    "TailModel",
    "TransferData",
    "extract_features",
    "fit_on_activations",
    "freeze_configs",
    "make_estimator",
    "plan_cache",
    "prefix_activations",
    "register_strategy",
    "run_strategy",
    "strategy_for",
    "strategy_from_dict",
    "train_configs",
    "train_stage",
]
