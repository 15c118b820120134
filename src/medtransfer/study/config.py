"""The study config: what to pretrain, on which source, how to transfer, to which target.

Variants (seed 000's baseline / augmentation / dropout / batch norm) are overrides laid over the
shared ``model``, ``pretrain`` and ``transfer`` sections, so each differs only where it says so.

Two shapes: one ``source`` and one ``target`` (seed 000: pretrain, then transfer by
``transfer.freeze``), or a matrix (seed 003): named ``sources`` (a data set to pretrain on and/or
pretrained ``weights``) × named ``targets`` × named ``strategies`` × ``repeats`` training seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from medtransfer.calibration import EvaluateConfig
from medtransfer.config import (
    Compat,
    ConfigError,
    check_choice,
    check_device,
    check_seed,
    config_error,
    deep_merge,
    fill_compat,
    from_dict,
    problems_of,
    read_yaml,
    to_dict,
    unknown_key_message,
)
from medtransfer.data import AugmentConfig, DataConfig, PreprocessConfig, SplitConfig
from medtransfer.errors import DataError
from medtransfer.freezing import FreezeConfig, freeze
from medtransfer.models import ModelConfig, check_model, check_weights_spec, import_modules
from medtransfer.models.config import NAMED_WEIGHTS
from medtransfer.models.loading import HeadPolicy, load_source_weights
from medtransfer.strategies import (
    CacheConfig,
    FreezeStrategy,
    StrategyConfig,
    freeze_configs,
    strategy_from_dict,
    train_configs,
)
from medtransfer.study.backbones import check_backbones
from medtransfer.study.report_config import ReportConfig, check_layers
from medtransfer.study.search_config import SearchConfig
from medtransfer.tracking import TrackingConfig
from medtransfer.train import TrainConfig
from medtransfer.train.optim import check_layer_decay


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
    # last epoch's, kept as final.pt; seed 000 transferred the last); null: best, last under
    # train.compat keras (a Keras model after fit is the last epoch's)
    transfer_from: Literal["best", "last"] | None = None
    # keys of 'model' that differ for the pretraining only, e.g. {conv_dropout: 0.3}: pretrain
    # with them, transfer into 'model' (seed 000's "unified" AlexNet); the two must have the
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
    """Seed 000's transfer: ``freeze`` leaves the last layers trainable; they train on cached
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


@dataclass(frozen=True)
class StudyConfig:
    name: str  # the study's name; it names the run folder runs/<name>
    source: TaskConfig | None = None  # the data set to pretrain on (one source/target study)
    target: TaskConfig | None = None  # the data set to transfer to (one source/target study)
    sources: dict[str, SourceSpec] = field(default_factory=dict)  # matrix: named sources
    targets: dict[str, TaskConfig] = field(default_factory=dict)  # matrix: named targets
    # matrix: named transfer strategies, each with a kind (scratch, features, freeze, finetune)
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: int = 1  # matrix: training seeds per cell (initialisation, order, augmentation)
    # matrix: each repeat also draws a new split of every target (seed 003); cells of one repeat
    # share it, so differences from scratch stay paired
    resample_splits: bool = False
    # matrix: each repeat also pretrains every data source anew (its own seed), so the spread
    # over repeats includes pretraining's; off, one pretraining per source serves all repeats
    repeat_pretraining: bool = False
    # the study's random seed (splits, initialisation, order, augmentation), 0..2**31 - 1: the
    # seeds derived from it (repeats, stages) must stay below numpy's 2**32
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    cache_dir: Path | None = None  # disk cache (default: $MEDTRANSFER_CACHE or ~/.cache/medtransfer)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # training on the source
    transfer: TransferConfig = field(default_factory=TransferConfig)
    # the arms compared: each a name and overrides of the sections above
    variants: list[VariantSpec] = field(default_factory=lambda: [VariantSpec("baseline")])
    audit: bool = True  # audit both data sets (shortcuts, duplicates, leakage) before training
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # TensorBoard / MLflow, off
    # Python modules imported first (e.g. my_pkg.models), so model.name can name the models they
    # register with @register_model
    imports: list[str] = field(default_factory=list)
    # what the report adds: strategy differences, first-layer filters, feature maps, activation
    # maximisation
    report: ReportConfig = field(default_factory=ReportConfig)
    # how every cell's network is evaluated after training: temperature calibration and test-time
    # augmentation, off by default (stored with the model: predict and export apply them)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # a hyperparameter search: each arm's trials scored on validation, its best run on the tests
    search: SearchConfig | None = None
    # the framework whose semantics every section follows where PyTorch's and Keras's differ:
    # torch, or keras (a Keras study reproduced: model.compat, every train.compat and
    # preprocess.resize nearest, each section's own setting overriding it; see their keys)
    compat: Compat = "torch"

    def __post_init__(self) -> None:
        check_choice("compat", self.compat, ("torch", "keras"))
        if self.compat != "torch":  # torch is what null means: keys of default studies stay
            object.__setattr__(self, "model", fill_compat(self.model, self.compat))
            object.__setattr__(self, "pretrain", fill_compat(self.pretrain, self.compat))
            if not self.is_matrix:  # a matrix's strategies train (filled in resolve_variants)
                object.__setattr__(self, "transfer", fill_compat(self.transfer, self.compat))
            if self.preprocess.resize is None:
                object.__setattr__(self, "preprocess",
                                   dataclasses.replace(self.preprocess, resize="nearest"))
        if (not isinstance(self.name, str) or not self.name or self.name.startswith(".")
                or not self.name.replace("_", "").replace("-", "").replace(".", "").isalnum()):
            raise ConfigError(f"'name': got {self.name!r}; expected letters, digits, '-', '_' or '.' "
                              "(not first): it names the run folder runs/<name>")
        check_seed("seed", self.seed, STUDY_SEED_MAX, "the seeds derived from it for repeats and "
                   "stages must stay below 2**32, as numpy and scikit-learn require")
        names = [v.name for v in self.variants]
        if not names:
            raise ConfigError("'variants': the study needs at least one variant")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"'variants': names must be unique; repeated: {', '.join(dupes)}")
        check_device("device", self.device)
        if self.repeats < 1:
            raise ConfigError(f"'repeats': got {self.repeats!r}; allowed: an integer >= 1")
        self.report.check(self.strategies, self.is_matrix)
        targets = self.targets if self.is_matrix else {"target": self.target}
        no_val = [name for name, t in targets.items() if t is not None and t.split.val_fraction == 0]
        if self.evaluate.calibration != "none" and no_val:
            raise ConfigError(f"'evaluate.calibration': {self.evaluate.calibration} is fitted on the "
                              f"validation images, but target {no_val[0]!r} has split.val_fraction 0")
        if self.is_matrix:
            self._check_matrix()
        else:
            if self.target is None:
                raise ConfigError("missing required key 'target' (or give 'sources', 'targets' and "
                                  "'strategies' for a matrix study)")
            if self.source is None and self.model.weights is None:
                raise ConfigError("missing required key 'source': a data set to pretrain on, or "
                                  "model.weights (imagenet, pretrained, file:PATH, run:UNIT_DIR) to "
                                  "start from")
            if self.source is not None and self.source.split.folds:
                raise ConfigError("'source.split.folds': cross-validation is for the target task")
            if self.source is not None and self.source.external:
                raise ConfigError("'source.external': external test sets belong to the target")
            self.target.check_external("target")
            if self.repeats != 1 or self.resample_splits or self.repeat_pretraining:
                raise ConfigError("'repeats', 'resample_splits', 'repeat_pretraining': only matrix "
                                  "studies (sources × targets × strategies) repeat cells; this "
                                  "study has one source/target")

    def task(self, role: str) -> TaskConfig:
        """The ``source`` or ``target`` of a single source/target study."""
        task: TaskConfig | None = getattr(self, role)
        if task is None:
            raise ConfigError(f"'{role}': a matrix study has '{role}s', not one '{role}'")
        return task

    @property
    def is_matrix(self) -> bool:
        return bool(self.sources or self.targets or self.strategies)

    def _check_matrix(self) -> None:
        for key in ("source", "target"):
            if getattr(self, key) is not None:
                raise ConfigError(f"'{key}': a matrix study names its data under '{key}s'; "
                                  f"move '{key}' there (e.g. {key}s: {{my_{key}: ...}})")
        for key in ("sources", "targets", "strategies"):
            if not getattr(self, key):
                raise ConfigError(f"missing required key '{key}': a matrix study needs sources, "
                                  "targets and strategies")
            for name in getattr(self, key):
                _check_name(key, name)
        for name, tgt in self.targets.items():
            tgt.check_external(f"targets.{name}")
        for name, src in self.sources.items():
            if src.data is not None and src.split.folds:
                raise ConfigError(f"'sources.{name}.split.folds': cross-validation is for targets")
        both = sorted(set(self.sources) & set(self.targets))
        if both:
            raise ConfigError(f"'sources' and 'targets' share the names {', '.join(both)}; "
                              "names must differ (they name data folders)")
        for name, raw in self.strategies.items():
            strategy_from_dict(raw, f"strategies.{name}")
        if self.repeat_pretraining and not any(s.data is not None for s in self.sources.values()):
            raise ConfigError("'repeat_pretraining': no source has 'data' to pretrain on (weights "
                              "alone are not trained again); remove it or give a source data")
        for key in ("freeze", "train", "cache"):
            if getattr(self.transfer, key) != getattr(TransferConfig(), key):
                raise ConfigError(f"'transfer.{key}': not used by a matrix study, whose strategies "
                                  f"say what trains and how (e.g. strategies.<name>.train)")


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


def _resolve_path(value: Any, base: Path) -> Any:
    if isinstance(value, str) and not value.startswith("demo:") and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def _resolve_task(task: Any, base: Path) -> Any:
    """A task/source mapping with its data path and file:/run: weights made absolute."""
    if not isinstance(task, dict):
        return task
    out = dict(task)
    data = out.get("data")
    if isinstance(data, dict) and "path" in data:
        out["data"] = {**data, "path": _resolve_path(data["path"], base)}
    if isinstance(out.get("external"), dict):
        out["external"] = {k: _resolve_task(v, base) for k, v in out["external"].items()}
    split = out.get("split")
    if isinstance(split, dict) and isinstance(split.get("test_from"), str):
        out["split"] = {**split, "test_from": _resolve_path(split["test_from"], base)}
    weights = out.get("weights")
    if isinstance(weights, str) and weights.startswith(("file:", "run:", "keras:")):
        scheme, rest = weights.split(":", 1)
        out["weights"] = f"{scheme}:{_resolve_path(rest, base)}"
    return out


def _resolve_model(model: Any, base: Path) -> Any:
    """A model mapping with a relative ``timm:local-dir:PATH`` name made absolute."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return model
    for prefix in ("timm:local-dir:", "local-dir:"):
        if model["name"].startswith(prefix):
            return {**model, "name": prefix + _resolve_path(model["name"][len(prefix):], base)}
    return model


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a study YAML; relative data paths are taken relative to the YAML file's folder."""
    path = Path(path)
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return study_from_dict(raw, base=path.resolve().parent, source_name=str(path))


def study_from_dict(
    raw: dict[str, Any], *, base: Path | None = None, source_name: str = "<config>"
) -> StudyConfig:
    base = base or Path.cwd()
    raw = dict(raw)
    for task in ("source", "target"):
        if task in raw:
            raw[task] = _resolve_task(raw[task], base)
    for group in ("sources", "targets"):
        if isinstance(raw.get(group), dict):
            raw[group] = {k: _resolve_task(v, base) for k, v in raw[group].items()}
    if isinstance(raw.get("cache_dir"), str):
        raw["cache_dir"] = _resolve_path(raw["cache_dir"], base)
    if "model" in raw:
        raw["model"] = _resolve_model(raw["model"], base)
    if isinstance(raw.get("variants"), list):
        raw["variants"] = [{**v, "model": _resolve_model(v["model"], base)}
                           if isinstance(v, dict) and "model" in v else v for v in raw["variants"]]
    try:
        imports = raw.get("imports") or []
        if not isinstance(imports, list):
            raise ConfigError(f"'imports': got {imports!r}; expected a list of module names, "
                              "e.g. [my_pkg.models]")
        import_modules(imports)
        cfg = from_dict(StudyConfig, raw)
        check_models(cfg, resolve_variants(cfg))
    except ConfigError as exc:
        raise config_error(problems_of(exc), source_name) from None
    return cfg


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
