"""Study summaries from ``results.csv``, for every shape: ``summary.csv`` (each arm's mean, sd
and maximum deviation over its replicates, and its paired difference from scratch),
``differences.csv`` (paired differences between two strategies, e.g. fine-tuning − features),
a matrix's ``target_means.csv`` (:mod:`.target_means`) and ``summary.md`` (per-test-set tables of
each arm, a matrix's source × strategy tables).

Replicates are the repeats (each the mean over its test sets or folds) when the study has more
than one repeat, otherwise the test sets (or cross-validation folds) themselves.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from medtransfer.csvfile import write_csv
from medtransfer.document import Doc, fmt
from medtransfer.fileio import write_text_atomic
from medtransfer.report.replicates import ARM, NO_SOURCE, replicates
from medtransfer.report.target_means import target_means_doc, write_target_means
from medtransfer.stats import t_interval
from medtransfer.study.config import StudyConfig
from medtransfer.study.report_config import difference_pairs
from medtransfer.study.rundir import DIFFERENCES, SUMMARY, load_run

__all__ = ["DIFFERENCE_COLUMNS", "NO_SOURCE", "SUMMARY_COLUMNS", "arm_stats", "matrix_tables",
           "strategy_differences", "summary_doc", "write_summary"]

SOURCE_METRICS = ["accuracy", "auc", "loss"]
TARGET_METRICS = ["accuracy", "auc", "recall", "specificity", "f1"]
SUMMARY_COLUMNS = (*ARM, "stage", "metric", "mean", "sd", "max_dev", "n", "over", "diff", "diff_low",
                   "diff_high", "diff_n")
DIFFERENCE_COLUMNS = ("variant", "target", "source", "strategy", "minus", "stage", "metric", "diff",
                      "diff_low", "diff_high", "sd", "n", "over")


def arm_stats(
    rows: Sequence[dict[str, Any]], metric: str = "auc", stage: str = "transfer"
) -> list[dict[str, Any]]:
    """Per arm: mean, sd, maximum deviation from the mean and n over its replicates; for arms
    with a source, the paired difference from the scratch arm (same variant, target and
    replicates) with a 95% t-interval."""
    per, over = replicates(rows, metric, stage)
    scratch = {(k[0], k[1]): v for k, v in per.items() if k[2] == NO_SOURCE}
    out = []
    for key, values in per.items():
        x = np.array(list(values.values()))
        row: dict[str, Any] = dict(zip(ARM, key, strict=True))
        row.update(
            stage=stage,
            metric=metric,
            mean=float(x.mean()),
            max_dev=float(np.abs(x - x.mean()).max()),
            sd=float(x.std(ddof=1)) if len(x) > 1 else math.nan,
            n=len(x),
            over=over,
        )
        ref = scratch.get((key[0], key[1]))
        if key[2] != NO_SOURCE and ref:
            common = sorted(set(values) & set(ref), key=str)
            d = np.array([values[i] - ref[i] for i in common])
            half = (
                float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
                if len(d) > 1
                else math.nan
            )
            row.update(
                diff=float(d.mean()),
                diff_low=float(d.mean()) - half,
                diff_high=float(d.mean()) + half,
                diff_n=len(d),
            )
        out.append(row)
    return out


def strategy_differences(
    rows: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]], metric: str = "auc",
    stage: str = "transfer",
) -> list[dict[str, Any]]:
    """For each pair (a, b): strategy a minus strategy b per variant, target and source (b's
    scratch cells, source ``none``, where b has no cell of that source), paired by replicate as
    in :func:`arm_stats`, with a 95% t-interval."""
    per, over = replicates(rows, metric, stage)
    out = []
    for a, b in pairs:
        for (variant, target, source, strategy), values in per.items():
            if strategy != a:
                continue
            ref = per.get((variant, target, source, b)) or per.get((variant, target, NO_SOURCE, b)) or {}
            common = sorted(set(values) & set(ref), key=str)
            if not common:
                continue
            t = t_interval([values[i] - ref[i] for i in common])
            out.append({"variant": variant, "target": target, "source": source, "strategy": a, "minus": b,
                        "stage": stage, "metric": metric, "diff": t.mean, "diff_low": t.low,
                        "diff_high": t.high, "sd": t.sd, "n": t.n, "over": over})
    return out


def difference_tables(
    cfg: StudyConfig, rows: Sequence[dict[str, Any]], metric: str = "auc"
) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per variant and strategy pair (a, b): targets as rows, a − b of each source as columns."""
    out = []
    for a, b in difference_pairs(cfg.report, cfg.strategies):
        diffs = strategy_differences(rows, [(a, b)], metric)
        by = {(d["variant"], d["target"], d["source"]): d for d in diffs}
        sources = [s for s in (NO_SOURCE, *cfg.sources) if any(d["source"] == s for d in diffs)]
        over = diffs[0]["over"].removesuffix("s") if diffs else "repeat"
        for v in [v.name for v in cfg.variants]:
            suffix = f" — variant {v}" if len(cfg.variants) > 1 else ""
            body = [[t, *(_diff(by.get((v, t, s))) for s in sources)] for t in cfg.targets]
            out.append((f"{metric.upper()} difference {a} − {b} (paired by {over}), mean [95% t-interval]"
                        f"{suffix}", ["target", *(f"{'no transfer' if s == NO_SOURCE else s}: {a} − {b}"
                                                  for s in sources)], body))
    return out


def _arm_name(key: tuple[str, str, str], cfg: StudyConfig) -> str:
    variant, source, strategy = key
    if not cfg.is_matrix:
        return variant
    name = f"{'no transfer' if source == NO_SOURCE else source}: {strategy}"
    return name if len(cfg.variants) == 1 else f"{variant} · {name}"


def _columns(cfg: StudyConfig, cells: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(source, strategy) columns: scratch references first, then each source's strategies."""
    present = {(c["source"], c["strategy"]) for c in cells}
    order = [(src, s) for src in (NO_SOURCE, *cfg.sources) for s in cfg.strategies]
    return [c for c in order if c in present]


def _diff(c: dict[str, Any] | None) -> str:
    if not c or "diff" not in c:
        return "–"
    return f"{c['diff']:+.3f} [{fmt(c['diff_low'])}, {fmt(c['diff_high'])}]"


def matrix_tables(
    cfg: StudyConfig, rows: Sequence[dict[str, Any]], metric: str = "auc"
) -> list[tuple[str, list[str], list[list[str]]]]:
    """A matrix's table per variant: targets as rows, ``mean ± max dev`` per (source,
    strategy) column; then the paired differences from scratch."""
    cells = arm_stats(rows, metric)
    cols = _columns(cfg, cells)
    by = {(c["variant"], c["target"], c["source"], c["strategy"]): c for c in cells}
    over = cells[0]["over"] if cells else "repeats"
    out = []
    for v in [v.name for v in cfg.variants]:
        suffix = f" — variant {v}" if len(cfg.variants) > 1 else ""
        head = ["target", *(f"{'no transfer' if s == NO_SOURCE else s}: {st}" for s, st in cols)]
        body, diffs = [], []
        for t in cfg.targets:
            got = [by.get((v, t, s, st)) for s, st in cols]
            body.append([t, *(f"{fmt(c['mean'])} ± {fmt(c['max_dev'])}" if c else "–" for c in got)])
            diffs.append([t, *(_diff(c) for (s, _), c in zip(cols, got, strict=True) if s != NO_SOURCE)])
        out.append((f"{metric.upper()} mean ± max deviation over {over}{suffix}", head, body))
        if any(s == NO_SOURCE for s, _ in cols):
            out.append(
                (
                    f"{metric.upper()} difference from scratch (paired by {over.removesuffix('s')}), mean "
                    f"[95% t-interval]{suffix}",
                    ["target", *(f"{s}: {st}" for s, st in cols if s != NO_SOURCE)],
                    diffs,
                )
            )
    return out


def _value_tables(doc: Doc, cfg: StudyConfig, rows: Sequence[dict[str, Any]], target: str) -> None:
    """The tables of one target: each arm's metric per test set (or fold), mean ± sd."""
    mine = [r for r in rows if r["stage"] == "transfer" and r["target"] == target]
    arms = list(dict.fromkeys((str(r["variant"]), str(r["source"]), str(r["strategy"])) for r in mine))
    tests = sorted({str(r["test_set"]) for r in mine}, key=lambda s: (len(s), s))
    value = {
        (str(r["variant"]), str(r["source"]), str(r["strategy"]), str(r["test_set"]), r["metric"]): r["value"]
        for r in mine
    }
    stats_ = {
        (s["variant"], s["source"], s["strategy"], s["metric"]): s
        for m in {*TARGET_METRICS, "auc"}
        for s in arm_stats(mine, m)
    }
    label = "arm" if cfg.is_matrix else "variant"
    for metric in ("accuracy", "auc"):
        doc.heading(f"Transfer to {target}: {metric} per test set", 3)
        body = []
        for a in arms:
            s = stats_.get((*a, metric))
            cells = [fmt(value.get((*a, t, metric), math.nan), 4) for t in tests]
            body.append([_arm_name(a, cfg), *cells, f"{fmt(s['mean'])} ± {fmt(s['sd'])}" if s else "–"])
        doc.table([label, *tests, "mean ± sd"], body)
    doc.heading(f"Transfer to {target}: other metrics (mean ± sd over test sets)", 3)
    doc.table(
        [label, *TARGET_METRICS],
        [
            [
                _arm_name(a, cfg),
                *(
                    f"{fmt(s['mean'])} ± {fmt(s['sd'])}" if (s := stats_.get((*a, m))) else "–"
                    for m in TARGET_METRICS
                ),
            ]
            for a in arms
        ],
    )


def _pretrain_table(doc: Doc, cfg: StudyConfig, rows: Sequence[dict[str, Any]]) -> None:
    pre = [r for r in rows if r["stage"] == "pretrain" and r["metric"] in SOURCE_METRICS]
    if not pre:
        return
    doc.heading("Pretraining on the source (validation set, best epoch)", 3)
    table: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for r in pre:
        table[(str(r["variant"]), str(r["source"]), str(r["repeat"]))][r["metric"]] = float(r["value"])
    per_repeat, named = cfg.repeat_pretraining, cfg.is_matrix
    doc.table(
        ["variant", *(["source"] if named else []), *(["repeat"] if per_repeat else []), *SOURCE_METRICS],
        [
            [
                v,
                *([s] if named else []),
                *([k] if per_repeat else []),
                *(fmt(m.get(key, math.nan)) for key in SOURCE_METRICS),
            ]
            for (v, s, k), m in table.items()
        ],
    )


def summary_doc(doc: Doc, cfg: StudyConfig, rows: Sequence[dict[str, Any]]) -> None:
    """The summary tables, for every shape, into ``doc``."""
    repeats = {str(r["repeat"]) for r in rows if r["stage"] == "transfer"}
    if cfg.is_matrix:
        splits = (
            "each repeat draws its own split of every target, shared by that repeat's cells"
            if cfg.resample_splits
            else "the split is the same in every repeat"
        )
        doc.para(
            f"{cfg.repeats} repeat(s) per cell (training seeds; {splits}). A repeat's value is the "
            "mean over the target's test sets. `no transfer` is the scratch reference; max deviation "
            "is the largest distance of a replicate from the mean."
        )
        for metric in ("auc", "accuracy"):
            tables = [*matrix_tables(cfg, rows, metric), *difference_tables(cfg, rows, metric)]
            for title, head, body in tables:
                doc.heading(title, 3)
                doc.table(head, body)
            target_means_doc(doc, cfg, rows, metric)
    _pretrain_table(doc, cfg, rows)
    if len(repeats) <= 1:
        for target in dict.fromkeys(str(r["target"]) for r in rows if r["stage"] == "transfer"):
            _value_tables(doc, cfg, rows, target)
        doc.para(
            "sd: sample standard deviation across test sets (or folds). No significance tests "
            "are applied in these tables; see report.html."
        )


def _data_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for name, d in data.items():
        parts = ", ".join(f"{k}: {v['total']}" for k, v in d["split"].items())
        skipped = len(d["skipped_images"])
        lines.append(
            f"**{name}** ({d.get('role', '?')}): `{d['path']}` — classes {d['classes']}"
            f" (positive: {d['positive_class']}); {parts}"
            + (f"; **{skipped} unreadable images skipped**" if skipped else "")
        )
    return lines


def internal_rows(rows: Sequence[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
    """``rows`` without the external test sets' (they are not replicates of the internal ones;
    the report shows them beside the internal results)."""
    external = {(t, e) for t, d in data.items() for e in (d or {}).get("external", {})}
    return [r for r in rows if r["stage"] != "transfer" or (r["target"], r["test_set"]) not in external]


def write_summary(out: Path, cfg: StudyConfig, rows: Sequence[dict[str, Any]], data: dict[str, Any]) -> Path:
    """``summary.csv`` (every arm's statistics over internal test sets, folds or repeats), a
    matrix's ``differences.csv`` and ``target_means.csv``, and ``summary.md`` (the tables) into
    ``out``."""
    rows = internal_rows(rows, data)
    stats_rows = [
        s
        for stage in ("transfer", "val", "pretrain")
        for m in ("auc", "accuracy")
        for s in arm_stats(rows, m, stage)
    ]
    write_csv(out / SUMMARY, stats_rows, SUMMARY_COLUMNS)
    if cfg.is_matrix:
        write_target_means(out, cfg, rows)
    pairs = difference_pairs(cfg.report, cfg.strategies) if cfg.is_matrix else []
    if pairs:
        write_csv(out / DIFFERENCES, [d for stage in ("transfer", "val") for m in ("auc", "accuracy")
                                            for d in strategy_differences(rows, pairs, m, stage)],
                  DIFFERENCE_COLUMNS)
    doc = Doc(markdown=True, base=out)
    doc.title(f"Study `{cfg.name}`")
    doc.bullets(_data_lines(data))
    summary_doc(doc, cfg, rows)
    path = out / "summary.md"
    write_text_atomic(path, doc.render())
    return path


def summarize(run_dir: str | Path) -> Path:
    """Write ``summary.csv`` and ``summary.md`` for a finished run directory."""
    run = load_run(run_dir)
    return write_summary(run.path, run.config, run.results, run.data)
