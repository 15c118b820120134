"""``backbone_from``: a features strategy on another strategy's trained model (seed 003's SVM on
the fine-tuned network's fc7 features) — the plan's dependency, its unit key, the model it
takes, the waves every executor runs, and the config errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.study import Runner, study_from_dict
from medtransfer.study.plan import make_plan

TRAIN = {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.01}}
MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}


def _cfg(tmp_path: Path, folders: Callable[..., Path], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "chained", "seed": 5, "cache_dir": str(tmp_path / "cache"), "audit": False,
        "preprocess": {"size": 16}, "model": MODEL, "pretrain": {"train": TRAIN},
        "sources": {"src": {"data": {"path": str(folders(tmp_path / "src", {"neg": 30, "pos": 30}, seed=1))},
                            "split": {"val_fraction": 0.2}}},
        "targets": {"tgt": {"data": {"path": str(folders(tmp_path / "tgt", {"a": 30, "b": 30}, seed=2))},
                            "split": {"test_sets": 1, "test_per_class": 6, "val_fraction": 0.2}}},
        "strategies": {
            "svm_ft": {"kind": "features", "classifier": "svm", "calibration_folds": 3,
                       "backbone_from": "ft"},
            "ft": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": TRAIN},
            "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3},
            "scratch": {"kind": "scratch", "train": TRAIN},
        },
    }
    cfg.update(over)
    return cfg


def test_plan_links_each_cell_to_its_upstream_and_runs_it_in_an_earlier_wave(tmp_path, class_folders):
    plan = make_plan(study_from_dict(_cfg(tmp_path, class_folders, repeats=2)))
    chained = [c for c in plan.cells if c.strategy == "svm_ft"]
    assert len(chained) == 2 and {c.source for c in chained} == {"src"}
    for c in chained:
        up = c.upstream
        assert up is not None and (up.strategy, up.source, up.target, up.repeat, up.fold) == (
            "ft", c.source, c.target, c.repeat, c.fold)
        assert up in plan.cells  # the very job the plan runs, not a copy
    waves = plan.cell_waves()
    assert [sorted({c.strategy for c in w}) for w in waves] == [["ft", "scratch", "svm"], ["svm_ft"]]
    assert sum(len(w) for w in waves) == len(plan.cells)


def test_every_executor_gets_the_waves_in_order(tmp_path, class_folders, monkeypatch):
    """Runner.execute hands the session one wave at a time (local processes and Ray alike)."""
    cfg = study_from_dict(_cfg(tmp_path, class_folders, repeats=2))
    batches: list[list[Any]] = []

    class Recorder:
        def __init__(self, runner: Any) -> None:
            pass

        def run(self, jobs, on_done):
            batches.append(list(jobs))
            return {job: {} for job in jobs}

    monkeypatch.setattr("medtransfer.study.runner.InProcess", Recorder)
    plan = make_plan(cfg)
    Runner(cfg, tmp_path / "run").execute(plan)
    when = {job: k for k, batch in enumerate(batches) for job in batch}
    assert batches[0] == list(plan.pretrains)
    for c in plan.cells:
        assert c in when
        if c.upstream is not None:
            assert when[c] > when[c.upstream]


def test_features_on_the_trained_model_of_the_upstream_cell(tmp_path, class_folders, one_thread):
    out = tmp_path / "run"
    logs: list[str] = []
    run_study(study_from_dict(_cfg(tmp_path, class_folders)), out, echo=logs.append, report=False,
              progress=False)
    with (out / "results.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["stage"] == "transfer" and r["metric"] == "auc"]
    assert {(r["source"], r["strategy"]) for r in rows} == {
        ("src", "ft"), ("src", "svm"), ("src", "svm_ft"), ("none", "scratch")}
    jobs = json.loads((out / "manifest.json").read_text())["jobs"]
    ft, chained = jobs["cell:baseline.src.tgt.ft.r0"], jobs["cell:baseline.src.tgt.svm_ft.r0"]
    assert chained["upstream_id"] == "baseline.src.tgt.ft.r0" and "upstream_id" not in ft
    ft_dir, chained_dir = out / ft["unit"], out / chained["unit"]
    spec = json.loads((chained_dir / "unit.json").read_text())["spec"]
    assert spec["upstream"] == ft_dir.name  # the upstream unit is part of the key
    backbone = torch.load(chained_dir / "backbone.pt", weights_only=True)
    trained = torch.load(ft_dir / ("best.pt" if (ft_dir / "best.pt").is_file() else "last.pt"),
                         weights_only=False)["model_state"]
    frozen = torch.load(out / jobs["cell:baseline.src.tgt.svm.r0"]["unit"] / "backbone.pt", weights_only=True)
    assert backbone.keys() == trained.keys()
    assert all(torch.equal(backbone[k], trained[k]) for k in backbone)
    assert any(not torch.equal(backbone[k], frozen[k]) for k in backbone)  # not the pretrained model
    started = [k for k, m in enumerate(logs) if m.startswith("[baseline.src.tgt.svm_ft.r0] features on")]
    finished_ft = [k for k, m in enumerate(logs) if m.startswith("[baseline.src.tgt.ft.r0]")]
    assert started and finished_ft and max(finished_ft) < started[0]


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        ("fft", "'strategies.svm_ft.backbone_from': got 'fft'; did you mean 'ft'? Allowed: the study's "
                "finetune or freeze strategies: ft"),
        ("svm_ft", "got 'svm_ft', the strategy itself"),
        ("svm", "got 'svm', a features strategy, which trains no network"),
        ("scratch", "got 'scratch', a scratch strategy, which has no source"),
    ],
)
def test_backbone_from_errors_name_the_key_and_the_choices(tmp_path, class_folders, upstream, message):
    cfg = _cfg(tmp_path, class_folders)
    cfg["strategies"]["svm_ft"]["backbone_from"] = upstream
    with pytest.raises(ConfigError) as info:
        study_from_dict(cfg)
    assert message in str(info.value)


def test_a_variant_that_chains_onto_features_is_refused_by_its_own_key(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders, variants=[
        {"name": "base"}, {"name": "odd", "strategies": {"svm_ft": {"backbone_from": "svm"}}}])
    with pytest.raises(ConfigError, match=r"'variants\[1\] \(odd\)\.strategies\.svm_ft\.backbone_from': "
                                          r"got 'svm', a features strategy"):
        study_from_dict(cfg)
