"""``write_report``: one self-contained HTML page (and a Markdown twin) for a finished run —
config, data, results with confidence intervals, comparisons stated in words, every figure and
a Grad-CAM gallery. Images are embedded as base64 data URIs; no scripts, no external assets."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from medtransfer.csvfile import write_csv
from medtransfer.document import Doc, fmt, p_text
from medtransfer.errors import IntegrityError, MedTransferError
from medtransfer.fileio import write_text_atomic
from medtransfer.plots import FigureDir, Plot
from medtransfer.report.analysis import (
    CI_COLUMNS,
    COMPARISON_COLUMNS,
    comparison_rows,
    metrics_ci_rows,
)
from medtransfer.report.explanations import Explanations, explain_section, model_figures
from medtransfer.report.figures import run_figures
from medtransfer.report.findings import findings_section
from medtransfer.report.gallery import Gallery, gradcam_gallery
from medtransfer.report.sections import (
    arm_word,
    audit_section,
    data_section,
    pretrain_section,
    search_section,
    transfer_section,
)
from medtransfer.report.summary import internal_rows, summary_doc
from medtransfer.report.text import sentence
from medtransfer.stats import t_interval
from medtransfer.study.rundir import CONFIG, DIFFERENCES, POOLED, TARGET_MEANS, RunDir, load_run
from medtransfer.version import __version__

__all__ = ["write_report"]

log = logging.getLogger("medtransfer")

POOLED_METRICS = ["auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "pr_auc",
                  "brier", "ece"]
OPERATING = ["sensitivity", "specificity", "accuracy", "balanced_accuracy"]


def _ci_cell(row: dict[str, Any] | None, digits: int = 3) -> str:
    if row is None:
        return "–"
    return f"{fmt(row['estimate'], digits)} [{fmt(row['ci_low'], digits)}, {fmt(row['ci_high'], digits)}]"


def _results_section(doc: Doc, run: RunDir, target: str, ci: list[dict[str, Any]], level: float) -> None:
    arms = run.arms[target]
    tests = run.predictions(arms[0]).tests()
    title = "Transfer to the target" + ("" if len(run.arms) == 1 else f" {target}")
    if not tests:
        doc.heading(title)
        doc.para(
            "This run has no test sets (split.test_sets and split.test_fraction are 0): nothing to evaluate."
        )
        return
    pooled = POOLED if len(tests) > 1 else tests[0]
    key = {
        (r["arm"], r["test_set"], r["metric"], r["operating_point"]): r for r in ci if r["target"] == target
    }
    binary = len(run.classes(target)) == 2
    doc.heading(f"{title} — {'all test sets pooled' if pooled == POOLED else pooled}")
    rule = "at p ≥ 0.5" if binary else "at argmax (macro averages)"
    doc.para(
        f"Estimate [{level:.0%} CI]; stratified percentile bootstrap over the test images. "
        f"Threshold metrics {rule}."
    )
    names = [m for m in POOLED_METRICS if any(r["metric"] == m for r in ci)]
    body = []
    for arm in arms:
        cells = []
        for m in names:
            point = "" if m in ("auc", "pr_auc", "brier", "ece") else "default"
            cells.append(_ci_cell(key.get((arm.label, pooled, m, point))))
        body.append([arm.label, *cells])
    doc.table([arm_word(run), *names], body)
    doc.heading("Per test set", level=3)
    doc.para(
        f"Each cell: estimate [{level:.0%} bootstrap CI]. Last column: mean ± sd over the "
        f"{len(tests)} test set(s) with a t-based {level:.0%} CI (test sets as repeats)."
    )
    for metric in ("auc", "accuracy"):
        point = "" if metric == "auc" else "default"
        body = []
        for arm in arms:
            cells = [_ci_cell(key.get((arm.label, t, metric, point)), 3) for t in tests]
            t = t_interval(
                [
                    key[(arm.label, s, metric, point)]["estimate"]
                    for s in tests
                    if (arm.label, s, metric, point) in key
                ],
                level,
            )
            spread = f"{fmt(t.mean)} ± {fmt(t.sd)} [{fmt(t.low)}, {fmt(t.high)}]"
            body.append([arm.label, *cells, spread])
        doc.para(f"**{metric}**")
        doc.table([arm_word(run), *tests, "mean ± sd [t CI]"], body)
    _external_table(doc, run, target, key, pooled, level)
    op = [
        r
        for r in ci
        if r["operating_point"] == "youden_val" and r["test_set"] == pooled and r["target"] == target
    ]
    if op:
        doc.heading("Operating point chosen on validation data (Youden's J)", level=3)
        doc.para(
            "The threshold maximising sensitivity + specificity on each unit's validation "
            "predictions, applied unchanged to the test images."
        )
        body = []
        for arm in arms:
            rows = {r["metric"]: r for r in op if r["arm"] == arm.label}
            if rows:
                thr = next(iter(rows.values()))["threshold"]
                body.append([arm.label, fmt(thr), *(_ci_cell(rows.get(m)) for m in OPERATING)])
        doc.table([arm_word(run), "threshold", *OPERATING], body)


def _external_table(doc: Doc, run: RunDir, target: str, key: dict[tuple[str, str, str, str], Any],
                    internal: str, level: float) -> None:
    """Internal vs external test sets side by side, with the drop from one to the other."""
    arms = run.arms[target]
    externals = run.predictions(arms[0]).externals()
    if not externals:
        return
    doc.heading("External test sets", level=3)
    inner_name = "all internal test sets pooled" if internal == POOLED else internal
    doc.para(f"Images from other collections, never trained on or used to choose anything; estimate "
             f"[{level:.0%} bootstrap CI]. Internal: {inner_name}. "
             "Drop: external minus internal estimate. A large drop means the model learnt something "
             "of its own collection that does not carry over (see the audit of each external set).")
    for metric in ("auc", "accuracy"):
        point = "" if metric == "auc" else "default"
        body = []
        for arm in arms:
            inner = key.get((arm.label, internal, metric, point))
            row = [arm.label, _ci_cell(inner)]
            for ext in externals:
                outer = key.get((arm.label, ext, metric, point))
                both = inner is not None and outer is not None
                drop = f"{outer['estimate'] - inner['estimate']:+.3f}" if both else "–"  # type: ignore[index]
                row += [_ci_cell(outer), drop]
            body.append(row)
        doc.para(f"**{metric}**")
        doc.table([arm_word(run), "internal", *(c for e in externals for c in (e, f"drop {e}"))], body)


def _comparison_section(
    doc: Doc, run: RunDir, rows: list[dict[str, Any]], alpha: float, level: float
) -> None:
    doc.heading("Comparisons with the reference arm")
    if not rows:
        doc.para(
            f"Only one {arm_word(run)}{'' if len(run.arms) == 1 else ' per target'}: nothing to compare."
        )
        return
    delong = any(r["method"] == "DeLong" for r in rows)
    auc = (
        "DeLong's test for correlated ROC curves (CI: normal approximation)"
        if delong
        else "paired bootstrap of the macro one-vs-rest AUC"
    )
    doc.para(
        f"Same test images for both arms. AUC: {auc}; accuracy: paired-bootstrap {level:.0%} CI and "
        f"McNemar's test (exact below 25 discordant pairs). p-values are Holm-adjusted across the "
        f"arms within each target, test set and metric; significant means Holm p < {alpha}. The "
        "reference is each target's first arm (the first variant, or training from scratch)."
    )
    pooled = [r for r in rows if r["test_set"] == POOLED] or rows
    doc.bullets([sentence(r, alpha) for r in pooled])
    many = len(run.arms) > 1
    body = [
        [
            *([r["target"]] if many else []),
            r["arm"],
            r["reference"],
            r["test_set"],
            r["metric"],
            fmt(r["estimate"]),
            fmt(r["reference_estimate"]),
            f"{r['diff']:+.3f}",
            f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
            p_text(r["p"]),
            p_text(r["p_holm"]),
            "yes" if r["significant"] else "no",
            r["method"],
        ]
        for r in rows
    ]
    doc.table(
        [
            *(["target"] if many else []),
            arm_word(run),
            "reference",
            "test set",
            "metric",
            "estimate",
            "reference",
            "diff",
            f"{level:.0%} CI",
            "p",
            "Holm p",
            "significant",
            "method",
        ],
        body,
    )


def _gallery_section(doc: Doc, gallery: Gallery | None, error: str | None, word: str) -> None:
    doc.heading("Grad-CAM gallery")
    if gallery is None:
        doc.para(f"Not drawn: {error}")
        return
    doc.para(
        "The same test images for every arm of a target; maps for the class each model predicts, at "
        "the last convolutional layer (Grad-CAM and Grad-CAM++, pytorch-grad-cam)."
    )
    doc.images(list(gallery.images.items()))
    if gallery.notes:
        doc.bullets([f"Not drawn: {n}" for n in gallery.notes])
    if gallery.dead:
        doc.heading("Dead ReLU filters on test images", level=3)
        layers = list(next(iter(gallery.dead.values())))
        doc.para(
            "Share of channels that never fire (output 0 for every test image and position), per ReLU layer."
        )
        body = [[v, *(f"{d.get(layer, math.nan):.0%}" for layer in layers)] for v, d in gallery.dead.items()]
        doc.table([word, *layers], body)


def _notes(doc: Doc, run: RunDir) -> None:
    repeats = "; other repeats enter only the summary tables" if run.config.repeats > 1 else ""
    doc.heading("Methods and caveats")
    doc.bullets(
        [
            "Bootstrap CIs resample test images within each class (stratified, percentile, seeded from the "
            "study seed per variant, test set and metric), so they describe uncertainty from the finite test "
            "sample only — not from retraining with another seed.",
            "The mean ± sd over test sets treats disjoint test sets drawn from one pool as repeats; the "
            "pooled bootstrap CI is the better summary of the same images.",
            "ECE: top-label expected calibration error with 10 equal-width bins. Brier: mean squared error "
            "of the positive-class probability (binary) or summed over classes (multiclass).",
            "Per-image analyses (CIs, comparisons, figures, Grad-CAM) use each arm's repeat-0 "
            f"model{repeats}.",
        ]
    )


def _render(
    run: RunDir,
    ci: list[dict[str, Any]],
    cmp: list[dict[str, Any]],
    plots: dict[str, list[Plot]],
    gallery: Gallery | None,
    gallery_error: str | None,
    explained: tuple[Explanations | None, str | None],
    *,
    markdown: bool,
    level: float,
    alpha: float,
) -> str:
    doc = Doc(markdown=markdown, base=run.path)
    doc.title(f"Study {run.config.name}: report")
    arms = sorted({a.label for arms in run.arms.values() for a in arms})
    doc.para(
        f"Run directory `{run.path}` · targets: {', '.join(run.arms)} · "
        f"{arm_word(run)}s: {', '.join(arms)} · "
        f"seed {run.config.seed} · medtransfer {__version__}. Tables: `metrics_ci.csv`, "
        "`comparisons.csv`, `results.csv`, `summary.csv`"
        + "".join(f", `{name}`" for name in (DIFFERENCES, TARGET_MEANS) if (run.path / name).is_file()) + "."
    )
    findings_section(doc, run, ci, cmp, level=level, alpha=alpha)
    data_section(doc, run)
    audit_section(doc, run)
    pretrain_section(doc, run)
    transfer_section(doc, run)
    for target in run.arms:
        _results_section(doc, run, target, ci, level)
    if run.config.is_matrix or run.config.repeats > 1:
        doc.heading("Over repeats and sources × strategies")
        summary_doc(doc, run.config, internal_rows(run.results, run.data))
    _comparison_section(doc, run, cmp, alpha, level)
    for section, items in plots.items():
        doc.heading(section)
        doc.images([(plot.caption, plot.png) for plot in items])
    search_section(doc, run)
    _gallery_section(doc, gallery, gallery_error, arm_word(run))
    if run.config.report.explains:
        explain_section(doc, *explained)
    _notes(doc, run)
    doc.heading("Configuration")
    doc.code((run.path / CONFIG).read_text(encoding="utf-8"))
    return doc.render()


def write_report(
    run_dir: str | Path,
    *,
    reference: str | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    alpha: float = 0.05,
    gallery_images: int = 4,
    seed: int | None = None,
) -> Path:
    """Write ``metrics_ci.csv``, ``comparisons.csv``, ``plots/`` (``report.figure_formats``; with the study's
    ``report`` section also filters, feature maps, activation maximisation), ``report.md`` and
    the self-contained ``report.html`` into a finished run directory; returns the HTML path."""
    run = load_run(run_dir)
    seed = run.config.seed if seed is None else seed
    ci = metrics_ci_rows(run, n_boot=n_boot, level=level, seed=seed)
    write_csv(run.path / "metrics_ci.csv", ci, CI_COLUMNS)
    cmp = comparison_rows(run, reference, n_boot=n_boot, level=level, alpha=alpha, seed=seed)
    write_csv(run.path / "comparisons.csv", cmp, COMPARISON_COLUMNS)
    plots_dir = FigureDir(run.path / "plots", tuple(run.config.report.figure_formats))
    plots = run_figures(run, plots_dir, cmp, n_boot=min(n_boot, 500), seed=seed)
    gallery: Gallery | None = None
    error = None
    if gallery_images > 0:
        try:
            gallery = gradcam_gallery(run, plots_dir, n_images=gallery_images, seed=seed)
        except IntegrityError:
            raise  # a damaged record or file is named, never drawn around
        except (MedTransferError, OSError) as exc:
            # A moved data folder must not cost the whole report; the page says why it is missing.
            error = str(exc)
            log.warning("Grad-CAM gallery skipped: %s", exc)
    else:
        error = "disabled (gallery_images=0)"
    explained: tuple[Explanations | None, str | None] = (None, None)
    if run.config.report.explains:
        try:
            explained = (model_figures(run, plots_dir, run.config.report, seed=seed), None)
        except IntegrityError:
            raise
        except (MedTransferError, OSError) as exc:  # as the gallery: the page says why
            explained = (None, str(exc))
            log.warning("filters, feature maps and activation maximisation skipped: %s", exc)
    md = _render(run, ci, cmp, plots, gallery, error, explained, markdown=True, level=level, alpha=alpha)
    write_text_atomic(run.path / "report.md", md)
    page = _render(run, ci, cmp, plots, gallery, error, explained, markdown=False, level=level, alpha=alpha)
    path = run.path / "report.html"
    write_text_atomic(path, page)
    return path
