"""External test sets: images of another collection evaluated after training, audited against
the target, reported beside the internal results and never pooled with them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from medtransfer.api import run_study
from medtransfer.errors import ConfigError, DataError
from medtransfer.study import study_from_dict


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _with_external(cfg: dict[str, Any], path: Path, **data: Any) -> dict[str, Any]:
    target = {**cfg["target"], "external": {"hospital_b": {"data": {"path": str(path), **data}}}}
    return {**cfg, "target": target}


def test_external_set_is_evaluated_audited_and_reported(tmp_path, tiny_study_config, class_folders):
    # Another collection: the same classes, other images (another seed), folders in another order.
    other = class_folders(tmp_path / "other", {"covid": 7, "normal": 9}, seed=11)
    cfg = _with_external(tiny_study_config(tmp_path), other)
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, n_boot=50, gallery_images=1)

    rows = _rows(out / "results.csv")
    ext = [r for r in rows if r["stage"] == "transfer" and r["test_set"] == "hospital_b"]
    assert {r["variant"] for r in ext} == {"baseline", "bn"}
    assert {r["metric"] for r in ext} >= {"auc", "accuracy"}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["target"]["external"] == {"hospital_b": {"path": str(other), "images": 16}}
    assert data["target"]["split"]["hospital_b"] == {"normal": 9, "covid": 7, "total": 16}
    split = _rows(out / "splits" / "target.csv")
    assert sum(r["part"] == "hospital_b" for r in split) == 16
    # Labels are matched by class name, not by folder order.
    ext_rows = [r for r in split if r["part"] == "hospital_b"]
    folder_label = {(r["id"].split(":")[1].split("/")[0], r["label"]) for r in ext_rows}
    assert folder_label == {("covid", "covid"), ("normal", "normal")}
    assert (out / "audit" / "target.hospital_b" / "audit.json").is_file()
    assert any(r["stage"] == "data" and r["test_set"] == "hospital_b" for r in rows)

    # The summary's replicates are the 2 internal test sets; the external set is not one of them.
    summary = [r for r in _rows(out / "summary.csv") if r["stage"] == "transfer" and r["metric"] == "auc"]
    assert {(r["n"], r["over"]) for r in summary} == {("2", "test sets")}
    ci = _rows(out / "metrics_ci.csv")
    assert {r["test_set"] for r in ci} >= {"test_1", "test_2", "pooled", "hospital_b"}
    pooled_n = {int(r["n"]) for r in ci if r["test_set"] == "pooled" and r["metric"] == "auc"}
    assert pooled_n == {20}  # 2 internal test sets × 10 images, external not pooled in
    assert any(r["test_set"] == "hospital_b" for r in _rows(out / "comparisons.csv"))
    assert (out / "plots" / "roc_hospital_b.png").is_file() and "external test set hospital_b" in (
        out / "report.md").read_text()
    report = (out / "report.md").read_text()
    section = report[report.index("### External test sets"):]
    assert "| variant | internal | hospital_b | drop hospital_b |" in section
    for variant in ("baseline", "bn"):
        auc = {r["test_set"]: float(r["estimate"]) for r in ci
               if r["arm"] == variant and r["metric"] == "auc" and r["operating_point"] == ""}
        assert f"{auc['hospital_b'] - auc['pooled']:+.3f}" in section

    # A rerun reuses every unit (the external images are part of the target's fingerprint).
    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    assert sum("done earlier, reused" in m for m in logs) == 4


def test_external_set_errors_name_what_is_wrong(tmp_path, tiny_study_config, class_folders):
    base = tiny_study_config(tmp_path)
    extra = class_folders(tmp_path / "extra", {"covid": 3, "normal": 3, "pneumonia": 3}, seed=5)
    with pytest.raises(DataError, match=r"target\.external\.hospital_b .*not in the target: \['pneumonia'\]"):
        run_study(study_from_dict(_with_external(base, extra)), tmp_path / "r1", echo=lambda m: None)
    assert not (tmp_path / "r1" / "units").exists()
    renamed = class_folders(tmp_path / "renamed", {"covid": 3, "healthy": 3}, seed=5)
    with pytest.raises(DataError, match=r"not in the target: \['healthy'\]; missing: \['normal'\]"):
        run_study(study_from_dict(_with_external(base, renamed)), tmp_path / "r2", echo=lambda m: None)
    other = class_folders(tmp_path / "other", {"covid": 3, "normal": 3}, seed=5)
    bad = _with_external(base, other)
    bad["target"]["external"] = {"test_1": bad["target"]["external"]["hospital_b"]}
    with pytest.raises(ConfigError, match=r"'target\.external': name 'test_1' is taken"):
        study_from_dict(bad)
    folds = _with_external(base, other)
    folds["target"]["split"] = {"folds": 2}
    with pytest.raises(ConfigError, match=r"not yet with cross-validation"):
        study_from_dict(folds)
    with pytest.raises(ConfigError, match=r"'source\.external'"):
        external = {"x": {"data": {"path": str(other)}}}
        study_from_dict({**base, "source": {**base["source"], "external": external}})


def test_split_test_from_is_the_test_set(tmp_path, tiny_study_config, class_folders):
    base = tiny_study_config(tmp_path)
    held = class_folders(tmp_path / "held", {"normal": 6, "covid": 5}, seed=13)
    cfg = {**base, "audit": False, "variants": [{"name": "baseline"}],
           "target": {**base["target"], "split": {"val_fraction": 0.2, "test_from": str(held)}}}
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    split = _rows(out / "splits" / "target.csv")
    assert sum(r["part"] == "test" for r in split) == 11
    assert {r["part"] for r in split} == {"train", "val", "test"}  # all own images train or validate
    assert sum(r["part"] in ("train", "val") for r in split) == 60
    tests = {r["test_set"] for r in _rows(out / "results.csv") if r["stage"] == "transfer"}
    assert tests == {"test"}
    with pytest.raises(ConfigError, match=r"'test_from'.*test_sets"):
        study_from_dict({**cfg, "target": {**cfg["target"], "split": {"test_sets": 1, "test_per_class": 2,
                                                                      "test_from": str(held)}}})


def test_test_from_and_external_sets_refuse_links_out_of_their_root_unless_followed(
        tmp_path, tiny_study_config, class_folders):
    from medtransfer.data import ImageCache
    from medtransfer.study.tasks import load_task

    base = tiny_study_config(tmp_path)
    outside = class_folders(tmp_path / "outside", {"normal": 1, "covid": 1}, seed=14)
    held = class_folders(tmp_path / "held", {"normal": 6, "covid": 5}, seed=13)
    (held / "covid" / "out.png").symlink_to(outside / "covid" / "covid_0.png")
    other = class_folders(tmp_path / "other", {"normal": 4, "covid": 4}, seed=15)
    (other / "normal" / "out.png").symlink_to(outside / "normal" / "normal_0.png")
    for follow in (False, True):
        data = {**base["target"]["data"], "follow_symlinks": follow}
        cases = [({**base["target"], "data": data, "split": {"val_fraction": 0.2, "test_from": str(held)}},
                  lambda task: task.fixed_test, 12),
                 (_with_external({**base, "target": {**base["target"], "data": data}}, other,
                                 follow_symlinks=follow)["target"],
                  lambda task: task.externals["hospital_b"], 9)]
        for target, images, count in cases:
            cfg = study_from_dict({**base, "target": target})
            assert cfg.target is not None
            if follow:
                task = load_task("target", "target", cfg.target, cfg, ImageCache(tmp_path / "cache"))
                assert len(images(task)) == count  # the linked image included
            else:
                with pytest.raises(DataError, match=r"out\.png is outside the data root"):
                    load_task("target", "target", cfg.target, cfg, ImageCache(tmp_path / "cache"))
