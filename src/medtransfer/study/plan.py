"""Every study shape as one plan of typed jobs.

A study is a matrix: variants × sources × targets × strategies × repeats (× cross-validation
folds of the target), as :attr:`StudyConfig.shape` gives it — a study written as one ``source``
and one ``target`` included; a search trial is a variant whose cells are scored on validation
only. Sources with data are pretrained first
(:class:`PretrainJob`); each cell (:class:`CellJob`) then starts from its source — the
pretraining, pretrained weights, or random initialisation for ``scratch`` (source ``none``) —
transfers by its strategy and is evaluated. A ``features`` cell whose strategy has
``backbone_from`` starts instead from the model its upstream cell (same variant, source, target,
repeat and fold) trained: :meth:`Plan.cell_waves` runs every upstream cell in an earlier wave.

The plan is pure configuration: building it reads no data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from medtransfer.strategies import ScratchStrategy, StrategyConfig
from medtransfer.study.backbones import backbone_from
from medtransfer.study.config import StudyConfig
from medtransfer.study.pruning import PruneTarget
from medtransfer.study.sections import VariantSpec
from medtransfer.study.variants import Variant, resolve_variants

__all__ = ["NO_SOURCE", "CellJob", "Job", "Plan", "PretrainJob", "make_plan", "pretrain_seed", "repeat_seed"]

NO_SOURCE = "none"  # the source of scratch cells
Evaluate = Literal["tests", "val"]


def repeat_seed(seed: int, repeat: int) -> int:
    """A cell's training seed: repeat 0 uses ``seed + 1``; other repeats are spread apart."""
    return seed + 1 + 1000 * repeat


def pretrain_seed(seed: int, repeat: int) -> int:
    """A pretraining's seed: repeat 0 uses the study seed; others are spread apart from it and
    from the cells' seeds."""
    return seed + 1000 * repeat


@dataclass(frozen=True)
class PretrainJob:
    """Train ``variant``'s model on data source ``source`` (from the source's weights, if any)."""

    variant: str
    source: str
    repeat: int  # whose seed it trains with: 0 unless the study has repeat_pretraining
    seed: int
    label: str  # names the unit folder
    # the variant's spec, so a worker can resolve a variant the study does not list (a trial)
    spec: VariantSpec | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CellJob:
    """Transfer from ``source`` to ``target`` by ``strategy``, with repeat ``repeat``'s seed,
    on cross-validation fold ``fold`` (None: the target's split); evaluated on the validation
    set and the tests (``evaluate: tests``) or the validation set only (a search trial).
    ``upstream``: the cell whose trained model is this one's backbone (``backbone_from``)."""

    variant: str
    source: str
    target: str
    strategy: str
    repeat: int
    fold: int | None
    seed: int
    label: str
    pretrain: PretrainJob | None = None
    evaluate: Evaluate = "tests"
    upstream: CellJob | None = None
    spec: VariantSpec | None = field(default=None, compare=False, repr=False)  # as PretrainJob's
    # a search trial's cell: the Optuna trial it reports each epoch to, for pruning
    pruning: PruneTarget | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """The unit kind: ``cell``, or ``trial`` when only validation is looked at."""
        return "cell" if self.evaluate == "tests" else "trial"


Job = PretrainJob | CellJob


@dataclass(frozen=True)
class Plan:
    """Pretrainings (each shared by the cells that start from it), then cells."""

    pretrains: tuple[PretrainJob, ...]
    cells: tuple[CellJob, ...]
    variants: tuple[Variant, ...]

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def cell_waves(self) -> list[tuple[CellJob, ...]]:
        """The cells in waves that may each run in parallel: every cell after its upstream."""
        depth: dict[CellJob, int] = {}

        def level(cell: CellJob) -> int:
            if cell not in depth:
                depth[cell] = 0 if cell.upstream is None else level(cell.upstream) + 1
            return depth[cell]

        waves = [level(c) for c in self.cells]
        return [tuple(c for c, w in zip(self.cells, waves, strict=True) if w == k)
                for k in range(max(waves, default=-1) + 1)]


def make_plan(cfg: StudyConfig, variants: list[Variant] | None = None, *,
              evaluate: Evaluate = "tests") -> Plan:
    """The jobs of ``cfg`` for ``variants`` (default: the study's own)."""
    variants = variants if variants is not None else resolve_variants(cfg)
    shape = cfg.shape
    pre_repeats = cfg.repeats if cfg.repeat_pretraining else 1
    pretrains: dict[tuple[str, str, int], PretrainJob] = {}
    for v in variants:
        for s, data in shape.sources.items():
            for r in range(pre_repeats) if data is not None else ():
                label = shape.pretrain_label(v.name, s, r if cfg.repeat_pretraining else None)
                pretrains[(v.name, s, r)] = PretrainJob(v.name, s, r, pretrain_seed(cfg.seed, r), label,
                                                        v.spec)
    cells = []
    for v in variants:
        strategies: dict[str, StrategyConfig] = v.strategies
        for t, task in shape.targets.items():
            n_folds = task.split.folds or 0
            if v.targets is not None and t not in v.targets:
                continue
            for st, strategy in strategies.items():
                upstream = backbone_from(strategy)
                scratch = isinstance(strategies[upstream] if upstream else strategy, ScratchStrategy)
                names = [NO_SOURCE] if scratch else [s for s in shape.sources
                                                     if v.sources is None or s in v.sources]
                for s in names:
                    for r in range(cfg.repeats):
                        pre = pretrains.get((v.name, s, r if cfg.repeat_pretraining else 0))
                        for fold in range(n_folds) if n_folds else [None]:
                            label = shape.cell_label(v.name, s, t, st, r, fold)
                            cells.append(CellJob(v.name, s, t, st, r, fold, repeat_seed(cfg.seed, r),
                                                 label, pre, evaluate, spec=v.spec))
    used = {c.pretrain for c in cells}  # a variant that runs only scratch pretrains nothing
    return Plan(tuple(p for p in pretrains.values() if p in used), _linked(cells, variants),
                tuple(variants))


def _linked(cells: list[CellJob], variants: list[Variant]) -> tuple[CellJob, ...]:
    """``cells`` with each ``backbone_from`` cell's ``upstream`` set to its upstream cell."""
    by_place = {(c.variant, c.source, c.target, c.strategy, c.repeat, c.fold): c for c in cells}
    kinds = {v.name: v.strategies for v in variants}
    out = []
    for c in cells:
        upstream = backbone_from(kinds[c.variant][c.strategy])
        if upstream is not None:
            c = dataclasses.replace(c, upstream=by_place[(c.variant, c.source, c.target, upstream,
                                                          c.repeat, c.fold)])
        out.append(c)
    return tuple(out)
