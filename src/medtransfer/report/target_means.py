"""A matrix study's means over targets (seed 003's Figure 3 and its "Mean ISIC" row): for every
variant × source × strategy, the mean over all targets and over each named group of targets
(``report.target_groups``), with a t-interval over the replicates' means across the targets.

Replicates are paired across targets: repeat r of every target used the same training seed (and,
with ``resample_splits``, that repeat's split draw), so the mean over the targets of repeat r is one
replicate of the mean over targets, and the t-interval over those R means captures what retraining
(and resplitting) moves. The targets are the study's, not a sample of possible targets: the
interval says nothing about other targets. With one repeat the replicates are the test sets (or
folds), paired by their name. Where the targets of a group have different replicates (e.g.
different numbers of test sets), or fewer than two, the mean has no interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.csvfile import write_csv
from medtransfer.document import Doc, fmt
from medtransfer.evaluate import mean_sd
from medtransfer.report.replicates import NO_SOURCE, replicates
from medtransfer.stats import t_interval
from medtransfer.study.config import StudyConfig
from medtransfer.study.report_config import ALL_TARGETS, target_groups
from medtransfer.study.rundir import TARGET_MEANS

__all__ = ["LEVEL", "TARGET_MEAN_COLUMNS", "TargetMean", "target_means", "target_means_doc",
           "write_target_means"]

TARGET_MEAN_COLUMNS = ("variant", "source", "strategy", "group", "targets", "n_targets", "stage", "metric",
                       "mean", "low", "high", "sd", "n", "over", "level")
LEVEL = 0.95


@dataclass(frozen=True)
class TargetMean:
    """One arm's (variant × source × strategy) mean over a group of targets."""

    variant: str
    source: str  # ``none`` for the scratch reference
    strategy: str
    group: str  # ``all`` (every target) or a name of ``report.target_groups``
    targets: tuple[str, ...]  # the group's targets this arm has cells on (the mean is over these)
    n_targets: int  # how many targets the group names (more than ``targets`` where cells are missing)
    stage: str
    metric: str
    mean: float  # mean over ``targets`` of each target's mean over its replicates
    low: float  # t-interval over the per-replicate means across ``targets`` (NaN: none)
    high: float
    sd: float  # sample sd of the per-replicate means across ``targets``
    n: int  # replicates paired across the targets (0: their replicates differ)
    over: str  # what a replicate is: repeats, test sets or folds
    level: float

    def row(self) -> dict[str, Any]:
        """The CSV row (``targets`` joined by ``;``)."""
        return {c: getattr(self, c) for c in TARGET_MEAN_COLUMNS} | {"targets": ";".join(self.targets)}

    @property
    def complete(self) -> bool:
        """Whether every target of the group is in the mean."""
        return len(self.targets) == self.n_targets


def _mean_over(variant: str, source: str, strategy: str, group: str, names: Sequence[str],
               per: Mapping[tuple[str, str, str, str], dict[Any, float]], over: str, stage: str,
               metric: str, level: float) -> TargetMean | None:
    have = [t for t in names if (variant, t, source, strategy) in per]
    if not have:
        return None
    reps = [per[(variant, t, source, strategy)] for t in have]
    mean = mean_sd(mean_sd(r.values()).mean for r in reps).mean
    ids = set(reps[0])
    low = high = sd = math.nan
    n = 0
    if all(set(r) == ids for r in reps):
        # One replicate of the mean over targets per replicate id, shared by every target.
        ci = t_interval([float(np.mean([r[i] for r in reps])) for i in sorted(ids, key=str)], level)
        n = ci.n
        if ci.n_nan == 0:
            low, high, sd = ci.low, ci.high, ci.sd
    return TargetMean(variant, source, strategy, group, tuple(have), len(names), stage, metric, mean,
                      low, high, sd, n, over, level)


def target_means(cfg: StudyConfig, rows: Sequence[dict[str, Any]], metric: str = "auc",
                 stage: str = "transfer", level: float = LEVEL) -> list[TargetMean]:
    """Every arm's mean over all targets and over each ``report.target_groups`` group, arms in the
    order of the study (scratch first, then each source's strategies), groups as written."""
    per, over = replicates(rows, metric, stage)
    groups = target_groups(cfg.report, cfg.targets)
    present = {(v, s, st) for v, _, s, st in per}
    order = [(v.name, src, st) for v in cfg.variants for src in (NO_SOURCE, *cfg.sources)
             for st in cfg.strategies]
    out = []
    for arm in order:
        if arm not in present:
            continue
        for group, names in groups.items():
            m = _mean_over(*arm, group, names, per, over, stage, metric, level)
            if m is not None:
                out.append(m)
    return out


def write_target_means(out: Path, cfg: StudyConfig, rows: Sequence[dict[str, Any]]) -> Path:
    """``target_means.csv``: every arm's means over targets (test and validation; AUC and accuracy)."""
    means = [m for stage in ("transfer", "val") for metric in ("auc", "accuracy")
             for m in target_means(cfg, rows, metric, stage)]
    return write_csv(out / TARGET_MEANS, [m.row() for m in means], TARGET_MEAN_COLUMNS)


def _group_name(group: str, names: Sequence[str]) -> str:
    if group == ALL_TARGETS:
        return f"all {len(names)} targets" if len(names) > 1 else f"target {names[0]}"
    return f"{group} ({', '.join(names)})"


def _cell(m: TargetMean | None) -> str:
    if m is None:
        return "–"
    text = fmt(m.mean) if math.isnan(m.low) else f"{fmt(m.mean)} [{fmt(m.low)}, {fmt(m.high)}]"
    return text if m.complete else f"{text} ({len(m.targets)} of {m.n_targets} targets)"


def _method(cfg: StudyConfig, over: str) -> str:
    """How the cells were computed, for the table's caption."""
    rep = over.removesuffix("s").replace(" ", "-")
    if over == "repeats":
        split = (", and its own split draw of every target" if cfg.resample_splits else "") + (
            ", from the same pretraining" if cfg.repeat_pretraining else "")
        why = (f"Repeats are paired across targets: repeat r trains every target's cell with the same "
               f"seed{split}, so the mean over the targets of repeat r is one replicate of the mean "
               "over targets; the interval covers "
               "what retraining" + (" and resplitting" if cfg.resample_splits else "") + " moves")
    else:
        why = (f"The {over} of different targets are drawn independently and paired by name; the "
               f"interval covers the spread between {over}")
    return (f"Each cell: the mean over the group's targets of each target's mean over its {over} "
            f"[{LEVEL:.0%} t-interval over the per-{rep} means across the targets]. {why}. The targets "
            f"are the study's, not a sample of targets. No interval where the targets' {over} differ "
            "or there is only one; (k of N targets): the arm has cells on k of the group's N targets. "
            "Rows in `target_means.csv`.")


def target_means_doc(doc: Doc, cfg: StudyConfig, rows: Sequence[dict[str, Any]], metric: str = "auc") -> None:
    """Per variant, into ``doc``: a row per source × strategy, a column per group (all targets
    first), each cell the mean over the group's targets [t-interval], and how it was computed."""
    means = target_means(cfg, rows, metric)
    if not means:
        return
    groups = target_groups(cfg.report, cfg.targets)
    over = means[0].over
    by = {(m.variant, m.source, m.strategy, m.group): m for m in means}
    for v in [v.name for v in cfg.variants]:
        arms = list(dict.fromkeys((m.source, m.strategy) for m in means if m.variant == v))
        if not arms:
            continue
        suffix = f" — variant {v}" if len(cfg.variants) > 1 else ""
        doc.heading(f"{metric.upper()} mean over targets, per source × strategy{suffix}", 3)
        doc.para(_method(cfg, over))
        body = [["no transfer" if s == NO_SOURCE else s, st, *(_cell(by.get((v, s, st, g))) for g in groups)]
                for s, st in arms]
        doc.table(["source", "strategy", *(_group_name(g, names) for g, names in groups.items())], body)
