"""Matrix studies (sources × targets × strategies × repeats) on tiny synthetic image folders."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medtransfer.api import run_study
from medtransfer.errors import ConfigError, DataError
from medtransfer.models import ModelConfig, build_model
from medtransfer.report.summary import SUMMARY_COLUMNS
from medtransfer.study import ExecutorSettings, study_from_dict

TRAIN = {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.001}}
MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}


def _matrix(tmp_path: Path, folders: Callable[..., Path], **over) -> dict:
    src = folders(tmp_path / "src", {"neg": 40, "pos": 40}, seed=1)
    tgt_a = folders(tmp_path / "tgt", {"normal": 30, "covid": 30}, seed=2)
    tgt_b = folders(tmp_path / "tgt_b", {"benign": 30, "malignant": 30}, seed=4)
    weights = tmp_path / "init.pt"
    if not weights.exists():  # "pretrained elsewhere": any state dict of the same architecture
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(9)
            model = build_model(ModelConfig(name=MODEL["name"], options=MODEL["options"]),
                                num_classes=2, in_chans=1, img_size=16)
        torch.save(model.state_dict(), weights)
    split = {"test_sets": 1, "test_per_class": 8, "val_fraction": 0.2}
    cfg = {
        "name": "tiny_matrix", "seed": 3, "cache_dir": str(tmp_path / "cache"),
        "preprocess": {"size": 16}, "model": MODEL, "pretrain": {"train": TRAIN},
        "report": {"figure_formats": ["png"]},
        "sources": {"srcdata": {"data": {"path": str(src)}, "split": {"val_fraction": 0.2}},
                    "fromfile": {"weights": f"file:{weights}"}},
        "targets": {"tgta": {"data": {"path": str(tgt_a)}, "split": split},
                    "tgtb": {"data": {"path": str(tgt_b)}, "split": split}},
        "strategies": {"scratch": {"kind": "scratch", "train": TRAIN},
                       "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3},
                       "finetune": {"kind": "finetune", "head_fit": "train", "head": TRAIN,
                                    "finetune": TRAIN}},
        "repeats": 2,
    }
    cfg.update(over)
    return cfg


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_matrix_runs_every_cell_writes_tables_and_reuses_units(tmp_path, class_folders):
    out = tmp_path / "run"
    logs: list[str] = []
    run_study(study_from_dict(_matrix(tmp_path, class_folders)), out, echo=logs.append)
    rows = _rows(out)
    assert list(rows[0]) == ["variant", "source", "target", "strategy", "repeat", "fold", "stage", "test_set",
                             "metric", "value"]
    cells = {(r["source"], r["target"], r["strategy"], r["repeat"]) for r in rows if r["stage"] == "transfer"}
    expected = {("none", t, "scratch", str(k)) for t in ("tgta", "tgtb") for k in (0, 1)}
    expected |= {(s, t, st, str(k)) for s in ("srcdata", "fromfile") for t in ("tgta", "tgtb")
                 for st in ("svm", "finetune") for k in (0, 1)}
    assert cells == expected
    auc = [float(r["value"]) for r in rows if r["stage"] == "transfer" and r["metric"] == "auc"]
    assert len(auc) == len(expected) and all(0.0 <= a <= 1.0 for a in auc)
    assert {r["source"] for r in rows if r["stage"] == "pretrain"} == {"srcdata"}  # weights-only: none
    # Repeats are different training seeds: the scratch repeats do not give identical predictions.
    scratch = sorted((out / "units").glob("cell-baseline.none.tgta.scratch.r*"))
    assert len(scratch) == 2
    assert (scratch[0] / "predictions.csv").read_text() != (scratch[1] / "predictions.csv").read_text()
    summary = (out / "summary.md").read_text()
    assert "no transfer: scratch" in summary and "srcdata: svm" in summary and "fromfile: finetune" in summary
    assert "difference from scratch" in summary
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64" in html
    report = (out / "report.md").read_text()
    trained = report[report.index("### How the cells trained"):]
    # 2 sources × 2 targets × 2 repeats per transfer strategy, 2 targets × 2 repeats for scratch;
    # repeat 1's finetune heads read repeat 0's frozen-base activations back from the disk cache.
    for row in ("| svm | svm | sklearn | 8 |", "| finetune | finetune | full | 8 | nothing is frozen |",
                "| scratch | scratch | full | 4 |", "| finetune | head | cached | 4 | frozen prefix",
                "up to 'classifier') computed once |", "up to 'classifier') read from the disk cache |"):
        assert row in trained, trained
    stats = (out / "summary.csv").read_text().splitlines()
    assert stats[0] == ",".join(SUMMARY_COLUMNS)
    # seed 003's Figure 3: every arm's mean over both targets, in a table, a CSV and a figure
    means = [r for r in csv.DictReader((out / "target_means.csv").open())
             if r["stage"] == "transfer" and r["metric"] == "auc"]
    arms = {("none", "scratch")} | {(s, st) for s in ("srcdata", "fromfile") for st in ("svm", "finetune")}
    assert sorted((r["source"], r["strategy"]) for r in means) == sorted(arms)
    assert all(r["targets"] == "tgta;tgtb" and r["n"] == "2" for r in means)
    assert "AUC mean over targets, per source × strategy" in report
    assert (out / "plots" / "target_means_auc.png").is_file()
    units = sorted(p.name for p in (out / "units").iterdir())
    assert len(units) == 1 + len(expected)  # one pretraining unit, one per cell

    logs.clear()
    run_study(study_from_dict(_matrix(tmp_path, class_folders)), out, echo=logs.append, report=False)
    assert sum("done earlier, reused" in m for m in logs) == len(units)
    assert _rows(out) == rows


def test_matrix_config_errors_name_the_key(tmp_path, class_folders):
    good = _matrix(tmp_path, class_folders)
    with pytest.raises(ConfigError, match=r"'source': a matrix study names its data under 'sources'"):
        study_from_dict({**good, "source": good["sources"]["srcdata"]})
    with pytest.raises(ConfigError, match=r"missing required key 'strategies'"):
        study_from_dict({k: v for k, v in good.items() if k != "strategies"})
    with pytest.raises(ConfigError, match=r"strategies\.ft\.kind.*did you mean 'finetune'"):
        study_from_dict({**good, "strategies": {"ft": {"kind": "fintune"}}})
    with pytest.raises(ConfigError, match=r"'transfer.train': not used by a matrix study"):
        study_from_dict({**good, "transfer": {"train": {"epochs": 3}}})
    with pytest.raises(ConfigError, match=r"a source needs 'data'"):
        study_from_dict({**good, "sources": {"empty": {}}})
    with pytest.raises(ConfigError, match=r"'weights': got 'imagenet1k'; allowed: imagenet"):
        study_from_dict({**good, "sources": {"x": {"weights": "imagenet1k"}}})
    with pytest.raises(ConfigError, match=r"'repeats': got 0"):
        study_from_dict({**good, "repeats": 0})
    with pytest.raises(ConfigError, match=r"share the names tgta"):
        study_from_dict({**good, "sources": {"tgta": good["sources"]["srcdata"]}})


def test_missing_weights_file_fails_before_training(tmp_path, class_folders):
    cfg = _matrix(tmp_path, class_folders, sources={"gone": {"weights": f"file:{tmp_path / 'nope.pt'}"}})
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"nope\.pt does not exist"):
        run_study(study_from_dict(cfg), out, echo=lambda m: None)
    assert not (out / "units").exists()


def test_resample_splits_gives_each_repeat_its_own_split(tmp_path, class_folders):
    full = _matrix(tmp_path, class_folders)
    cfg = _matrix(tmp_path, class_folders, resample_splits=True, targets={"tgta": full["targets"]["tgta"]},
                  strategies={"scratch": {"kind": "scratch", "train": TRAIN}}, audit=False)
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    assert (out / "splits" / "tgta.csv").is_file() and (out / "splits" / "tgta.r1.csv").is_file()

    def test_ids(repeat: int) -> set[str]:
        (unit,) = (out / "units").glob(f"cell-baseline.none.tgta.scratch.r{repeat}-*")
        with (unit / "predictions.csv").open() as fh:
            return {r["id"] for r in csv.DictReader(fh) if r["test_set"] != "val"}

    assert test_ids(0) != test_ids(1) and len(test_ids(0)) == len(test_ids(1)) == 16
    single = {"name": "s", "source": {"data": {"path": "a"}}, "target": {"data": {"path": "b"}}}
    with pytest.raises(ConfigError, match=r"'repeats', 'resample_splits', 'repeat_pretraining': only matrix"):
        study_from_dict({**single, "repeats": 3})


def test_repeat_pretraining_pretrains_each_repeat_with_its_own_seed(tmp_path, class_folders):
    base = _matrix(tmp_path, class_folders, audit=False)
    cfg = {**base, "targets": {"tgta": base["targets"]["tgta"]},
           "sources": {"srcdata": base["sources"]["srcdata"]},
           "strategies": {"svm": base["strategies"]["svm"]}}
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    logs: list[str] = []
    run_study(study_from_dict({**cfg, "repeat_pretraining": True}), out, echo=logs.append, report=False)
    # Repeat 0's pretraining is the unit the study without the option made; repeat 1 has its own.
    assert any("[baseline.srcdata.r0] pretraining: done earlier" in m for m in logs)
    assert any("[baseline.srcdata.r1] pretraining on" in m for m in logs)
    pre = {json.loads((p / "unit.json").read_text())["spec"]["seed"]: p.name
           for p in (out / "units").glob("pretrain-*")}
    assert sorted(pre) == [3, 1003]
    def cell_sources(repeat: int) -> list[str]:
        cells = (out / "units").glob(f"cell-baseline.srcdata.tgta.svm.r{repeat}-*")
        return sorted(json.loads((c / "unit.json").read_text())["spec"]["source"] for c in cells)

    assert cell_sources(0) == [pre[3]]  # the same cell as before: reused
    assert cell_sources(1) == sorted([pre[3], pre[1003]])  # before, and now on its own pretraining
    rows = [r for r in _rows(out) if r["stage"] == "pretrain" and r["metric"] == "auc"]
    assert sorted(r["repeat"] for r in rows) == ["0", "1"]
    summary = (out / "summary.md").read_text()
    assert "| variant | source | repeat | accuracy | auc | loss |" in summary
    assert "| baseline | srcdata | 0 |" in summary and "| baseline | srcdata | 1 |" in summary
    with pytest.raises(ConfigError, match=r"'repeat_pretraining': no source has 'data'"):
        study_from_dict({**cfg, "repeat_pretraining": True, "sources": {"w": base["sources"]["fromfile"]}})


def test_two_worker_processes_give_the_same_matrix(tmp_path, class_folders, one_thread):
    base = _matrix(tmp_path, class_folders, audit=False, repeats=1)
    cfg = {**base, "targets": {"tgta": base["targets"]["tgta"]},
           "strategies": {k: base["strategies"][k] for k in ("scratch", "svm")}}
    one, two = tmp_path / "one", tmp_path / "two"
    run_study(study_from_dict(cfg), one, echo=lambda m: None, report=False)
    run_study(study_from_dict(cfg), two, echo=lambda m: None, report=False,
              executor=ExecutorSettings(workers=2))
    assert _rows(one) == _rows(two)
    units = [sorted(p.name for p in (d / "units").iterdir()) for d in (one, two)]
    assert units[0] == units[1]
