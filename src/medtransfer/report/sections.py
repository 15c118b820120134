"""The report's sections on what ran: data, audit findings, pretraining and transfer training,
and the hyperparameter search that chose the configuration, read from the run folder's records."""

from __future__ import annotations

import csv
import json
import math

import yaml

from medtransfer.document import Doc, fmt
from medtransfer.plots import search_plot
from medtransfer.study.rundir import RunDir

__all__ = ["arm_word", "audit_section", "data_section", "pretrain_section", "search_section",
           "transfer_section"]


def data_section(doc: Doc, run: RunDir) -> None:
    doc.heading("Data")
    body = []
    for name, d in run.data.items():
        split = d.get("split", {})
        counts = "; ".join(
            f"{part}: {c.get('total', '?')} ("
            + ", ".join(f"{k} {v}" for k, v in c.items() if k != "total") + ")"
            for part, c in split.items()
        )
        skipped = d.get("skipped_images", [])
        body.append(
            [
                name,
                str(d.get("role", "?")),
                str(d.get("path", "?")),
                ", ".join(map(str, d.get("classes", []))),
                str(d.get("positive_class") or "– (multiclass)"),
                counts,
                str(len(skipped)),
            ]
        )
    doc.table(
        ["data", "role", "path", "classes", "positive class", "images per split (per class)", "skipped"], body
    )
    for name, d in run.data.items():
        skipped = d.get("skipped_images", [])
        if skipped:
            doc.para(f"Unreadable {name} images skipped ({len(skipped)}; first 50 listed):")
            doc.table(["id", "reason"], [[str(s.get("id")), str(s.get("reason"))] for s in skipped[:50]])


def audit_section(doc: Doc, run: RunDir) -> None:
    """Findings of the study's data audit (``audit/<name>/audit.json``), worst first."""
    body = []
    names = [n for name, d in run.data.items()
             for n in [name, *(f"{name}.{e}" for e in d.get("external", {}))]]
    for name in names:
        path = run.path / "audit" / name / "audit.json"
        if not path.is_file():
            continue
        for f in json.loads(path.read_text(encoding="utf-8")).get("findings", []):
            if f.get("severity") != "info":
                body.append(
                    [
                        name,
                        str(f["severity"]).upper(),
                        str(f["code"]),
                        str(f["message"]),
                        str(f.get("action", "")),
                    ]
                )
    doc.heading("Data audit (shortcuts, duplicates, leakage)")
    if not body:
        doc.para(
            "No warnings or critical findings (or the study ran with audit: false). "
            "Details: audit/<data>/audit.md."
        )
        return
    doc.para(
        "Warnings and critical findings of `medtransfer audit` on this study's data and splits; "
        "full details in audit/<data>/audit.md. A critical finding means the results above may "
        "reflect a shortcut rather than the disease."
    )
    doc.table(["data", "severity", "finding", "what was found", "what to do"], body)


def pretrain_section(doc: Doc, run: RunDir) -> None:
    if not run.pretrains:
        return
    doc.heading("Pretraining on the source (validation set, best epoch)")
    body = []
    for u in run.pretrains:
        res = u.result
        body.append(
            [
                str(u.job["id"]),
                str(u.job["source"]),
                *(fmt(res.val.get(m, math.nan)) for m in ("loss", "accuracy", "auc")),
                _text(res.best_epoch),
                _text(res.epochs_run),
                _text(res.stop_reason),
            ]
        )
    doc.table(
        [
            "pretraining",
            "source",
            "val loss",
            "val accuracy",
            "val AUC",
            "best epoch",
            "epochs run",
            "stopped by",
        ],
        body,
    )


def transfer_section(doc: Doc, run: RunDir) -> None:
    doc.heading("Transfer training")
    body = []
    folds = any(len(a.cells) > 1 for arms in run.arms.values() for a in arms)
    many = len(run.arms) > 1
    for target, arms in run.arms.items():
        for arm in arms:
            res = arm.cells[0].cell
            params = (
                f"{res.trainable_params:,} of {res.trainable_params + res.frozen_params:,}"
                if res.trainable_params is not None and res.frozen_params is not None
                else "–"
            )
            path = f"{res.path}: {res.path_reason}" if res.path else "–"
            body.append(
                [
                    *([target] if many else []),
                    arm.label,
                    res.strategy_kind or arm.strategy,
                    params,
                    "reset" if res.head_reset else "kept",
                    _text(res.best_epoch),
                    _text(res.epochs_run),
                    _text(res.stop_reason),
                    path,
                ]
            )
    which = "fold 1's cell" if folds else "its cell"
    doc.para(
        f"What trained in each arm (repeat 0, {which}; the last stage of a two-stage strategy). "
        "Path `cached`: the trainable layers trained on activations of the frozen layers computed "
        "once, exactly the same training as recomputing them every epoch; `full` says why not; "
        "`sklearn`: a classifier on frozen features."
    )
    doc.table(
        [
            *(["target"] if many else []),
            arm_word(run),
            "strategy",
            "trainable parameters",
            "output layer",
            "best epoch",
            "epochs run",
            "stopped by",
            "path",
        ],
        body,
    )
    _training_table(doc, run)


def _training_table(doc: Doc, run: RunDir) -> None:
    """How every cell's stages trained: cached activations, the full model or scikit-learn."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for u in run.units.values():
        strategy = u.cell.strategy if u.kind == "cell" else None
        for stage in strategy.stages if strategy is not None else ():
            key = (str(u.job["strategy"]), stage.name, stage.path, stage.reason)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    doc.heading("How the cells trained", 3)
    doc.para(
        "Per strategy and stage, over every cell (all repeats and folds): `cached` trains the trainable "
        "layers on activations of the frozen ones computed once (the same training as recomputing them "
        "every epoch), `full` runs the whole model every step (the reason says why), `sklearn` fits a "
        "classifier on features."
    )
    doc.table(
        ["strategy", "stage", "path", "cells", "why"],
        [[st, name, path, str(n), why] for (st, name, path, why), n in counts.items()],
    )


def _text(value: object) -> str:
    """A record's value in a table cell; an en dash where the unit did not record it."""
    return "–" if value is None or value == "" else str(value)


def arm_word(run: RunDir) -> str:
    """What a report row is called: a variant in the single-target shape, an arm of a matrix."""
    return "arm" if run.config.is_matrix else "variant"


def _final_para(doc: Doc, run: RunDir) -> None:
    """What ``search.final`` and ``final_by_arm`` set for the final run alone (the run folder's
    search.yaml records the search)."""
    path = run.path / "search.yaml"
    recorded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    search = (recorded or {}).get("search") or {}
    groups = [("every arm", search.get("final") or {}),
              *((f"arm {arm}", keys) for arm, keys in (search.get("final_by_arm") or {}).items())]
    said = [f"{who}: " + ", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in keys.items())
            for who, keys in groups if keys]
    if said:
        doc.para("The final run set, beyond each arm's best trial (`search.final`, `final_by_arm`; "
                 "not used by the trials) — " + "; ".join(said) + ".")


def search_section(doc: Doc, run: RunDir) -> None:
    """The search that chose this run's configuration (``trials.csv`` beside it): each arm's
    chosen point and its figures of the validation score per hyperparameter value. Nothing for a
    run without a search."""
    path = run.path / "trials.csv"
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        head, trials = list(reader.fieldnames or []), list(reader)
    score = next((c for c in head if c.startswith("val_")), None)
    if "trial" not in head or score is None:
        return
    keys = head[head.index("trial") + 1 : head.index(score)]
    arms = list(dict.fromkeys(t.get("arm", "") for t in trials))
    doc.heading("Hyperparameter search")
    tuned = "each arm tuned on its own" if len(arms) > 1 else "one search"
    doc.para(f"{len(trials)} trials ({tuned}), each scored on the validation set only (`trials.csv`, "
             "`search.md`); the configuration reported above is the best of each, evaluated once on "
             "the tests.")
    _final_para(doc, run)
    best = [t for t in trials if t.get("rank") == "1" and t.get(score)]
    if best:
        doc.table(["arm", "trial", *keys, f"val {score.removeprefix('val_')}"],
                  [[t.get("arm", ""), t["trial"], *(t[k] or "–" for k in keys), t[score]] for t in best])
    many = len(arms) > 1
    plots = [(f"Validation {score.removeprefix('val_')} per value of {k}" + (f" ({a})" if many else ""),
              search_plot(run.path / "plots", k, a if many else None)) for a in arms for k in keys]
    doc.images([(caption, png) for caption, png in plots if png.is_file()])
