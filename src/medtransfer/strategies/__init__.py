"""Transfer strategies (scratch, features, freeze, finetune) and cached-activation training."""

from medtransfer.strategies.cached import (
    ActivationModel,
    CachePlan,
    PrefixSplit,
    fit_on_activations,
    plan_cache,
    prefix_activations,
)
from medtransfer.strategies.config import (
    STRATEGIES,
    CacheConfig,
    FeaturesStrategy,
    FinetuneStrategy,
    FreezeStrategy,
    MLPHeadConfig,
    ScratchStrategy,
    StrategyConfig,
    freeze_configs,
    strategy_from_dict,
)
from medtransfer.strategies.features import extract_features, make_estimator
from medtransfer.strategies.run import StageResult, StrategyResult, run_strategy, train_stage

__all__ = [
    "STRATEGIES",
    "ActivationModel",
    "CacheConfig",
    "CachePlan",
    "FeaturesStrategy",
    "FinetuneStrategy",
    "FreezeStrategy",
    "MLPHeadConfig",
    "PrefixSplit",
    "ScratchStrategy",
    "StageResult",
    "StrategyConfig",
    "StrategyResult",
    "extract_features",
    "fit_on_activations",
    "freeze_configs",
    "make_estimator",
    "plan_cache",
    "prefix_activations",
    "run_strategy",
    "strategy_from_dict",
    "train_stage",
]
