"""Hyperparameter search on tiny synthetic image folders: trials on validation, best on tests."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.search import nested, run_search
from medtransfer.study import load_study, resolve_variants

pytest.importorskip("optuna")

TRAIN = {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.001}}


def _raw(tmp_path: Path, folders: Callable[..., Path], **search) -> dict:
    space = {"transfer.train.optimizer.lr": [1.0e-4, 1.0e-3, 1.0e-2],
             "transfer.train.batch_size": [8, 16],
             "transfer.freeze.trainable_layers": [1, 3]}
    return {
        "name": "tiny_search", "seed": 3, "cache_dir": str(tmp_path / "cache"), "audit": False,
        "preprocess": {"size": 16}, "report": {"figure_formats": ["png"]},
        "source": {"data": {"path": str(folders(tmp_path / "src", {"neg": 30, "pos": 30}, 1))}},
        "target": {"data": {"path": str(folders(tmp_path / "tgt", {"normal": 30, "covid": 30}, 2))},
                   "split": {"test_sets": 2, "test_per_class": 5, "val_fraction": 0.25}},
        "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": TRAIN},
        "transfer": {"freeze": {"trainable_layers": 3}, "train": {
            **TRAIN, "epochs": 3, "early_stopping": {"monitor": "val_loss", "patience": 1}}},
        "search": {"space": space, "objective": {"metric": "auc"}, "top_k": 3, **search},
    }


def test_grid_search_of_12_trials_sorted_best_written_back_and_rerun_does_no_work(tmp_path, class_folders):
    out = tmp_path / "run"
    logs: list[str] = []
    run_search(_raw(tmp_path, class_folders), out, echo=logs.append, progress=False)
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == 12 and all(t["state"] == "complete" for t in trials)
    combos = {(t["transfer.train.optimizer.lr"], t["transfer.train.batch_size"],
               t["transfer.freeze.trainable_layers"]) for t in trials}
    assert len(combos) == 12  # every grid point once
    values = [float(t["val_auc"]) for t in trials]
    assert values == sorted(values, reverse=True)
    assert [t["rank"] for t in trials] == [str(i) for i in range(1, 13)]
    md = (out / "search.md").read_text()
    assert "## Top 3" in md and "trial-" in md
    # The trials never looked at the test images: their units predicted the validation set only.
    for unit in (out / "units").glob("trial-*"):
        with (unit / "predictions.csv").open() as fh:
            assert {r["test_set"] for r in csv.DictReader(fh)} == {"val"}
    best = load_study(out / "best.yaml")  # runnable as it is
    top = trials[0]
    (tuned,) = resolve_variants(best)
    assert tuned.transfer.train.optimizer.lr == float(top["transfer.train.optimizer.lr"])
    assert tuned.transfer.train.batch_size == int(top["transfer.train.batch_size"])
    assert tuned.transfer.freeze.trainable_layers == int(top["transfer.freeze.trainable_layers"])
    # the tuned study keeps the study's variant (its one arm), with the best point laid over it
    assert [v.name for v in best.variants] == ["baseline"] and top["trial"] in (out / "best.yaml").read_text()
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["test_set"] for r in rows if r["stage"] == "transfer"} == {"test_1", "test_2"}
    assert {r["variant"] for r in rows if r["stage"] == "transfer"} == {"baseline"}
    assert (out / "report.html").is_file()
    assert "## Validation score per hyperparameter value" in md  # seed 001's plots, one per key
    for key in ("transfer.train.optimizer.lr", "transfer.train.batch_size",
                "transfer.freeze.trainable_layers"):
        assert (out / "plots" / f"search_{key.replace('.', '_')}.png").is_file()
        assert f"plots/search_{key.replace('.', '_')}.png" in md
    assert "Hyperparameter search" in (out / "report.html").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/result.json")}
    logs.clear()
    run_search(_raw(tmp_path, class_folders), out, echo=logs.append, progress=False, report=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/result.json")} == stamps
    assert not any("pretraining on" in m or "transfer to" in m for m in logs)


def test_random_search_with_ranges_runs_its_budget(tmp_path, class_folders):
    space = {"transfer.train.optimizer.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
             "transfer.train.batch_size": [8, 16]}
    raw = _raw(tmp_path, class_folders, sampler="random", trials=3, space=space)
    out = tmp_path / "run"
    run_search(raw, out, echo=lambda m: None, progress=False, report=False)
    with (out / "trials.csv").open() as fh:
        lrs = [float(t["transfer.train.optimizer.lr"]) for t in csv.DictReader(fh)]
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-2 for lr in lrs)


def test_search_config_errors_name_the_key(tmp_path, class_folders):
    with pytest.raises(ConfigError, match=r"'search.space': .*did you mean 'lr'"):
        run_search(_raw(tmp_path, class_folders, space={"transfer.train.optimizer.lrr": [0.1]}),
                   tmp_path / "a")
    with pytest.raises(ConfigError, match=r"'search.sampler': got 'grd'; did you mean 'grid'"):
        run_search(_raw(tmp_path, class_folders, sampler="grd"), tmp_path / "b")
    with pytest.raises(ConfigError, match=r"'search.trials': sampler random needs a budget"):
        run_search(_raw(tmp_path, class_folders, sampler="random"), tmp_path / "c")
    with pytest.raises(ConfigError, match=r"'search.objective.direction': got 'maximize' for metric 'loss'"):
        run_search(_raw(tmp_path, class_folders, objective={"metric": "loss"}), tmp_path / "d")
    with pytest.raises(ConfigError, match=r"keys are dotted paths into model, pretrain, transfer"):
        run_search(_raw(tmp_path, class_folders, space={"seed": [1, 2]}), tmp_path / "e")


def test_nested_and_cli_search(tmp_path, class_folders):
    assert nested({"a.b.c": 1, "a.d": 2}) == {"a": {"b": {"c": 1}, "d": 2}}
    raw = _raw(tmp_path, class_folders, space={"transfer.train.batch_size": [8, 16]})
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "--no-report", "--no-progress"]) == 0
    assert (tmp_path / "cli" / "best.yaml").is_file() and (tmp_path / "cli" / "summary.md").is_file()


def test_an_impossible_combination_is_recorded_as_failed_and_ranked_last(tmp_path, class_folders):
    space = {"transfer.train.scheduler.name": ["cosine"],
             "transfer.train.scheduler.warmup_epochs": [1, 5]}  # 5 >= the 3 epochs: invalid
    out = tmp_path / "run"
    run_search(_raw(tmp_path, class_folders, space=space), out, echo=lambda m: None, progress=False,
               report=False)
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    assert [t["transfer.train.scheduler.warmup_epochs"] for t in trials] == ["1", "5"]
    assert trials[0]["state"] == "complete"
    assert trials[1]["state"].startswith("failed:") and "warmup_epochs" in trials[1]["state"]
    assert trials[1]["val_auc"] == ""
