"""``model_card.md``: what a model handed to someone else was trained on, how it did (internal and
external test sets, with CIs), what the data audit found, how it was trained, and what it was not
tested on — read from the run folder, never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medtransfer.csvfile import read_csv
from medtransfer.document import Doc, fmt
from medtransfer.inference import LoadedModel
from medtransfer.study.rundir import DATA
from medtransfer.version import __version__

__all__ = ["model_card"]

CARD_METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")


def _ci_rows(run: Path, model: LoadedModel) -> list[dict[str, str]]:
    path = run / "metrics_ci.csv"
    if not path.is_file():
        return []
    return [r for r in read_csv(path) if r["arm"] == model.arm and r["target"] == model.target
            and r["operating_point"] in ("", "default") and r["metric"] in CARD_METRICS]


def _audit(run: Path, names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        path = run / "audit" / name / "audit.json"
        if path.is_file():
            for f in json.loads(path.read_text(encoding="utf-8")).get("findings", []):
                if f.get("severity") in ("critical", "warning"):
                    rows.append([name, str(f["severity"]).upper(), str(f["message"])])
    return rows


def model_card(model: LoadedModel) -> str:
    """The card of ``model`` (from :func:`medtransfer.inference.load_model`) as Markdown."""
    run = Path(model.info["run"])
    data: dict[str, Any] = yaml.safe_load((run / DATA).read_text(encoding="utf-8"))
    target = data[model.target]
    externals = list(target.get("external", {}))
    doc = Doc(markdown=True, base=run)
    doc.title(f"Model card: {model.arm} → {model.target}")
    doc.para(f"Run `{run}`, unit `{model.unit.name}`, medtransfer {__version__}. Classes "
             f"{', '.join(model.classes)}" + (f" (positive: {model.classes[-1]})" if len(model.classes) == 2
                                               else "") + ".")
    doc.heading("Data")
    body = []
    for name, d in data.items():
        for part, counts in (d.get("split") or {}).items():
            body.append([name, str(d.get("role", "")), part, str(counts.get("total", "")),
                         ", ".join(f"{k} {v}" for k, v in counts.items() if k != "total")])
    doc.table(["data set", "role", "part", "images", "per class"], body)
    if externals:
        doc.para("External test sets (never trained on): " + ", ".join(
            f"`{e}` ({target['external'][e]['path']})" for e in externals) + ".")
    doc.heading("Performance")
    ci = _ci_rows(run, model)
    if ci:
        doc.para(f"Estimate [{float(ci[0]['level']):.0%} stratified bootstrap CI] per test set; "
                 "threshold metrics at p ≥ 0.5 (binary) or argmax.")
        parts = list(dict.fromkeys(r["test_set"] for r in ci))
        table = {(r["test_set"], r["metric"]): r for r in ci}
        doc.table(["metric", *parts], [[m, *(
            f"{fmt(float(table[(p, m)]['estimate']))} [{fmt(float(table[(p, m)]['ci_low']))}, "
            f"{fmt(float(table[(p, m)]['ci_high']))}]" if (p, m) in table else "–" for p in parts)]
            for m in CARD_METRICS if any((p, m) in table for p in parts)])
    else:
        doc.para("No `metrics_ci.csv` in the run folder: run `medtransfer report` first for CIs.")
    if model.threshold is not None:
        doc.para(f"Operating threshold chosen on validation images (Youden's J): {fmt(model.threshold)}.")
    doc.heading("Data audit")
    findings = _audit(run, [model.target, *(f"{model.target}.{e}" for e in externals)])
    if findings:
        doc.table(["data set", "severity", "finding"], findings)
    else:
        doc.para("No warnings or critical findings (or the study ran without the audit).")
    doc.heading("Training")
    spec = model.info.get("spec", {})
    doc.code(yaml.safe_dump({k: spec[k] for k in ("model", "strategy", "transfer", "preprocess", "seed")
                             if k in spec}, sort_keys=False))
    doc.heading("Not tested on")
    doc.bullets([
        "Images from collections, hospitals, devices or populations other than those listed above"
        + ("" if externals else " (this run has no external test set)") + ".",
        f"Other image sizes or colour handling than {model.preprocess.hw[0]}×{model.preprocess.hw[1]} "
        f"{model.preprocess.color.value}; other classes than {', '.join(model.classes)}.",
        "Prospective use, or any clinical decision: this is a research model.",
    ])
    return doc.render()
