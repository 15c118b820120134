"""`medtransfer report RUN_DIR` for every study shape: one-source variants, cross-validation, a
matrix (with cross-validation inside it) and a search; each report has the same sections."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.search import run_search
from medtransfer.study import study_from_dict

SECTIONS = ("Learning curves", "ROC curves", "Confusion matrices", "Calibration", "Grad-CAM gallery",
            "Comparisons with the reference")


def _seed000(base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "audit": False}


def _cv(base: dict[str, Any]) -> dict[str, Any]:
    target = {**base["target"], "split": {"folds": 2, "val_fraction": 0.2}}
    return {**base, "audit": False, "target": target}


def _matrix_cv(base: dict[str, Any]) -> dict[str, Any]:
    train = base["transfer"]["train"]
    target = {**base["target"], "split": {"folds": 2, "val_fraction": 0.2}}
    return {
        "name": "tiny_matrix_cv", "seed": 3, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "model": base["model"], "pretrain": base["pretrain"],
        "sources": {"src": base["source"]}, "targets": {"tgt": target},
        "strategies": {"scratch": {"kind": "scratch", "train": train},
                       "freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": train}},
    }


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("shape", ["seed000", "cv", "matrix_cv"])
def test_report_command_rewrites_the_report_of_every_shape(shape, tmp_path, tiny_study_config):
    cfg = {"seed000": _seed000, "cv": _cv, "matrix_cv": _matrix_cv}[shape](tiny_study_config(tmp_path))
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False, progress=False)
    assert not (out / "report.html").exists()
    assert main(["report", str(out), "--n-boot", "50", "--gallery", "2"]) == 0
    html = (out / "report.html").read_text()
    for section in SECTIONS:
        assert section in html, section
    assert "Not drawn" not in html
    assert (out / "summary.csv").is_file() and (out / "plots" / "roc.png").is_file()
    rows = _rows(out)
    if shape != "seed000":
        # Cross-validation: every fold of every arm has its transfer rows.
        folds = {(r["strategy"], r["fold"]) for r in rows if r["stage"] == "transfer"}
        strategies = {"freeze"} if shape == "cv" else {"freeze", "scratch"}
        assert folds == {(s, f) for s in strategies for f in ("1", "2")}


def test_search_over_a_matrix_and_model_options_then_report(tmp_path, tiny_study_config):
    base = tiny_study_config(tmp_path)
    raw = _matrix_cv(base)
    raw["targets"]["tgt"]["split"] = {"test_sets": 1, "test_per_class": 5, "val_fraction": 0.25}
    raw["search"] = {"space": {"model.batch_norm": [False, True],
                               "strategies.freeze.train.optimizer.lr": [1e-3, 1e-2]}}
    out = tmp_path / "search"
    logs: list[str] = []
    run_search(raw, out, echo=logs.append, progress=False, report=False)
    with (out / "trials.csv").open(newline="") as fh:
        trials = list(csv.DictReader(fh))
    # each arm tuned on its own: the freeze arm over both keys, the scratch arm over the model's
    # (the freeze strategy's learning rate does not touch it)
    assert sorted(t["arm"] for t in trials) == ["none.scratch"] * 2 + ["src.freeze"] * 4
    assert all(t["state"] == "complete" for t in trials)
    # Both architectures were pretrained, each once: trials that differ only in the transfer's
    # learning rate share their pretraining unit (and the scratch cells, which it does not touch).
    specs = [json.loads((p / "unit.json").read_text())["spec"] for p in (out / "units").glob("pretrain-*")]
    assert sorted(s["model"].get("batch_norm", False) for s in specs) == [False, True]  # defaults left out
    assert len(list((out / "units").glob("trial-*scratch*"))) == 2
    assert main(["report", str(out), "--n-boot", "50", "--gallery", "1"]) == 0
    html = (out / "report.html").read_text()
    assert "ROC curves" in html and "Grad-CAM gallery" in html
    # The tuned arms ran on the test sets: scratch and freeze cells, each with its own best point.
    assert {r["strategy"] for r in _rows(out) if r["stage"] == "transfer"} == {"scratch", "freeze"}
