"""The packaged demo config: valid, points at the embedded data, and runs end to end (shrunk)."""

from __future__ import annotations

import csv
from pathlib import Path

from medtransfer.cli import demo_config_path, main
from medtransfer.study import load_study, resolve_variants


def test_demo_config_is_the_seed000_design():
    cfg = load_study(demo_config_path())
    assert [v.name for v in resolve_variants(cfg)] == ["baseline", "augmentation", "dropout", "batchnorm"]
    assert cfg.target.split.test_sets == 4
    assert cfg.transfer.freeze.trainable_layers == 3
    assert str(cfg.source.data.path).startswith("demo:")


def test_demo_runs_shrunk(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-progress",
            "--set", "preprocess.size=32", "--set", "pretrain.train.epochs=1",
            "--set", "transfer.train.epochs=1", "--set", f"cache_dir={tmp_path / 'cache'}",
            "--set", "model.options={dense: [32, 32, 16]}",  # seconds instead of minutes
            "--set", "source.split.train_per_class=48", "--set", "report.figure_formats=[png]"]
    assert main(args) == 0
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    cells = {(r["variant"], r["test_set"]) for r in rows if r["stage"] == "transfer"}
    assert len(cells) == 16  # 4 variants × 4 test sets
    assert f"table: {out / 'summary.md'}" in capsys.readouterr().out


def test_demo_cv_example_reports_every_fold(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "demo_cv.yaml"
    out = tmp_path / "cv"
    args = ["run", str(example), "--out", str(out), "--no-progress",
            "--set", "preprocess.size=32", "--set", "pretrain.train.epochs=1",
            "--set", "transfer.train.epochs=1", "--set", f"cache_dir={tmp_path / 'cache'}",
            "--set", "report.figure_formats=[png]"]
    assert main(args) == 0
    with (out / "summary.csv").open() as fh:
        rows = {(r["variant"], r["metric"]): r for r in csv.DictReader(fh) if r["stage"] == "transfer"}
    assert rows[("frozen_convs", "auc")]["n"] == "5" and rows[("train_all", "accuracy")]["n"] == "5"
    md = (out / "summary.md").read_text()
    assert "| fold_1 | fold_2 | fold_3 | fold_4 | fold_5 | mean ± sd |" in md
    # report.html pairs the variants on the pooled out-of-fold predictions (each image once).
    with (out / "comparisons.csv").open() as fh:
        pooled = [r for r in csv.DictReader(fh) if r["test_set"] == "pooled" and r["metric"] == "auc"]
    assert [(r["variant"], r["reference"]) for r in pooled] == [("train_all", "frozen_convs")]
    assert (out / "report.html").is_file()
