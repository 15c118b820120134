"""The study's ``report`` section: which extra tables and figures its report makes — paired
differences between strategies (e.g. fine-tuning − features), means over named groups of targets,
first-layer filters, feature maps and activation maximisation (seeds 003, 004). Every figure is
off by default, so a report costs what it did; the section never enters a unit key (the report is
made from finished units)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from medtransfer.config import check_choice, closest
from medtransfer.document import FIGURE_FORMATS
from medtransfer.errors import ConfigError

__all__ = ["ALL_TARGETS", "ActivationMaxConfig", "FeatureMapsConfig", "ReportConfig", "check_layers",
           "difference_pairs", "target_groups"]

ALL_TARGETS = "all"  # the group of every target (target_means.csv's group); no named group takes it


@dataclass(frozen=True)
class FeatureMapsConfig:
    """Feature maps of chosen layers for a few test images, per arm."""

    layers: list[str] = field(default_factory=list)  # module names; empty: the first and the last conv layer
    images: int = 2  # test images shown (spread over the classes, drawn from the study seed)
    channels: int = 8  # maps shown per layer and image (its first channels)

    def __post_init__(self) -> None:
        for key in ("images", "channels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'report.feature_maps.{key}': got {getattr(self, key)!r}; "
                                  "allowed: an integer >= 1")


@dataclass(frozen=True)
class ActivationMaxConfig:
    """Activation maximisation: the input that most excites each of a layer's first filters,
    by gradient ascent from a seeded random image."""

    layer: str | None = None  # a module name; null: the last conv layer
    filters: int = 8  # how many of the layer's first filters
    steps: int = 64  # gradient-ascent steps (Adam on the image)
    lr: float = 0.05  # the ascent's learning rate

    def __post_init__(self) -> None:
        for key in ("filters", "steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'report.activation_max.{key}': got {getattr(self, key)!r}; "
                                  "allowed: an integer >= 1")
        if not self.lr > 0:
            raise ConfigError(f"'report.activation_max.lr': got {self.lr!r}; allowed: a number > 0")


@dataclass(frozen=True)
class ReportConfig:
    """What the report adds to its tables and figures (every figure off by default)."""

    # Pairs [a, b] of a matrix's strategies: a − b per variant × source × target, paired by
    # repeat (or test set), mean with a 95% t-interval, in summary.md, differences.csv and
    # report.html; null: [the finetune, the features strategy] when the matrix has exactly one
    # of each kind, else none; []: none
    differences: list[tuple[str, str]] | None = None
    # Named groups of a matrix's targets, e.g. {ISIC: [isic_a, isic_b, isic_c]}: the mean over each
    # group's targets per variant × source × strategy, with a 95% t-interval over each repeat's mean
    # across the group's targets (repeats paired across targets), in target_means.csv, summary.md and
    # report.html, beside the mean over all targets (always there)
    target_groups: dict[str, list[str]] = field(default_factory=dict)
    filters: bool = False  # first-layer filters of every source model and arm, drawn in plots/
    feature_maps: FeatureMapsConfig | None = None  # feature maps of each arm's model (null: off)
    activation_max: ActivationMaxConfig | None = None  # activation maximisation per arm (null: off)
    # Files of every figure in plots/: png (always: the report embeds it), svg and pdf (vector, for
    # papers). Each format costs about as much as the PNG: [png] halves a report's drawing time
    figure_formats: list[str] = field(default_factory=lambda: ["png", "svg"])

    def __post_init__(self) -> None:
        for i, fmt in enumerate(self.figure_formats):
            check_choice(f"report.figure_formats[{i}]", fmt, FIGURE_FORMATS)
        if "png" not in self.figure_formats or len(set(self.figure_formats)) != len(self.figure_formats):
            raise ConfigError(f"'report.figure_formats': got {self.figure_formats!r}; expected png (the "
                              f"report embeds it) and any of svg, pdf, each once")

    @property
    def explains(self) -> bool:
        """Whether any model figure (filters, feature maps, activation maximisation) is asked for."""
        return self.filters or self.feature_maps is not None or self.activation_max is not None

    def check(self, strategies: Mapping[str, Mapping[str, Any]], matrix: bool,
              targets: Collection[str] = ()) -> None:
        """Every strategy a difference names exists, and the two of a pair differ; every target a
        group names is a target of the study."""
        self._check_groups(matrix, targets)
        if self.differences and not matrix:
            raise ConfigError("'report.differences': differences between strategies need a matrix "
                              "study (sources, targets, strategies); this study has one strategy")
        for i, pair in enumerate(self.differences or []):
            for name in pair:
                if name not in strategies:
                    hint = closest(name, strategies)
                    extra = f"; did you mean '{hint}'?" if hint else ""
                    raise ConfigError(f"'report.differences[{i}]': got strategy {name!r}{extra} "
                                      f"Allowed: {', '.join(strategies)}")
            if pair[0] == pair[1]:
                raise ConfigError(f"'report.differences[{i}]': got {list(pair)!r}; name two "
                                  "different strategies, [a, b] for a − b")

    def _check_groups(self, matrix: bool, targets: Collection[str]) -> None:
        if self.target_groups and not matrix:
            raise ConfigError("'report.target_groups': groups of targets need a matrix study (sources, "
                              "targets, strategies); this study has one target")
        for group, names in self.target_groups.items():
            where = f"'report.target_groups.{group}'"
            if group == ALL_TARGETS:
                raise ConfigError(f"{where}: '{ALL_TARGETS}' names the group of every target, which is "
                                  "always there; give this group another name")
            if not names:
                raise ConfigError(f"{where}: the group is empty; name one or more targets of the study "
                                  f"({', '.join(targets)})")
            for name in names:
                check_choice(f"report.target_groups.{group}", name, targets)  # a target of the study
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(f"{where}: names {', '.join(dupes)} more than once")


def target_groups(report: ReportConfig, targets: Collection[str]) -> dict[str, list[str]]:
    """The groups whose means over targets the report gives: every target (``ALL_TARGETS``) first,
    then ``report.target_groups`` in the order written."""
    return {ALL_TARGETS: list(targets), **report.target_groups}


def check_layers(report: ReportConfig, model: Any) -> None:
    """The layers ``report`` names are modules of ``model`` (built on the meta device before the
    run), so a typo fails before training rather than in the report."""
    names = [n for n, _ in model.named_modules() if n]
    maps = report.feature_maps.layers if report.feature_maps is not None else []
    named = [("report.feature_maps.layers", n) for n in maps]
    if report.activation_max is not None and report.activation_max.layer is not None:
        named.append(("report.activation_max.layer", report.activation_max.layer))
    for key, layer in named:
        if layer not in names:
            hint = closest(layer, names)
            extra = f"; did you mean '{hint}'?" if hint else ""
            raise ConfigError(f"'{key}': got {layer!r}{extra} Allowed: a module name of "
                              f"{type(model).__name__}, e.g. {', '.join(names[:8])}")


def difference_pairs(report: ReportConfig,
                     strategies: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The (a, b) strategy pairs whose difference a − b the report shows: ``report.differences``,
    or by default the one finetune minus the one features strategy of the study, when it has
    exactly one of each kind."""
    if report.differences is not None:
        return [(a, b) for a, b in report.differences]
    kinds: dict[str, list[str]] = {}
    for name, raw in strategies.items():
        kinds.setdefault(str(raw.get("kind")), []).append(name)
    ft, fe = kinds.get("finetune", []), kinds.get("features", [])
    return [(ft[0], fe[0])] if len(ft) == 1 and len(fe) == 1 else []
