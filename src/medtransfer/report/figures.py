"""The report's figures for a run: learning curves of every unit, pooled ROC curves with
bootstrap bands, confusion matrices, forest plots of the comparisons, reliability diagram, and a
matrix's bars per target and per source averaged over targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medtransfer.document import p_text
from medtransfer.evaluate import confusion
from medtransfer.plots import (
    FigureDir,
    ForestRow,
    Plot,
    _figure,
    confusion_figure,
    forest_figure,
    learning_curves_figure,
    read_history,
    reliability_figure,
    roc_figure,
)
from medtransfer.report.replicates import NO_SOURCE
from medtransfer.report.summary import arm_stats, internal_rows
from medtransfer.report.target_means import TargetMean, target_means
from medtransfer.study.report_config import ALL_TARGETS
from medtransfer.study.rundir import HISTORY, POOLED, Arm, Predictions, RunDir

__all__ = ["run_figures", "target_means_figure"]


def _save(fig: Any, out: FigureDir, name: str, caption: str) -> Plot:
    return Plot(caption, out.save(fig, name))


def _forest(rows: Sequence[dict[str, Any]], metric: str, out: FigureDir, suffix: str = "") -> Plot | None:
    chosen = [r for r in rows if r["metric"] == metric]
    if not chosen:
        return None
    order = {t: i for i, t in enumerate([POOLED, *sorted({r["test_set"] for r in chosen} - {POOLED},
                                                       key=lambda s: (len(s), s))])}
    chosen.sort(key=lambda r: (order[r["test_set"]], r["arm"]))
    label = "AUC" if metric == "auc" else metric
    items = [
        ForestRow(f"{r['arm']} · {r['test_set']}", r["diff"], r["ci_low"], r["ci_high"],
                  bool(r["significant"]), f"Holm {p_text(r['p_holm'])}")
        for r in chosen
    ]
    ref = chosen[0]["reference"]
    fig = forest_figure(items, f"{label} difference vs {ref}",
                        f"{label}: arm − {ref} (95% CI; filled = significant after Holm)")
    where = f" ({chosen[0]['target']})" if suffix else ""
    return _save(
        fig, out, f"forest_{metric}{suffix}", f"Forest plot of {label} differences against {ref}{where}"
    )


def _learning_curves(run: RunDir, out: FigureDir) -> list[Plot]:
    """Every pretraining unit, and each arm's (first) cell."""
    plots = []
    units = [("pretrain", u.job["id"], u, "source") for u in run.pretrains]
    units += [
        ("transfer", _name(run, arm), arm.cells[0], "target") for arms in run.arms.values() for arm in arms
    ]
    for kind, name, unit, task in units:
        if not unit.has(HISTORY):  # a classifier on features has no epochs
            continue
        hist = read_history(unit.file(HISTORY))
        best = int(unit.result.best_epoch or 0) or None
        if best and hist and "stage_index" in hist[-1]:  # the best epoch of the last stage
            best += sum(r["stage_index"] < hist[-1]["stage_index"] for r in hist)
        fig = learning_curves_figure(hist, f"{name}: {kind} on the {task}", best)
        plots.append(_save(fig, out, f"learning_{kind}_{name}", f"{name} — {kind} ({task} task)"))
    return plots


def _name(run: RunDir, arm: Arm) -> str:
    """An arm's name in figure files and captions: its label, prefixed by the target when the
    run has several."""
    return arm.label if len(run.arms) == 1 else f"{arm.target}.{arm.label}"


def _suffix(run: RunDir, target: str) -> str:
    return "" if len(run.arms) == 1 else f"_{target}"


def _target_figures(
    run: RunDir,
    target: str,
    sections: dict[str, list[Plot]],
    out: FigureDir,
    comparisons: Sequence[dict[str, Any]],
    n_boot: int,
    seed: int,
) -> None:
    arms = run.arms[target]
    first = run.predictions(arms[0])
    if not first.tests():
        return
    part = POOLED if len(first.tests()) > 1 else first.tests()[0]
    where = ("all test sets pooled" if part == POOLED else part) + (
        "" if len(run.arms) == 1 else f", {target}"
    )
    preds = {arm.label: run.predictions(arm).part(part) for arm in arms}
    classes, labels, sfx = run.classes(target), first.part(part).labels, _suffix(run, target)
    if first.proba.shape[1] == 2 and len(np.unique(labels)) == 2:
        def binary_roc(parts: dict[str, Predictions], where: str, name: str, caption: str) -> None:
            fig = roc_figure({v: (p.labels, p.proba[:, 1]) for v, p in parts.items()},
                             rng=np.random.default_rng(seed), n_boot=n_boot,
                             title=f"ROC, positive class '{classes[-1]}' ({where})")
            sections["ROC curves"].append(_save(fig, out, name, caption))

        binary_roc(preds, where, f"roc{sfx}", f"ROC curves with bootstrap bands ({where})")
        for ext in first.externals():  # external sets beside the internal curve, never pooled in
            parts = {arm.label: run.predictions(arm).part(ext) for arm in arms}
            if len(np.unique(parts[arms[0].label].labels)) == 2:
                binary_roc(parts, f"external: {ext}", f"roc{sfx}_{ext}",
                           f"ROC curves on the external test set {ext}")
    elif first.proba.shape[1] > 2:
        present = [c for c in range(len(classes)) if 0 < (labels == c).sum() < len(labels)]
        for v, p in preds.items():
            curves = {f"{classes[c]} vs rest": (p.labels == c, p.proba[:, c]) for c in present}
            fig = roc_figure(
                curves,
                rng=np.random.default_rng(seed),
                n_boot=n_boot,
                title=f"{v}: one-vs-rest ROC ({where})",
            )
            sections["ROC curves"].append(
                _save(
                    fig, out, f"roc{sfx}_{v}", f"{v}: one-vs-rest ROC curves with bootstrap bands ({where})"
                )
            )
    for v, p in preds.items():
        k = p.proba.shape[1]
        pred = (p.proba[:, 1] >= 0.5).astype(np.int64) if k == 2 else p.proba.argmax(1)
        rule = "threshold 0.5" if k == 2 else "argmax"
        fig = confusion_figure(confusion(p.labels, pred, k), classes, f"{v} ({where}, {rule})")
        sections["Confusion matrices"].append(
            _save(fig, out, f"confusion{sfx}_{v}", f"{v} — {where}, {rule}")
        )
    for metric in ("auc", "accuracy"):
        plot = _forest([r for r in comparisons if r["target"] == target], metric, out, sfx)
        if plot:
            sections["Comparisons"].append(plot)
    fig = reliability_figure(
        {v: (p.labels, p.proba) for v, p in preds.items()}, title=f"Reliability ({where})"
    )
    sections["Calibration"].append(_save(fig, out, f"calibration{sfx}", f"Reliability diagram ({where})"))


def _matrix_figure(run: RunDir, out: FigureDir) -> Plot | None:
    """A source × target study's bar chart: AUC per target for every (source, strategy) of the first variant,
    mean ± maximum deviation over replicates."""
    cfg = run.config
    cells = [c for c in arm_stats(run.results, "auc") if c["variant"] == cfg.variants[0].name]
    if not cfg.is_matrix or not cells:
        return None
    cols = list(
        dict.fromkeys(
            (c["source"], c["strategy"])
            for c in sorted(
                cells,
                key=lambda c: (
                    c["source"] != NO_SOURCE,
                    [*cfg.sources].index(c["source"]) if c["source"] in cfg.sources else -1,
                    [*cfg.strategies].index(c["strategy"]),
                ),
            )
        )
    )
    by = {(c["target"], c["source"], c["strategy"]): c for c in cells}
    targets = list(cfg.targets)
    fig = _figure(1.5 + 0.5 * len(cols) * len(targets), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(len(cols), 1)
    for j, (s, st) in enumerate(cols):
        got = [by.get((t, s, st)) for t in targets]
        ax.bar(
            np.arange(len(targets)) + (j - (len(cols) - 1) / 2) * width,
            [c["mean"] if c else np.nan for c in got],
            width,
            yerr=[c["max_dev"] if c else 0.0 for c in got],
            capsize=2,
            label=f"{'no transfer' if s == NO_SOURCE else s}: {st}",
        )
    ax.set_xticks(range(len(targets)), targets)
    ax.set_ylabel(f"AUC (mean ± max deviation over {cells[0]['over']})")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7, ncols=2)
    return _save(fig, out, "matrix_auc", "AUC per target: scratch and each source × strategy")


def target_means_figure(means: Sequence[TargetMean], strategies: Sequence[str]) -> Figure:
    """Seed 003's Figure 3 for one variant's means over a group of targets: bars grouped by source
    (no transfer first), one bar per strategy (colour by its place in ``strategies``), error bars
    the t-interval; hatched where the arm misses some of the group's targets; dashed: no transfer."""
    sources = list(dict.fromkeys(m.source for m in means))
    fig = _figure(1.5 + 0.45 * len(means), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(sum(m.source == s for m in means) for s in sources)
    drawn: set[str] = set()
    for i, s in enumerate(sources):
        bars = [m for m in means if m.source == s]
        for j, m in enumerate(bars):
            ci = not math.isnan(m.low)
            ax.bar(i + (j - (len(bars) - 1) / 2) * width, m.mean, width,
                   yerr=[[m.mean - m.low], [m.high - m.mean]] if ci else None, capsize=2,
                   color=f"C{list(strategies).index(m.strategy) % 10}", hatch="" if m.complete else "//",
                   label=None if m.strategy in drawn else m.strategy)
            drawn.add(m.strategy)
    for m in [m for m in means if m.source == NO_SOURCE][:1]:
        ax.axhline(m.mean, color=f"C{list(strategies).index(m.strategy) % 10}", lw=0.8, ls="--")
    ax.set_xticks(range(len(sources)), ["no transfer" if s == NO_SOURCE else s for s in sources])
    first = means[0]
    ax.set_ylabel(f"{first.metric.upper()}, mean over {first.n_targets} targets\n"
                  f"({first.level:.0%} t-interval, paired {first.over})")
    bounded = [m for m in means if not math.isnan(m.low)]
    ax.set_ylim(min([0.4, *(m.low - 0.03 for m in bounded)]), max([1.0, *(m.high + 0.03 for m in bounded)]))
    fig.legend(fontsize=7, loc="outside right upper")
    return fig


def _target_means_figures(run: RunDir, out: FigureDir) -> list[Plot]:
    """Per variant, AUC averaged over all targets (:func:`target_means_figure`)."""
    cfg = run.config
    if not cfg.is_matrix:
        return []
    rows = internal_rows(run.results, run.data)
    means = [m for m in target_means(cfg, rows, "auc") if m.group == ALL_TARGETS]
    plots = []
    for v in dict.fromkeys(m.variant for m in means):
        fig = target_means_figure([m for m in means if m.variant == v], list(cfg.strategies))
        several = len(cfg.variants) > 1
        plots.append(_save(fig, out, "target_means_auc" + (f"_{v}" if several else ""),
                           "AUC averaged over all targets per source and strategy"
                           + (f" — variant {v}" if several else "")
                           + " (hatched: fewer targets; dashed: no transfer)"))
    return plots


def run_figures(
    run: RunDir, out: FigureDir, comparisons: Sequence[dict[str, Any]], *, n_boot: int = 500, seed: int = 0
) -> dict[str, list[Plot]]:
    """Draw every figure into ``out`` (in its formats); returns them grouped by section."""
    sections: dict[str, list[Plot]] = {
        "Learning curves": _learning_curves(run, out),
        "ROC curves": [],
        "Confusion matrices": [],
        "Comparisons": [],
        "Calibration": [],
    }
    matrix = _matrix_figure(run, out)
    if matrix is not None:
        sections["Comparisons"].append(matrix)
    sections["Comparisons"].extend(_target_means_figures(run, out))
    for target in run.arms:
        _target_figures(run, target, sections, out, comparisons, n_boot, seed)
    return {k: v for k, v in sections.items() if v}
