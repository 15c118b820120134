"""Tables and the report of a matrix study (seed 003's Table II): per target, the scratch
reference ("no transfer") and every source × strategy, as mean ± maximum deviation over repeats,
and each cell's paired difference from scratch over the same repeats."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from medtransfer import __version__
from medtransfer.fileio import write_text_atomic
from medtransfer.plots import _figure, save_figure
from medtransfer.report.analysis import write_csv
from medtransfer.report.text import Doc
from medtransfer.study.config import StudyConfig

__all__ = ["cell_stats", "matrix_tables", "write_matrix_report", "write_matrix_summary"]

NO_SOURCE = "none"
Key = tuple[str, str, str, str]  # variant, target, source, strategy


def _per_repeat(rows: Sequence[dict[str, Any]], metric: str) -> dict[Key, dict[int, float]]:
    """Each cell's metric per repeat, averaged over the target's test sets."""
    acc: dict[Key, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["stage"] == "transfer" and r["metric"] == metric:
            key = (str(r["variant"]), str(r["target"]), str(r["source"]), str(r["strategy"]))
            acc[key][int(r["repeat"])].append(float(r["value"]))
    return {k: {rep: float(np.mean(v)) for rep, v in sorted(d.items())} for k, d in acc.items()}


def cell_stats(rows: Sequence[dict[str, Any]], metric: str = "auc") -> list[dict[str, Any]]:
    """Per cell: mean, maximum deviation from the mean, sd and n over repeats; plus the paired
    difference from the scratch reference (same variant, target and repeat) with a t-interval."""
    per = _per_repeat(rows, metric)
    scratch = {(k[0], k[1]): v for k, v in per.items() if k[2] == NO_SOURCE}
    out = []
    for key, values in per.items():
        x = np.array(list(values.values()))
        row: dict[str, Any] = dict(zip(("variant", "target", "source", "strategy"), key, strict=True))
        row.update(metric=metric, mean=float(x.mean()), max_dev=float(np.abs(x - x.mean()).max()),
                   sd=float(x.std(ddof=1)) if len(x) > 1 else math.nan, n=len(x))
        ref = scratch.get((key[0], key[1]))
        if key[2] != NO_SOURCE and ref:
            common = sorted(set(values) & set(ref))
            d = np.array([values[i] - ref[i] for i in common])
            half = (float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
                    if len(d) > 1 else math.nan)
            row.update(diff=float(d.mean()), diff_low=float(d.mean()) - half,
                       diff_high=float(d.mean()) + half, diff_n=len(d))
        out.append(row)
    return out


def _columns(cfg: StudyConfig, cells: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(source, strategy) columns: scratch references first, then each source's strategies in
    config order."""
    present = {(c["source"], c["strategy"]) for c in cells}
    order = [(src, s) for src in (NO_SOURCE, *cfg.sources) for s in cfg.strategies]
    return [c for c in order if c in present]


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _diff(c: dict[str, Any] | None) -> str:
    if not c or "diff" not in c:
        return "–"
    return f"{c['diff']:+.3f} [{_fmt(c['diff_low'])}, {_fmt(c['diff_high'])}]"


def matrix_tables(cfg: StudyConfig, rows: Sequence[dict[str, Any]], metric: str = "auc"
                  ) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, body) per variant: targets as rows, ``mean ± max dev`` per column, and
    a second table of paired differences from scratch."""
    cells = cell_stats(rows, metric)
    cols = _columns(cfg, cells)
    by = {(c["variant"], c["target"], c["source"], c["strategy"]): c for c in cells}
    variants = [v.name for v in cfg.variants]
    out = []
    for v in variants:
        suffix = f" — variant {v}" if len(variants) > 1 else ""
        head = ["target", *(f"{'no transfer' if s == NO_SOURCE else s}: {st}" for s, st in cols)]
        body, diffs = [], []
        for t in cfg.targets:
            cells_t = [by.get((v, t, s, st)) for s, st in cols]
            body.append([t, *(f"{_fmt(c['mean'])} ± {_fmt(c['max_dev'])}" if c else "–" for c in cells_t)])
            diffs.append([t, *(_diff(c) for (s, _), c in zip(cols, cells_t, strict=True) if s != NO_SOURCE)])
        out.append((f"{metric.upper()} mean ± max deviation over {cfg.repeats} repeat(s){suffix}",
                    head, body))
        dhead = ["target", *(f"{s}: {st}" for s, st in cols if s != NO_SOURCE)]
        out.append((f"{metric.upper()} difference from scratch (paired by repeat), mean "
                    f"[95% t-interval]{suffix}", dhead, diffs))
    return out


SUMMARY_COLUMNS = ("variant", "target", "source", "strategy", "metric", "mean", "max_dev", "sd", "n",
                   "diff", "diff_low", "diff_high", "diff_n")


def _doc(cfg: StudyConfig, rows: Sequence[dict[str, Any]], doc: Doc) -> None:
    n = len({(r["variant"], r["source"], r["target"], r["strategy"]) for r in rows
             if r["stage"] == "transfer"})
    splits = ("each repeat draws its own split of every target, shared by that repeat's cells"
              if cfg.resample_splits else "the split is the same in every repeat")
    doc.para(f"Cells: {n} source × target × strategy combinations, {cfg.repeats} repeat(s) each "
             f"(training seeds; {splits}). Each repeat's value is the mean over the target's test "
             "sets. `no transfer` is the scratch reference; max deviation is the largest distance "
             "of a repeat from the mean (seed 003's Table II).")
    for metric in ("auc", "accuracy"):
        for title, head, body in matrix_tables(cfg, rows, metric):
            doc.heading(title, 3)
            doc.table(head, body)
    pre = [r for r in rows if r["stage"] == "pretrain" and r["metric"] in ("accuracy", "auc", "loss")]
    if pre:
        doc.heading("Pretraining on the sources (validation set, best epoch)", 3)
        table: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for r in pre:
            table[(r["variant"], r["source"], r["repeat"])][r["metric"]] = float(r["value"])
        per_repeat = cfg.repeat_pretraining
        doc.table(["variant", "source", *(["repeat"] if per_repeat else []), "accuracy", "auc", "loss"],
                  [[v, s, *([k] if per_repeat else []),
                    *(_fmt(m.get(key, math.nan)) for key in ("accuracy", "auc", "loss"))]
                   for (v, s, k), m in table.items()])


def _training_table(doc: Doc, stages: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """How each strategy's stages trained: cached activations, the full model or scikit-learn."""
    counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for strategy, stage in stages:
        counts[(strategy, str(stage.get("name")), str(stage.get("path")), str(stage.get("reason")))] += 1
    doc.heading("How the cells trained", 3)
    doc.para("Per strategy and stage: `cached` trains the trainable layers on activations of the frozen "
             "ones computed once (the same training as recomputing them every epoch), `full` runs the "
             "whole model every step (the reason says why), `sklearn` fits a classifier on features.")
    doc.table(["strategy", "stage", "path", "cells", "why"],
              [[st, name, path, str(n), why] for (st, name, path, why), n in counts.items()])


def write_matrix_summary(out: Path, cfg: StudyConfig, rows: Sequence[dict[str, Any]]) -> Path:
    """``summary.csv`` (every cell's statistics) and ``summary.md`` (the tables)."""
    write_csv(out / "summary.csv", cell_stats(rows, "auc") + cell_stats(rows, "accuracy"), SUMMARY_COLUMNS)
    doc = Doc(markdown=True, base=out)
    doc.title(f"Matrix study `{cfg.name}`")
    _doc(cfg, rows, doc)
    path = out / "summary.md"
    write_text_atomic(path, doc.render())
    return path


def _figure_auc(cfg: StudyConfig, rows: Sequence[dict[str, Any]], out: Path) -> Path | None:
    cells = cell_stats(rows, "auc")
    if not cells:
        return None
    cols = _columns(cfg, cells)
    by = {(c["target"], c["source"], c["strategy"]): c for c in cells if c["variant"] == cfg.variants[0].name}
    targets = list(cfg.targets)
    fig = _figure(1.5 + 0.5 * len(cols) * len(targets), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(len(cols), 1)
    for j, (s, st) in enumerate(cols):
        got = [by.get((t, s, st)) for t in targets]
        mean = [c["mean"] if c else np.nan for c in got]
        err = [c["max_dev"] if c else 0.0 for c in got]
        ax.bar(np.arange(len(targets)) + (j - (len(cols) - 1) / 2) * width, mean, width, yerr=err,
               capsize=2, label=f"{'no transfer' if s == NO_SOURCE else s}: {st}")
    ax.set_xticks(range(len(targets)), targets)
    ax.set_ylabel("AUC (mean ± max deviation)")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7, ncols=2)
    return save_figure(fig, out / "plots" / "matrix_auc")[0]


def _data_table(doc: Doc, data: dict[str, Any]) -> None:
    doc.heading("Data")
    body = []
    for name, d in data.items():
        split = "; ".join(f"{p}: {c.get('total', '?')}" for p, c in d.get("split", {}).items())
        body.append([name, d.get("role", "?"), str(d.get("path")), ", ".join(map(str, d.get("classes", []))),
                     split, str(len(d.get("skipped_images", [])))])
    doc.table(["name", "role", "path", "classes", "images per split", "skipped"], body)


def write_matrix_report(out: Path, cfg: StudyConfig, rows: Sequence[dict[str, Any]],
                        data: dict[str, Any], stages: Sequence[tuple[str, dict[str, Any]]] = ()) -> Path:
    """``report.md`` and the self-contained ``report.html``: data, audits, the matrix tables,
    paired differences from scratch, a bar chart, and (``stages``: (strategy, stage summary)
    of every cell) how the cells trained."""
    png = _figure_auc(cfg, rows, out)
    pages = []
    for markdown in (True, False):
        doc = Doc(markdown=markdown, base=out)
        doc.title(f"Matrix study {cfg.name}: report")
        doc.para(f"Run directory `{out}` · seed {cfg.seed} · medtransfer {__version__}. "
                 "Tables: `results.csv` (every cell, repeat and test set), `summary.csv`.")
        doc.heading("Configuration")
        doc.code((out / "config.yaml").read_text(encoding="utf-8"))
        _data_table(doc, data)
        audit = {(r["test_set"], r["metric"]): int(r["value"]) for r in rows
                 if r["stage"] == "data" and r["metric"].startswith("audit_")}
        if audit:
            doc.heading("Data audits")
            doc.bullets([f"{name}: {audit.get((name, 'audit_critical'), 0)} critical, "
                         f"{audit.get((name, 'audit_warning'), 0)} warnings — `audit/{name}/audit.md`"
                         for name in data if (name, "audit_critical") in audit])
        doc.heading("Results")
        _doc(cfg, rows, doc)
        if png is not None:
            doc.images([("AUC per target: scratch and each source × strategy", png)])
        if stages:
            _training_table(doc, stages)
        pages.append(doc.render())
    write_text_atomic(out / "report.md", pages[0])
    path = out / "report.html"
    write_text_atomic(path, pages[1])
    return path
