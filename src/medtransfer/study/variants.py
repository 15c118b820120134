"""A study's variants resolved: each with its overrides laid over the shared sections, its
strategies, and the checks of its model, weights and freezing that run before any data is read."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medtransfer.config import (
    ConfigError,
    deep_merge,
    fill_compat,
    from_dict,
    to_dict,
    unknown_key_message,
)
from medtransfer.data import AugmentConfig
from medtransfer.errors import DataError
from medtransfer.freezing import freeze
from medtransfer.models import ModelConfig, check_model, check_weights_spec
from medtransfer.models.loading import load_source_weights
from medtransfer.strategies import (
    FreezeStrategy,
    StrategyConfig,
    freeze_configs,
    strategy_from_dict,
    train_configs,
)
from medtransfer.study.backbones import check_backbones
from medtransfer.study.config import StudyConfig
from medtransfer.study.report_config import check_layers
from medtransfer.study.sections import PretrainConfig, TransferConfig, VariantSpec
from medtransfer.train.optim import check_layer_decay


@dataclass(frozen=True)
class Variant:
    """A variant with every override applied: what actually runs."""

    name: str
    model: ModelConfig
    pretrain: PretrainConfig
    transfer: TransferConfig
    strategies: dict[str, StrategyConfig] = field(default_factory=dict)
    sources: tuple[str, ...] | None = None  # the sources it starts from (None: every source)
    targets: tuple[str, ...] | None = None  # the targets it transfers to (None: every target)
    spec: VariantSpec | None = None  # what it was resolved from (a worker resolves it again)


def resolve_variants(cfg: StudyConfig) -> list[Variant]:
    """Each variant with its overrides laid over the shared sections, and its strategies: a
    matrix's ``strategies`` (with the variant's overrides), or for a study written as
    source/target the one strategy ``freeze`` its ``transfer`` section describes."""
    base_model, base_pre, base_tr = to_dict(cfg.model), to_dict(cfg.pretrain), to_dict(cfg.transfer)
    out = []
    for i, spec in enumerate(cfg.variants):
        where = f"variants[{i}] ({spec.name})"
        transfer = from_dict(TransferConfig, deep_merge(base_tr, spec.transfer), f"{where}.transfer")
        unknown = sorted(set(spec.strategies) - set(cfg.strategies))
        if unknown:
            raise ConfigError(unknown_key_message(unknown[0], f"{where}.strategies", cfg.strategies))
        if spec.only is not None:
            _check_only(cfg, spec, where)
        for key, names in (("only_sources", cfg.sources), ("only_targets", cfg.targets)):
            _check_subset(cfg, where, key, getattr(spec, key), names)
        if cfg.is_matrix:
            strategies = {
                name: strategy_from_dict(deep_merge(raw, spec.strategies.get(name, {})),
                                         f"{where}.strategies.{name}" if name in spec.strategies
                                         else f"strategies.{name}")
                for name, raw in cfg.strategies.items() if spec.only is None or name in spec.only}
        else:
            strategies = {"freeze": FreezeStrategy(freeze=transfer.freeze, train=transfer.train,
                                                   cache=transfer.cache)}
        if cfg.compat != "torch":
            strategies = fill_compat(strategies, cfg.compat)
        check_backbones(strategies, f"{where}.strategies" if spec.strategies else "strategies")
        pretrain = from_dict(PretrainConfig, deep_merge(base_pre, spec.pretrain), f"{where}.pretrain")
        _check_augment(cfg, spec.name, {"pretrain": pretrain.augment, "transfer": transfer.augment},
                       strategies)
        out.append(
            Variant(
                name=spec.name,
                model=from_dict(ModelConfig, deep_merge(base_model, spec.model), f"{where}.model"),
                pretrain=pretrain,
                transfer=transfer,
                strategies=strategies,
                sources=None if spec.only_sources is None else tuple(spec.only_sources),
                targets=None if spec.only_targets is None else tuple(spec.only_targets),
                spec=spec,
            )
        )
    return out


def _check_subset(cfg: StudyConfig, where: str, key: str, chosen: list[str] | None,
                  names: Mapping[str, Any]) -> None:
    """``variants[i].only_sources`` / ``only_targets``: a non-empty list of the matrix's names."""
    if chosen is None:
        return
    if not cfg.is_matrix:
        raise ConfigError(f"'{where}.{key}': names a matrix study's {key.removeprefix('only_')}; this "
                          "study has one source and one target")
    if not chosen:
        raise ConfigError(f"'{where}.{key}': got an empty list; name at least one, or null")
    for name in chosen:
        if name not in names:
            raise ConfigError(unknown_key_message(name, f"{where}.{key}", names))


def _check_only(cfg: StudyConfig, spec: VariantSpec, where: str) -> None:
    if not cfg.is_matrix:
        raise ConfigError(f"'{where}.only': names a matrix study's strategies; this study has "
                          "one strategy (its transfer section)")
    if not spec.only:
        raise ConfigError(f"'{where}.only': got an empty list; name at least one strategy, or null")
    for name in spec.only:
        if name not in cfg.strategies:
            raise ConfigError(unknown_key_message(name, f"{where}.only", cfg.strategies))
    overridden = sorted(set(spec.strategies) - set(spec.only))
    if overridden:
        raise ConfigError(f"'{where}.strategies.{overridden[0]}': overrides a strategy this "
                          f"variant does not run (only: {', '.join(spec.only)})")


def _check_augment(cfg: StudyConfig, variant: str, augments: dict[str, AugmentConfig],
                   strategies: dict[str, StrategyConfig]) -> None:
    """Colour transforms need RGB images; a features strategy extracts each image's features
    once, so it takes offline copies (extracted once like the other images) but not batches
    augmented anew every epoch."""
    for section, aug in augments.items():
        rgb_only = aug.needs_rgb if cfg.preprocess.channels == 1 else []
        if rgb_only:
            raise ConfigError(f"'{section}.augment.{rgb_only[0]}' (variant {variant}): a colour "
                              "transform, but preprocess.color is grayscale (one channel); set "
                              "preprocess.color: rgb, or use channel_shift / brightness / contrast")
    online = [n for n, s in strategies.items() if s.kind == "features" and augments["transfer"].online]
    if online:
        raise ConfigError(f"'transfer.augment' (variant {variant}): strategy '{online[0]}' (kind "
                          "features) extracts each training image's features once, so batches "
                          "augmented every epoch cannot apply; set transfer.augment.offline_copies "
                          "(augmented copies whose features are extracted once too) or switch "
                          "augmentation off for it")


def pretrain_model(v: Variant) -> ModelConfig:
    """The model ``v``'s pretraining trains: its ``model`` with ``pretrain.model`` laid over it."""
    if not v.pretrain.model:
        return v.model
    if "weights" in v.pretrain.model:
        raise ConfigError(f"'pretrain.model.weights' (variant {v.name}): the pretraining starts "
                          "from the source's weights (model.weights or sources.<name>.weights)")
    return from_dict(ModelConfig, deep_merge(to_dict(v.model), v.pretrain.model),
                     f"variants ({v.name}).pretrain.model")


def _check_pretrain_model(cfg: StudyConfig, v: Variant, model: nn.Module | None) -> None:
    """``pretrain.model``'s weights must load into the variant's model (meta device)."""
    pre = pretrain_model(v)
    if pre is v.model:
        return
    source = check_model(pre, hw=cfg.preprocess.hw, in_chans=cfg.preprocess.channels)
    if model is None or source is None:
        return
    try:
        load_source_weights(model, source.state_dict(), fold_batch_norm=True)
    except DataError as exc:
        raise ConfigError(f"'pretrain.model' (variant {v.name}): the pretrained model does not "
                          f"transfer into 'model': {exc}") from None


def check_models(cfg: StudyConfig, variants: list[Variant]) -> None:
    """Every variant's model name, options, weights spec (each source's weights too) and
    freezing, for the study's image size and channels: before any data is read or any file
    written."""
    for v in variants:
        where = f"variants ({v.name}): " if len(variants) > 1 else ""
        try:
            model = check_model(v.model, hw=cfg.preprocess.hw, in_chans=cfg.preprocess.channels)
            _check_pretrain_model(cfg, v, model)
            if model is not None:  # None: the meta device could not build it
                check_layers(cfg.report, model)
                for fz in [fz for s in v.strategies.values() for fz in freeze_configs(s)]:
                    freeze(model, fz)
                trains = [v.pretrain.train, *(t for s in v.strategies.values() for t in train_configs(s))]
                if any(t.optimizer.layer_decay is not None for t in trains):
                    check_layer_decay(model)
            for src in cfg.sources.values():
                if src.weights is not None:
                    check_weights_spec(dataclasses.replace(v.model, weights=src.weights))
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
