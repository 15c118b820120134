"""The report's first section, "What this study found": the best arm per target and metric with
its CI, the paired comparisons significant after Holm's correction, the drop from internal to
external test sets, and the data audit's critical findings — in plain sentences, read from the
rows the report's tables are made of (``metrics_ci``, ``comparisons``) and ``audit/*/audit.json``."""

from __future__ import annotations

import json
import math
from typing import Any

from medtransfer.document import Doc, fmt, p_text
from medtransfer.study.rundir import POOLED, RunDir

__all__ = ["findings_section", "internal_part"]

METRICS = {"auc": "AUC", "accuracy": "accuracy"}


def internal_part(run: RunDir, target: str) -> str | None:
    """The test set the findings are stated on: all internal test sets pooled where there are
    several, else the one there is; None for a run without test sets."""
    tests = run.predictions(run.arms[target][0]).tests()
    if not tests:
        return None
    return POOLED if len(tests) > 1 else tests[0]


def _point(metric: str) -> str:
    return "" if metric == "auc" else "default"


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _where(part: str) -> str:
    return "all internal test sets pooled" if part == POOLED else f"test set {part}"


def _best(ci: list[dict[str, Any]], target: str, part: str, metric: str, level: float,
          on: str) -> str | None:
    rows = [r for r in ci if r["target"] == target and r["test_set"] == part and r["metric"] == metric
            and r["operating_point"] == _point(metric) and _ok(r["estimate"])]
    if not rows:
        return None
    rows.sort(key=lambda r: -float(r["estimate"]))
    best = rows[0]
    text = (f"Best {METRICS[metric]}{on}: **{best['arm']}**, {fmt(best['estimate'])} "
            f"({level:.0%} CI {fmt(best['ci_low'])}–{fmt(best['ci_high'])}; {_where(part)}, "
            f"n = {best['n']})")
    if len(rows) > 1:
        nxt = rows[1]
        if fmt(nxt["estimate"]) == fmt(best["estimate"]):
            tied = [r["arm"] for r in rows[1:] if fmt(r["estimate"]) == fmt(best["estimate"])]
            return text + f"; tied with {', '.join(tied)}."
        overlap = float(nxt["ci_high"]) >= float(best["ci_low"]) if _ok(nxt["ci_high"]) else True
        text += (f"; next {nxt['arm']} {fmt(nxt['estimate'])} "
                 f"({fmt(nxt['ci_low'])}–{fmt(nxt['ci_high'])})"
                 + (", the intervals overlap" if overlap else ", the intervals do not overlap"))
    return text + "."


def _comparisons(cmp: list[dict[str, Any]], target: str, part: str, alpha: float, on: str) -> list[str]:
    rows = [r for r in cmp if r["target"] == target and r["test_set"] == part]
    if not rows:
        return []
    out = []
    for r in rows:
        if not r.get("significant"):
            continue
        word = "higher" if float(r["diff"]) > 0 else "lower"
        out.append(
            f"{r['arm']} has a {word} {METRICS.get(r['metric'], r['metric'])} than {r['reference']}{on}: "
            f"{fmt(r['estimate'])} vs {fmt(r['reference_estimate'])}, difference {float(r['diff']):+.3f} "
            f"({fmt(r['ci_low'])} to {fmt(r['ci_high'])}), Holm-adjusted {p_text(float(r['p_holm']))} "
            f"({r['method']}).")
    if not out:
        refs = sorted({str(r["reference"]) for r in rows})
        out.append(f"No arm differs from {', '.join(refs)}{on} in AUC or accuracy after Holm's correction "
                   f"(α = {alpha:g}, {_where(part)}).")
    return out


def _external_drops(run: RunDir, ci: list[dict[str, Any]], target: str, part: str, on: str) -> list[str]:
    out = []
    key = {(r["arm"], r["test_set"], r["metric"]): r for r in ci
           if r["target"] == target and r["operating_point"] == _point(str(r["metric"]))}
    for ext in run.externals(target):
        for metric, name in METRICS.items():
            pairs = []
            for arm in run.arms[target]:
                inside, outside = key.get((arm.label, part, metric)), key.get((arm.label, ext, metric))
                if inside and outside and _ok(inside["estimate"]) and _ok(outside["estimate"]):
                    drop = float(inside["estimate"]) - float(outside["estimate"])
                    pairs.append(f"{arm.label} {fmt(inside['estimate'])} → {fmt(outside['estimate'])} "
                                 f"({'drop' if drop > 0 else 'gain'} {abs(drop):.3f})")
            if pairs:
                out.append(f"On the external test set **{ext}**{on}, {name} internal → external: "
                           + "; ".join(pairs) + ".")
    return out


def _critical(run: RunDir) -> list[str]:
    out = []
    for name, d in run.data.items():
        for data in [name, *(f"{name}.{e}" for e in d.get("external", {}))]:
            path = run.path / "audit" / data / "audit.json"
            if not path.is_file():
                continue
            for f in json.loads(path.read_text(encoding="utf-8")).get("findings", []):
                if f.get("severity") == "critical":
                    action = f" What to do: {f['action']}" if f.get("action") else ""
                    out.append(f"The data audit of {data} found a critical problem ({f.get('code')}): "
                               f"{f.get('message')}.{action}")
    return out


def findings_section(doc: Doc, run: RunDir, ci: list[dict[str, Any]], cmp: list[dict[str, Any]],
                     *, level: float, alpha: float) -> None:
    """Write "What this study found" into ``doc``."""
    doc.heading("What this study found")
    items: list[str] = []
    for target in run.arms:
        part = internal_part(run, target)
        on = f" on {target}" if len(run.arms) > 1 else ""
        if part is None:
            items.append(f"The study has no internal test set{on}: nothing was evaluated.")
            continue
        for metric in METRICS:
            best = _best(ci, target, part, metric, level, on)
            if best:
                items.append(best)
        items += _comparisons(cmp, target, part, alpha, on)
        items += _external_drops(run, ci, target, part, on)
    critical = _critical(run)
    if critical:
        items += critical
        items.append("Critical audit findings mean the numbers above may reflect a shortcut rather than "
                     "the disease.")
    elif run.config.audit:
        items.append("The data audit found no critical problem (warnings, if any, are listed below).")
    else:
        items.append("The study ran without a data audit (audit: false).")
    doc.bullets(items)
