"""End-to-end studies on tiny synthetic image folders (seconds on a CPU)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.errors import ConfigError, DataError, ImageDecodeError
from medtransfer.study import ExecutorSettings, load_study, study_from_dict


@pytest.fixture
def make_config(tiny_study_config):
    """``make_config(root, **over)``: the tiny study (tests/study/conftest.py) with top-level overrides."""
    def make(root: Path, **over) -> dict:
        cfg = tiny_study_config(root)
        cfg.update(over)
        return cfg

    return make


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_study_end_to_end_and_rerun_reuses_units(tmp_path, make_config):
    out = tmp_path / "run"
    logs: list[str] = []
    run_study(study_from_dict(make_config(tmp_path)), out, echo=logs.append, report=False)
    rows = _rows(out)
    assert set(rows[0]) >= {"variant", "stage", "test_set", "metric", "value"}
    transfer = [r for r in rows if r["stage"] == "transfer"]
    assert {(r["variant"], r["test_set"]) for r in transfer} == {
        (v, t) for v in ("baseline", "bn") for t in ("test_1", "test_2")}
    assert {r["metric"] for r in transfer} >= {"accuracy", "precision", "recall", "specificity",
                                               "f1", "auc", "tp", "tn", "fp", "fn"}
    pre = [r for r in rows if r["stage"] == "pretrain"]
    assert {r["variant"] for r in pre} == {"baseline", "bn"}
    summary = (out / "summary.md").read_text()
    assert "| baseline |" in summary and "mean ± sd" in summary
    units = sorted(p.name for p in (out / "units").iterdir())
    assert len(units) == 4 and all((out / "units" / u / "result.json").is_file() for u in units)
    assert (out / "config.yaml").is_file() and (out / "splits" / "target.csv").is_file()
    for u in units:
        assert (out / "units" / u / "history.csv").is_file()
    mtimes = {u: (out / "units" / u / "result.json").stat().st_mtime_ns for u in units}

    logs.clear()
    run_study(study_from_dict(make_config(tmp_path)), out, echo=logs.append, report=False)
    assert sum("done earlier, reused" in m for m in logs) == 4
    assert mtimes == {u: (out / "units" / u / "result.json").stat().st_mtime_ns for u in units}
    assert _rows(out) == rows


def test_transfer_trains_on_cached_activations_and_equals_the_full_path(tmp_path, make_config):
    logs: list[str] = []
    run_study(study_from_dict(make_config(tmp_path)), tmp_path / "cached", echo=logs.append, report=False)
    full = make_config(tmp_path)
    full["transfer"]["cache"] = {"enabled": False}
    run_study(study_from_dict(full), tmp_path / "full", echo=lambda m: None, report=False)
    for kind in ("cached", "full"):
        units = sorted((tmp_path / kind / "units").glob("cell-*/result.json"))
        assert [json.loads(u.read_text())["path"] for u in units] == [kind, kind]
    assert sum("cached path: frozen prefix" in m and "computed once" in m for m in logs) == 2
    cached_rows, full_rows = _rows(tmp_path / "cached"), _rows(tmp_path / "full")
    assert len(cached_rows) == len(full_rows)
    for a, b in zip(cached_rows, full_rows, strict=True):
        assert {k: v for k, v in a.items() if k != "value"} == {k: v for k, v in b.items() if k != "value"}
        assert float(a["value"]) == pytest.approx(float(b["value"]), rel=1e-4, abs=1e-6), a
    # Another learning rate for the trainable layers (a search trial, say) on the same
    # pretrained weights and images: the frozen part's activations come from the disk cache.
    other_lr = make_config(tmp_path)
    transfer_train = other_lr["transfer"]["train"]  # the same dict as pretrain's: copy it
    other_lr["transfer"]["train"] = {**transfer_train, "optimizer": {"name": "adam", "lr": 0.002}}
    logs.clear()
    run_study(study_from_dict(other_lr), tmp_path / "cached", echo=logs.append, report=False)
    assert sum("pretraining: done earlier" in m for m in logs) == 2
    assert sum("cached path: frozen prefix" in m and "read from the disk cache" in m for m in logs) == 2


def test_changed_variant_reruns_only_that_variant(tmp_path, make_config):
    out = tmp_path / "run"
    run_study(study_from_dict(make_config(tmp_path)), out, echo=lambda m: None, report=False)
    cfg = make_config(tmp_path)
    cfg["variants"][1]["model"]["conv_dropout"] = 0.2
    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    assert any("[baseline] pretraining: done earlier" in m for m in logs)
    assert any(m.startswith("[bn] pretraining on") for m in logs)


def test_same_seed_same_numbers(tmp_path, make_config):
    a, b = tmp_path / "a", tmp_path / "b"
    run_study(study_from_dict(make_config(tmp_path)), a, echo=lambda m: None, report=False)
    run_study(study_from_dict(make_config(tmp_path)), b, echo=lambda m: None, report=False)
    assert _rows(a) == _rows(b)


def test_unknown_key_in_variant_names_it(tmp_path, make_config):
    cfg = make_config(tmp_path)
    cfg["variants"][1]["model"] = {"batchnorm": True}
    with pytest.raises(ConfigError, match=r"variants\[1\] \(bn\).model.*did you mean 'batch_norm'"):
        study_from_dict(cfg)


def test_unknown_top_level_key_in_yaml_names_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nsource: {data: {path: a}}\ntarget: {data: {path: b}}\nepoch: 3\n")
    with pytest.raises(ConfigError, match=r"s.yaml: unknown key 'epoch'"):
        load_study(path)


def test_test_sets_larger_than_pool_fail_before_training(tmp_path, make_config):
    cfg = make_config(tmp_path)
    cfg["target"]["split"]["test_per_class"] = 20
    with pytest.raises(DataError, match="target data .*needs 40 images of class 'normal'.* has 30"):
        run_study(study_from_dict(cfg), tmp_path / "run", echo=lambda m: None)
    assert not (tmp_path / "run" / "units").exists()


def test_corrupt_image_raises_or_is_skipped_and_counted(tmp_path, make_config):
    cfg = make_config(tmp_path)
    bad = Path(cfg["target"]["data"]["path"]) / "covid" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        run_study(study_from_dict(cfg), tmp_path / "run1", echo=lambda m: None)
    cfg["preprocess"]["on_error"] = "skip"
    with pytest.warns(UserWarning, match="broken.png"):
        run_study(study_from_dict(cfg), tmp_path / "run2", echo=lambda m: None)
    skipped = [r for r in _rows(tmp_path / "run2") if r["metric"] == "skipped_images"]
    assert {r["test_set"]: float(r["value"]) for r in skipped} == {"source": 0.0, "target": 1.0}
    assert "1 unreadable images skipped" in (tmp_path / "run2" / "summary.md").read_text()


def test_empty_class_folder_and_single_class(tmp_path, make_config, class_folders):
    cfg = make_config(tmp_path)
    empty = Path(cfg["source"]["data"]["path"]) / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        run_study(study_from_dict(cfg), tmp_path / "run", echo=lambda m: None)
    single = class_folders(tmp_path / "single", {"only": 10}, seed=5)
    cfg = make_config(tmp_path / "x")
    cfg["source"]["data"]["path"] = str(single)
    with pytest.raises(DataError, match="only class 'only'"):
        run_study(study_from_dict(cfg), tmp_path / "run", echo=lambda m: None)


def test_head_reset_when_source_has_more_classes(tmp_path, make_config, class_folders):
    cfg = make_config(tmp_path)
    src3 = class_folders(tmp_path / "src3", {"a": 20, "b": 20, "c": 20}, seed=7)
    cfg["source"]["data"]["path"] = str(src3)
    cfg["variants"] = [{"name": "baseline"}]
    logs: list[str] = []
    run_study(study_from_dict(cfg), tmp_path / "run", echo=logs.append, report=False)
    assert any("output layer reset" in m and "['a', 'b', 'c']" in m for m in logs)
    cfg["transfer"]["head"] = "keep"
    with pytest.raises(DataError, match="head is 'keep'"):
        run_study(study_from_dict(cfg), tmp_path / "run", echo=lambda m: None)


def test_cli_run_and_error_exit_code(tmp_path, capsys, make_config):
    import yaml

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path)))
    out = tmp_path / "cli"
    assert main(["run", str(path), "--out", str(out), "--no-progress",
                 "--set", "variants=[{name: only}]"]) == 0
    assert "table:" in capsys.readouterr().out
    assert {r["variant"] for r in _rows(out) if r["stage"] == "transfer"} == {"only"}
    assert main(["run", str(path), "--set", "pretrain.train.epoks=1"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err


def test_two_worker_processes_give_the_same_results(tmp_path, make_config):
    one, two = tmp_path / "one", tmp_path / "two"
    run_study(study_from_dict(make_config(tmp_path)), one, echo=lambda m: None, report=False)
    run_study(study_from_dict(make_config(tmp_path)), two, executor=ExecutorSettings(workers=2),
              echo=lambda m: None, report=False)
    assert _rows(one) == _rows(two)
    assert sorted(p.name for p in (one / "units").iterdir()) == sorted(
        p.name for p in (two / "units").iterdir())


def test_cross_validation_reports_every_fold(tmp_path, make_config):
    cfg = make_config(tmp_path)
    cfg["target"]["split"] = {"folds": 3, "val_fraction": 0.2}
    cfg["variants"] = [{"name": "baseline"}]
    out = tmp_path / "cv"
    run_study(study_from_dict(cfg), out, echo=lambda m: None)
    acc = {r["test_set"]: float(r["value"]) for r in _rows(out)
           if r["stage"] == "transfer" and r["metric"] == "accuracy"}
    assert sorted(acc) == ["fold_1", "fold_2", "fold_3"]
    with (out / "splits" / "target.csv").open() as fh:
        parts = [r["part"] for r in csv.DictReader(fh)]
    assert len(parts) == 60 and set(parts) == {"fold_1", "fold_2", "fold_3"}  # each image held out once
    with (out / "summary.csv").open() as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["variant"] == "baseline" and r["stage"] == "transfer"
                  and r["metric"] == "accuracy"]
    # mean ± sd over the 3 folds, recomputed from results.csv
    assert (row["n"], row["over"]) == ("3", "folds")
    assert float(row["mean"]) == pytest.approx(statistics.mean(acc.values()), abs=1e-6)
    assert float(row["sd"]) == pytest.approx(statistics.stdev(acc.values()), abs=1e-6)
    # The report pools the folds' held-out predictions: every image once, CIs per fold and pooled.
    with (out / "metrics_ci.csv").open() as fh:
        ci = [r for r in csv.DictReader(fh) if r["variant"] == "baseline" and r["metric"] == "auc"]
    assert {r["test_set"] for r in ci} == {"fold_1", "fold_2", "fold_3", "pooled"}
    assert next(r for r in ci if r["test_set"] == "pooled")["n"] == "60"
    assert "fold_3" in (out / "report.html").read_text()
    with pytest.raises(ConfigError, match="'folds'.*cannot be combined with test_sets"):
        cfg["target"]["split"] = {"folds": 3, "test_sets": 2, "test_per_class": 5}
        study_from_dict(cfg)


def test_study_audits_its_data_and_reuses_the_audit(tmp_path, make_config):
    cfg = make_config(tmp_path)
    cfg["variants"] = [{"name": "baseline"}]
    out = tmp_path / "run"
    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    for role in ("source", "target"):
        assert (out / "audit" / role / "audit.json").is_file()
        assert (out / "audit" / role / "audit.md").is_file()
    assert any(m.startswith("audit source:") for m in logs)
    metrics = {(r["test_set"], r["metric"]) for r in _rows(out) if r["stage"] == "data"}
    assert ("target", "audit_critical") in metrics and ("source", "audit_warning") in metrics
    stamp = (out / "audit" / "source" / "audit.json").stat().st_mtime_ns
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    assert (out / "audit" / "source" / "audit.json").stat().st_mtime_ns == stamp


def test_identical_pretraining_is_shared_between_variants(tmp_path, make_config):
    cfg = make_config(tmp_path)
    cfg["variants"] = [{"name": "frozen"},
                       {"name": "all", "transfer": {"freeze": {"trainable_layers": None}}}]
    logs: list[str] = []
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    assert sum(m.startswith("[frozen] pretraining on") for m in logs) == 1
    assert any(m.startswith("[all] pretraining: done earlier, reused (pretrain-frozen-") for m in logs)
    assert len(list((out / "units").glob("pretrain-*"))) == 1
    assert len(list((out / "units").glob("cell-*"))) == 2
