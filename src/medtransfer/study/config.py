"""The study config: what to pretrain, on which source, how to transfer, to which target.

Variants (e.g. a baseline, augmentation, dropout, batch norm) are overrides laid over the
shared ``model``, ``pretrain`` and ``transfer`` sections, so each differs only where it says so.

Two ways to write a study: one ``source`` and one ``target`` (pretrain, then transfer by
``transfer.freeze``), or a matrix: named ``sources`` (a data set to pretrain on and/or pretrained
``weights``) × named ``targets`` × named ``strategies`` × ``repeats`` training seeds. Either is one
shape inside (:attr:`StudyConfig.shape`): the first is the matrix with one source ``source``, one
target ``target`` and one strategy ``freeze``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.calibration import EvaluateConfig
from medtransfer.config import (
    Compat,
    ConfigError,
    check_choice,
    check_device,
    check_seed,
    fill_compat,
)
from medtransfer.data import PreprocessConfig
from medtransfer.models import ModelConfig
from medtransfer.strategies import (
    strategy_from_dict,
)
from medtransfer.study.report_config import ReportConfig
from medtransfer.study.search_config import SearchConfig
from medtransfer.study.sections import (
    STUDY_SEED_MAX,
    PretrainConfig,
    SourceSpec,
    TaskConfig,
    TransferConfig,
    VariantSpec,
    _check_name,
)
from medtransfer.tracking import TrackingConfig


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
    # matrix: each repeat also draws a new split of every target; cells of one repeat
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
    # what the report adds: strategy differences, means over groups of targets, first-layer
    # filters, feature maps, activation maximisation
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
        self.report.check(self.strategies, self.is_matrix, list(self.targets))
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
        """Written as a matrix (sources, targets, strategies); what the report calls its rows."""
        return bool(self.sources or self.targets or self.strategies)

    @functools.cached_property
    def shape(self) -> StudyShape:
        """The study as the matrix every study is inside (see :class:`StudyShape`)."""
        if self.is_matrix:
            return StudyShape({k: None if s.data is None else TaskConfig(s.data, s.split)
                               for k, s in self.sources.items()},
                              {k: s.weights for k, s in self.sources.items()}, dict(self.targets), False)
        return StudyShape({SINGLE_SOURCE: self.source}, {SINGLE_SOURCE: None},
                          {SINGLE_TARGET: self.task("target")}, True)

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


# The names of the one source, target and strategy of a study written as source/target.
SINGLE_SOURCE, SINGLE_TARGET, SINGLE_STRATEGY = "source", "target", "freeze"


@dataclass(frozen=True)
class StudyShape:
    """Every study as a matrix: named ``sources`` (the data each pretrains on, None for weights
    alone), each source's own ``weights`` (None: the variant's ``model.weights``), and named
    ``targets``. A study written as source/target (``single``) is the matrix with one source
    ``source``, one target ``target`` and one strategy ``freeze``; its jobs are labelled by their
    variant alone, as its report names its rows."""

    sources: Mapping[str, TaskConfig | None]
    weights: Mapping[str, str | None]
    targets: Mapping[str, TaskConfig]
    single: bool

    def pretrain_label(self, variant: str, source: str, repeat: int | None) -> str:
        """A pretraining job's label (``repeat``: with ``repeat_pretraining``)."""
        if self.single:
            return variant
        return f"{variant}.{source}" + ("" if repeat is None else f".r{repeat}")

    def cell_label(self, variant: str, source: str, target: str, strategy: str, repeat: int,
                   fold: int | None) -> str:
        """A cell's label; it names its unit folder."""
        if self.single:
            return variant if fold is None else f"{variant}-fold{fold + 1}"
        base = f"{variant}.{source}.{target}.{strategy}.r{repeat}"
        return base if fold is None else f"{base}.f{fold + 1}"
