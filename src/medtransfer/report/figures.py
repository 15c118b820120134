"""The report's figures for a run: learning curves of every unit, pooled ROC curves with
bootstrap bands, confusion matrices, forest plots of the comparisons, reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.evaluate import confusion
from medtransfer.plots import (
    ForestRow,
    confusion_figure,
    forest_figure,
    learning_curves_figure,
    read_history,
    reliability_figure,
    roc_figure,
    save_figure,
)
from medtransfer.report.rundir import POOLED, RunDir
from medtransfer.report.text import p_text

__all__ = ["Plot", "run_figures"]


@dataclass(frozen=True)
class Plot:
    """A saved figure: caption and the PNG path (an SVG lies beside it)."""

    caption: str
    png: Path


def _save(fig: Any, out: Path, name: str, caption: str) -> Plot:
    paths = save_figure(fig, out / name)
    return Plot(caption, paths[0])


def _forest(rows: Sequence[dict[str, Any]], metric: str, out: Path) -> Plot | None:
    chosen = [r for r in rows if r["metric"] == metric]
    if not chosen:
        return None
    order = {t: i for i, t in enumerate([POOLED, *sorted({r["test_set"] for r in chosen} - {POOLED},
                                                       key=lambda s: (len(s), s))])}
    chosen.sort(key=lambda r: (order[r["test_set"]], r["variant"]))
    label = "AUC" if metric == "auc" else metric
    items = [
        ForestRow(f"{r['variant']} · {r['test_set']}", r["diff"], r["ci_low"], r["ci_high"],
                  bool(r["significant"]), f"Holm {p_text(r['p_holm'])}")
        for r in chosen
    ]
    ref = chosen[0]["reference"]
    fig = forest_figure(items, f"{label} difference vs {ref}",
                        f"{label}: variant − {ref} (95% CI; filled = significant after Holm)")
    return _save(fig, out, f"forest_{metric}", f"Forest plot of {label} differences against {ref}")


def run_figures(run: RunDir, out: Path, comparisons: Sequence[dict[str, Any]], *, n_boot: int = 500,
                seed: int = 0) -> dict[str, list[Plot]]:
    """Draw every figure into ``out`` (PNG + SVG); returns them grouped by section."""
    sections: dict[str, list[Plot]] = {"Learning curves": [], "ROC curves": [], "Confusion matrices": [],
                                       "Comparisons": [], "Calibration": []}
    for variant in run.variants:
        for kind, unit in (("pretrain", run.pretrain.get(variant)), ("transfer", run.transfer[variant])):
            if unit is None or not (unit.dir / "history.csv").is_file():
                continue
            hist = read_history(unit.dir / "history.csv")
            best = int(unit.result.get("best_epoch") or 0) or None
            task = "source" if kind == "pretrain" else "target"
            fig = learning_curves_figure(hist, f"{variant}: {kind} on the {task}", best)
            sections["Learning curves"].append(
                _save(fig, out, f"learning_{kind}_{variant}", f"{variant} — {kind} ({task} task)"))
    first = run.predictions(run.variants[0])
    if not first.tests():
        return {k: v for k, v in sections.items() if v}
    part = POOLED if len(first.tests()) > 1 else first.tests()[0]
    where = "all test sets pooled" if part == POOLED else part
    preds = {v: run.predictions(v).part(part) for v in run.variants}
    classes = run.classes
    labels = first.part(part).labels
    if first.proba.shape[1] == 2 and len(np.unique(labels)) == 2:
        curves = {v: (p.labels, p.proba[:, 1]) for v, p in preds.items()}
        fig = roc_figure(curves, rng=np.random.default_rng(seed), n_boot=n_boot,
                         title=f"ROC, positive class '{classes[-1]}' ({where})")
        sections["ROC curves"].append(_save(fig, out, "roc", f"ROC curves with bootstrap bands ({where})"))
    elif first.proba.shape[1] > 2:
        present = [c for c in range(len(classes)) if 0 < (labels == c).sum() < len(labels)]
        for v, p in preds.items():
            curves = {f"{classes[c]} vs rest": (p.labels == c, p.proba[:, c]) for c in present}
            fig = roc_figure(curves, rng=np.random.default_rng(seed), n_boot=n_boot,
                             title=f"{v}: one-vs-rest ROC ({where})")
            sections["ROC curves"].append(
                _save(fig, out, f"roc_{v}", f"{v}: one-vs-rest ROC curves with bootstrap bands ({where})"))
    for v, p in preds.items():
        k = p.proba.shape[1]
        pred = (p.proba[:, 1] >= 0.5).astype(np.int64) if k == 2 else p.proba.argmax(1)
        cm = confusion(p.labels, pred, k)
        rule = "threshold 0.5" if k == 2 else "argmax"
        fig = confusion_figure(cm, classes, f"{v} ({where}, {rule})")
        sections["Confusion matrices"].append(_save(fig, out, f"confusion_{v}", f"{v} — {where}, {rule}"))
    for metric in ("auc", "accuracy"):
        plot = _forest(comparisons, metric, out)
        if plot:
            sections["Comparisons"].append(plot)
    fig = reliability_figure({v: (p.labels, p.proba) for v, p in preds.items()},
                             title=f"Reliability ({where})")
    sections["Calibration"].append(_save(fig, out, "calibration", f"Reliability diagram ({where})"))
    return {k: v for k, v in sections.items() if v}
