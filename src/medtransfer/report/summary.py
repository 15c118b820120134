"""Study summaries: aggregate tidy result rows into mean ± sd tables (CSV and Markdown)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from medtransfer.evaluate import mean_sd
from medtransfer.fileio import write_text_atomic
from medtransfer.study.config import StudyConfig

SOURCE_METRICS = ["loss", "accuracy", "auc"]
TARGET_METRICS = ["accuracy", "auc", "recall", "specificity", "f1"]


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd over test sets, per (variant, stage, metric)."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["stage"] == "data":
            continue
        groups[(r["variant"], r["stage"], r["metric"])].append(float(r["value"]))
    out = []
    for (variant, stage, metric), values in groups.items():
        mean, sd = mean_sd(values)
        out.append({"variant": variant, "stage": stage, "metric": metric, "mean": mean, "sd": sd,
                    "n": len(values)})
    return out


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def write_summary(out: Path, cfg: StudyConfig, rows: list[dict[str, Any]],
                  data: dict[str, Any]) -> Path:
    """Write ``summary.csv`` and ``summary.md`` (seed 000's Tables 2 and 3) into ``out``."""
    agg = aggregate(rows)
    csv_lines = ["variant,stage,metric,mean,sd,n\n"] + [
        f"{a['variant']},{a['stage']},{a['metric']},{a['mean']:.6g},{a['sd']:.6g},{a['n']}\n"
        for a in agg
    ]
    write_text_atomic(out / "summary.csv", "".join(csv_lines))
    variants = [v.name for v in cfg.variants]
    value = {(r["variant"], r["stage"], r["test_set"], r["metric"]): r["value"] for r in rows}
    stats = {(a["variant"], a["stage"], a["metric"]): a for a in agg}
    tests = sorted({r["test_set"] for r in rows if r["stage"] == "transfer"},
                   key=lambda s: (len(s), s))
    md = [f"# Study `{cfg.name}`", ""]
    for role in ("source", "target"):
        d = data[role]
        parts = ", ".join(f"{k}: {v['total']}" for k, v in d["split"].items())
        skipped = len(d["skipped_images"])
        md.append(f"- **{role}**: `{d['path']}` — classes {d['classes']}"
                  f" (positive: {d['positive_class']}); {parts}"
                  + (f"; **{skipped} unreadable images skipped**" if skipped else ""))
    md += ["", "## Pretraining on the source (validation set, best epoch)", ""]
    md.append(_table(["variant", *SOURCE_METRICS],
                     [[v, *(_fmt(value.get((v, "pretrain", "val", m), math.nan)) for m in SOURCE_METRICS)]
                      for v in variants]))
    for metric in ("accuracy", "auc"):
        md += ["", f"## Transfer to the target: {metric} per test set", ""]
        body = []
        for v in variants:
            s = stats.get((v, "transfer", metric))
            cells = [_fmt(value.get((v, "transfer", t, metric), math.nan), 4) for t in tests]
            ms = f"{_fmt(s['mean'])} ± {_fmt(s['sd'])}" if s else "–"
            body.append([v, *cells, ms])
        md.append(_table(["variant", *tests, "mean ± sd"], body))
    md += ["", "## Transfer to the target: other metrics (mean ± sd over test sets)", ""]
    body = []
    for v in variants:
        cells = []
        for m in TARGET_METRICS:
            s = stats.get((v, "transfer", m))
            cells.append(f"{_fmt(s['mean'])} ± {_fmt(s['sd'])}" if s else "–")
        body.append([v, *cells])
    md.append(_table(["variant", *TARGET_METRICS], body))
    md += ["", "sd: sample standard deviation across test sets (n = "
           f"{len(tests)}). No significance tests are applied in this table.", ""]
    path = out / "summary.md"
    write_text_atomic(path, "\n".join(md))
    return path
