"""``write_report``: one self-contained HTML page (and a Markdown twin) for a finished run —
config, data, results with confidence intervals, comparisons stated in words, every figure and
a Grad-CAM gallery. Images are embedded as base64 data URIs; no scripts, no external assets."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from medtransfer import __version__
from medtransfer.errors import MedTransferError
from medtransfer.fileio import write_text_atomic
from medtransfer.report.analysis import (
    CI_COLUMNS,
    COMPARISON_COLUMNS,
    comparison_rows,
    metrics_ci_rows,
    write_csv,
)
from medtransfer.report.figures import Plot, run_figures
from medtransfer.report.gallery import Gallery, gradcam_gallery
from medtransfer.report.rundir import POOLED, RunDir, load_run
from medtransfer.report.text import Doc, fmt, p_text, sentence
from medtransfer.stats import t_interval

__all__ = ["write_report"]

log = logging.getLogger("medtransfer")

POOLED_METRICS = ["auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "pr_auc",
                  "brier", "ece"]
OPERATING = ["sensitivity", "specificity", "accuracy", "balanced_accuracy"]


def _ci_cell(row: dict[str, Any] | None, digits: int = 3) -> str:
    if row is None:
        return "–"
    return f"{fmt(row['estimate'], digits)} [{fmt(row['ci_low'], digits)}, {fmt(row['ci_high'], digits)}]"


def _data_section(doc: Doc, run: RunDir) -> None:
    doc.heading("Data")
    body = []
    for role in ("source", "target"):
        d = run.data.get(role) or {}
        split = d.get("split", {})
        counts = "; ".join(
            f"{part}: {c.get('total', '?')} ("
            + ", ".join(f"{k} {v}" for k, v in c.items() if k != "total") + ")"
            for part, c in split.items()
        )
        skipped = d.get("skipped_images", [])
        body.append([role, str(d.get("path", "?")), ", ".join(map(str, d.get("classes", []))),
                     str(d.get("positive_class") or "– (multiclass)"), counts, str(len(skipped))])
    doc.table(["role", "path", "classes", "positive class", "images per split (per class)", "skipped"], body)
    for role in ("source", "target"):
        skipped = (run.data.get(role) or {}).get("skipped_images", [])
        if skipped:
            doc.para(f"Unreadable {role} images skipped ({len(skipped)}; first 50 listed):")
            doc.table(["id", "reason"], [[str(s.get("id")), str(s.get("reason"))] for s in skipped[:50]])


def _audit_section(doc: Doc, run: RunDir) -> None:
    """Findings of the study's data audit (``audit/<role>/audit.json``), worst first."""
    body = []
    for role in ("source", "target"):
        path = run.path / "audit" / role / "audit.json"
        if not path.is_file():
            continue
        for f in json.loads(path.read_text(encoding="utf-8")).get("findings", []):
            if f.get("severity") != "info":
                body.append([role, str(f["severity"]).upper(), str(f["code"]), str(f["message"]),
                             str(f.get("action", ""))])
    doc.heading("Data audit (shortcuts, duplicates, leakage)")
    if not body:
        doc.para("No warnings or critical findings (or the study ran with audit: false). "
                 "Details: audit/<role>/audit.md.")
        return
    doc.para("Warnings and critical findings of `medtransfer audit` on this study's data and splits; "
             "full details in audit/<role>/audit.md. A critical finding means the results above may "
             "reflect a shortcut rather than the disease.")
    doc.table(["data", "severity", "finding", "what was found", "what to do"], body)


def _pretrain_section(doc: Doc, run: RunDir) -> None:
    doc.heading("Pretraining on the source (validation set, best epoch)")
    body = []
    for v in run.variants:
        u = run.pretrain.get(v)
        val = (u.result.get("val") or {}) if u else {}
        res = u.result if u else {}
        body.append([v, *(fmt(val.get(m, math.nan)) for m in ("loss", "accuracy", "auc")),
                     str(res.get("best_epoch", "–")), str(res.get("epochs_run", "–")),
                     str(res.get("stop_reason", "–"))])
    doc.table(["variant", "val loss", "val accuracy", "val AUC", "best epoch", "epochs run", "stopped by"],
              body)


def _transfer_section(doc: Doc, run: RunDir) -> None:
    doc.heading("Transfer training")
    body = []
    for v in run.variants:
        u = run.transfer.get(v)
        res = u.result if u else {}
        params = (f"{res['trainable_params']:,} of {res['trainable_params'] + res['frozen_params']:,}"
                  if "trainable_params" in res and "frozen_params" in res else "–")
        path = f"{res['path']}: {res.get('path_reason', '')}" if "path" in res else "–"
        body.append([v, params, "reset" if res.get("head_reset") else "kept",
                     str(res.get("best_epoch", "–")), str(res.get("epochs_run", "–")),
                     str(res.get("stop_reason", "–")), path])
    doc.para("What trained in each variant's transfer (cross-validation: fold 1). Path `cached`: the "
             "trainable layers trained on activations of the frozen layers computed once, which is "
             "exactly the same training as recomputing them every epoch; `full` says why not.")
    doc.table(["variant", "trainable parameters", "output layer", "best epoch", "epochs run",
               "stopped by", "path"], body)


def _results_section(doc: Doc, run: RunDir, ci: list[dict[str, Any]], level: float) -> None:
    tests = run.predictions(run.variants[0]).tests()
    if not tests:
        doc.heading("Transfer to the target")
        doc.para("This run has no test sets (split.test_sets and split.test_fraction are 0): nothing to "
                 "evaluate.")
        return
    pooled = POOLED if len(tests) > 1 else tests[0]
    key = {(r["variant"], r["test_set"], r["metric"], r["operating_point"]): r for r in ci}
    binary = len(run.classes) == 2
    doc.heading(f"Transfer to the target — {'all test sets pooled' if pooled == POOLED else pooled}")
    rule = "at p ≥ 0.5" if binary else "at argmax (macro averages)"
    doc.para(f"Estimate [{level:.0%} CI]; stratified percentile bootstrap over the test images. "
             f"Threshold metrics {rule}.")
    names = [m for m in POOLED_METRICS if any(r["metric"] == m for r in ci)]
    body = []
    for v in run.variants:
        cells = []
        for m in names:
            point = "" if m in ("auc", "pr_auc", "brier", "ece") else "default"
            cells.append(_ci_cell(key.get((v, pooled, m, point))))
        body.append([v, *cells])
    doc.table(["variant", *names], body)
    doc.heading("Per test set", level=3)
    doc.para(f"Each cell: estimate [{level:.0%} bootstrap CI]. Last column: mean ± sd over the "
             f"{len(tests)} test set(s) with a t-based {level:.0%} CI (test sets as repeats, as in "
             "seed 000).")
    for metric in ("auc", "accuracy"):
        point = "" if metric == "auc" else "default"
        body = []
        for v in run.variants:
            cells = [_ci_cell(key.get((v, t, metric, point)), 3) for t in tests]
            t = t_interval([key[(v, s, metric, point)]["estimate"] for s in tests
                            if (v, s, metric, point) in key], level)
            spread = f"{fmt(t.mean)} ± {fmt(t.sd)} [{fmt(t.low)}, {fmt(t.high)}]"
            body.append([v, *cells, spread])
        doc.para(f"**{metric}**")
        doc.table(["variant", *tests, "mean ± sd [t CI]"], body)
    op = [r for r in ci if r["operating_point"] == "youden_val" and r["test_set"] == pooled]
    if op:
        doc.heading("Operating point chosen on validation data (Youden's J)", level=3)
        doc.para("The threshold maximising sensitivity + specificity on each unit's validation "
                 "predictions, applied unchanged to the test images.")
        body = []
        for v in run.variants:
            rows = {r["metric"]: r for r in op if r["variant"] == v}
            if rows:
                thr = next(iter(rows.values()))["threshold"]
                body.append([v, fmt(thr), *(_ci_cell(rows.get(m)) for m in OPERATING)])
        doc.table(["variant", "threshold", *OPERATING], body)


def _comparison_section(doc: Doc, rows: list[dict[str, Any]], alpha: float, level: float) -> None:
    doc.heading("Comparisons with the reference variant")
    if not rows:
        doc.para("Only one variant: nothing to compare.")
        return
    delong = any(r["method"] == "DeLong" for r in rows)
    auc = ("DeLong's test for correlated ROC curves (CI: normal approximation)" if delong else
           "paired bootstrap of the macro one-vs-rest AUC")
    doc.para(f"Same test images for both arms. AUC: {auc}; accuracy: paired-bootstrap {level:.0%} CI and "
             f"McNemar's test (exact below 25 discordant pairs). p-values are Holm-adjusted across the "
             f"variants within each test set and metric; significant means Holm p < {alpha}.")
    pooled = [r for r in rows if r["test_set"] == POOLED] or rows
    doc.bullets([sentence(r, alpha) for r in pooled])
    body = [[r["variant"], r["reference"], r["test_set"], r["metric"], fmt(r["estimate"]),
             fmt(r["reference_estimate"]), f"{r['diff']:+.3f}",
             f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
             p_text(r["p"]), p_text(r["p_holm"]), "yes" if r["significant"] else "no", r["method"]]
            for r in rows]
    doc.table(["variant", "reference", "test set", "metric", "estimate", "reference", "diff",
               f"{level:.0%} CI", "p", "Holm p", "significant", "method"], body)


def _gallery_section(doc: Doc, gallery: Gallery | None, error: str | None) -> None:
    doc.heading("Grad-CAM gallery")
    if gallery is None:
        doc.para(f"Not drawn: {error}")
        return
    doc.para("The same test images for every variant; maps for the class each model predicts, at the last "
             "convolutional layer (Grad-CAM and Grad-CAM++, pytorch-grad-cam).")
    doc.images(list(gallery.images.items()))
    if gallery.dead:
        doc.heading("Dead ReLU filters on test images", level=3)
        layers = list(next(iter(gallery.dead.values())))
        doc.para("Share of channels that never fire (output 0 for every test image and position), per "
                 "ReLU layer.")
        body = [[v, *(f"{d.get(layer, math.nan):.0%}" for layer in layers)] for v, d in gallery.dead.items()]
        doc.table(["variant", *layers], body)


def _notes(doc: Doc, run: RunDir) -> None:
    notes = [u.note for u in [*run.transfer.values(), *run.pretrain.values()] if u.note]
    doc.heading("Methods and caveats")
    doc.bullets([
        "Bootstrap CIs resample test images within each class (stratified, percentile, seeded from the "
        "study seed per variant, test set and metric), so they describe uncertainty from the finite test "
        "sample only — not from retraining with another seed.",
        "The mean ± sd over test sets treats disjoint test sets drawn from one pool as repeats; the "
        "pooled bootstrap CI is the better summary of the same images.",
        "ECE: top-label expected calibration error with 10 equal-width bins. Brier: mean squared error "
        "of the positive-class probability (binary) or summed over classes (multiclass).",
        *notes,
    ])


def _render(run: RunDir, ci: list[dict[str, Any]], cmp: list[dict[str, Any]],
            plots: dict[str, list[Plot]], gallery: Gallery | None, gallery_error: str | None,
            *, markdown: bool, level: float, alpha: float) -> str:
    doc = Doc(markdown=markdown, base=run.path)
    doc.title(f"Study {run.config.name}: report")
    doc.para(f"Run directory `{run.path}` · variants: {', '.join(run.variants)} · seed {run.config.seed} · "
             f"medtransfer {__version__}. Tables: `metrics_ci.csv`, `comparisons.csv`, `results.csv`.")
    doc.heading("Configuration")
    doc.code((run.path / "config.yaml").read_text(encoding="utf-8"))
    _data_section(doc, run)
    _audit_section(doc, run)
    _pretrain_section(doc, run)
    _transfer_section(doc, run)
    _results_section(doc, run, ci, level)
    _comparison_section(doc, cmp, alpha, level)
    for section, items in plots.items():
        doc.heading(section)
        doc.images([(plot.caption, plot.png) for plot in items])
    _gallery_section(doc, gallery, gallery_error)
    _notes(doc, run)
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
    """Write ``metrics_ci.csv``, ``comparisons.csv``, ``plots/`` (PNG + SVG), ``report.md`` and the
    self-contained ``report.html`` into a finished run directory; returns the HTML path."""
    run = load_run(run_dir)
    seed = run.config.seed if seed is None else seed
    ci = metrics_ci_rows(run, n_boot=n_boot, level=level, seed=seed)
    write_csv(run.path / "metrics_ci.csv", ci, CI_COLUMNS)
    cmp = comparison_rows(run, reference, n_boot=n_boot, level=level, alpha=alpha, seed=seed)
    write_csv(run.path / "comparisons.csv", cmp, COMPARISON_COLUMNS)
    plots_dir = run.path / "plots"
    plots = run_figures(run, plots_dir, cmp, n_boot=min(n_boot, 500), seed=seed)
    gallery: Gallery | None = None
    error = None
    if gallery_images > 0:
        try:
            gallery = gradcam_gallery(run, plots_dir, n_images=gallery_images, seed=seed)
        except (MedTransferError, OSError) as exc:
            # A moved data folder must not cost the whole report; the page says why it is missing.
            error = str(exc)
            log.warning("Grad-CAM gallery skipped: %s", exc)
    else:
        error = "disabled (gallery_images=0)"
    md = _render(run, ci, cmp, plots, gallery, error, markdown=True, level=level, alpha=alpha)
    write_text_atomic(run.path / "report.md", md)
    page = _render(run, ci, cmp, plots, gallery, error, markdown=False, level=level, alpha=alpha)
    path = run.path / "report.html"
    write_text_atomic(path, page)
    return path
