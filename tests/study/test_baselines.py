"""The numbers do not move: tiny studies of every shape (seed-000 variants, cross-validation, a
matrix with every strategy, a search) give exactly the metric values recorded in
``tests/study/baselines/`` before the study engine was rewritten.

Each recorded row is looked up by its identifying columns; the run may add columns and rows
(e.g. validation rows), but every recorded value must come back as the same 6-digit number.
Record anew (only when a change of numbers is intended and explained in the CHANGELOG) with
``MEDTRANSFER_RECORD_BASELINES=1 pytest tests/study/test_baselines.py``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medtransfer.api import run_study
from medtransfer.models import ModelConfig, build_model
from medtransfer.search import run_search
from medtransfer.study import study_from_dict

BASELINES = Path(__file__).parent / "baselines"
RECORD = os.environ.get("MEDTRANSFER_RECORD_BASELINES") == "1"
TRAIN = {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.001}}
MODEL = {"name": "alexnet_seed002", "options": {"base": 4, "dense": [8, 8]}}


def _read(path: Path) -> list[dict[str, str]]:
    """The rows, "not applicable" as an empty cell (the baselines were recorded when it was "-")."""
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: "" if v == "-" else v for k, v in r.items()} for r in csv.DictReader(fh)]


def _check(name: str, got: Path, value: str, keys: list[str] | None = None) -> None:
    """Every row of the recorded ``name`` is in ``got`` with the same ``value`` cell."""
    expected_path = BASELINES / name
    if RECORD:
        BASELINES.mkdir(exist_ok=True)
        expected_path.write_text(got.read_text(encoding="utf-8"), encoding="utf-8")
        return
    expected = _read(expected_path)
    keys = keys or [k for k in expected[0] if k != value]
    index: dict[tuple[str, ...], list[str]] = {}
    for r in _read(got):
        index.setdefault(tuple(r.get(k, "") for k in keys), []).append(r[value])
    recorded = [(tuple(r[k] for k in keys), r[value]) for r in expected]
    missing = [k for k, _ in recorded if k not in index]
    assert not missing, f"{name}: {len(missing)} recorded rows are gone, e.g. {missing[:3]}"
    ambiguous = [k for k, _ in recorded if len(index[k]) > 1]
    assert not ambiguous, f"{name}: several rows now match a recorded one, e.g. {ambiguous[:3]}"
    moved = [(k, v, index[k][0]) for k, v in recorded if index[k][0] != v]
    assert not moved, f"{name}: {len(moved)} of {len(expected)} values moved, e.g. {moved[:5]}"


@pytest.fixture
def tiny(tiny_study_config) -> Callable[[Path], dict[str, Any]]:
    def make(root: Path) -> dict[str, Any]:
        cfg = tiny_study_config(root)
        cfg["variants"].append({"name": "all", "transfer": {"freeze": {"trainable_layers": None}}})
        return cfg

    return make


def test_seed000_shape(tmp_path, tiny, one_thread):
    out = run_study(study_from_dict(tiny(tmp_path)), tmp_path / "run", echo=lambda m: None, report=False)
    _check("seed000_results.csv", out / "results.csv", "value")


def test_cross_validation_shape(tmp_path, tiny, one_thread):
    cfg = tiny(tmp_path)
    cfg["target"]["split"] = {"folds": 3, "val_fraction": 0.2}
    cfg["variants"] = cfg["variants"][:1]
    out = run_study(study_from_dict(cfg), tmp_path / "run", echo=lambda m: None, report=False)
    _check("cv_results.csv", out / "results.csv", "value")


def _matrix(root: Path, folders: Callable[..., Path]) -> dict[str, Any]:
    weights = root / "init.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        model = build_model(ModelConfig(name=MODEL["name"], options=MODEL["options"]),
                            num_classes=2, in_chans=1, img_size=16)
    torch.save(model.state_dict(), weights)
    split = {"test_sets": 1, "test_per_class": 8, "val_fraction": 0.2}
    return {
        "name": "tiny_matrix",
        "seed": 3,
        "cache_dir": str(root / "cache"),
        "audit": False,
        "preprocess": {"size": 16},
        "model": MODEL,
        "pretrain": {"train": TRAIN},
        "sources": {
            "srcdata": {
                "data": {"path": str(folders(root / "src", {"neg": 40, "pos": 40}, seed=1))},
                "split": {"val_fraction": 0.2},
            },
            "fromfile": {"weights": f"file:{weights}"},
        },
        "targets": {
            "tgta": {
                "data": {"path": str(folders(root / "tgt", {"normal": 30, "covid": 30}, seed=2))},
                "split": split,
            },
            "tgtb": {
                "data": {"path": str(folders(root / "tgtb", {"b": 30, "m": 30}, seed=4))},
                "split": split,
            },
        },
        "strategies": {
            "scratch": {"kind": "scratch", "train": TRAIN},
            "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3},
            "mlp": {"kind": "features", "classifier": "mlp", "mlp": {"hidden": 8, "train": TRAIN}},
            "freeze": {"kind": "freeze", "train": TRAIN},
            "finetune": {"kind": "finetune", "head_fit": "train", "head": TRAIN, "finetune": TRAIN,
                         "unfreeze": {"bn_policy": "frozen"}},  # the recipe before LP-FT
        },
        "repeats": 2,
        "resample_splits": True,
        "repeat_pretraining": True,
    }


def test_matrix_shape(tmp_path, class_folders, one_thread):
    cfg = study_from_dict(_matrix(tmp_path, class_folders))
    out = run_study(cfg, tmp_path / "run", echo=lambda m: None, report=False)
    _check("matrix_results.csv", out / "results.csv", "value")


def test_search_shape(tmp_path, tiny, one_thread):
    raw = tiny(tmp_path)
    raw.update(audit=False, variants=[{"name": "baseline"}])
    raw["search"] = {
        "space": {"transfer.train.optimizer.lr": [1.0e-3, 1.0e-2], "transfer.freeze.trainable_layers": [1, 3]}
    }
    out = run_search(raw, tmp_path / "run", echo=lambda m: None, progress=False, report=False)
    _check(
        "search_trials.csv",
        out / "trials.csv",
        "val_auc",
        ["transfer.train.optimizer.lr", "transfer.freeze.trainable_layers"],
    )
    _check("search_results.csv", out / "results.csv", "value")
