"""The study's wiring: each strategy learns an easy task, a cell's frozen layers are exactly its
pretraining's best checkpoint, and changing one image's pixels redoes exactly the units that
saw it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medtransfer.api import run_study
from medtransfer.study import study_from_dict

TRAIN = {"epochs": 12, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.003}}


def _matrix(base: dict[str, Any]) -> dict[str, Any]:
    # The target's classes in the opposite order of the source's (bright is positive in both), and
    # the source's output layer reset: the transferred models must learn the target's own mapping.
    data = {**base["target"]["data"], "classes": ["covid", "normal"]}
    target = {"data": data, "split": {"test_sets": 1, "test_per_class": 10, "val_fraction": 0.2}}
    return {
        "name": "wiring", "seed": 5, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "model": base["model"], "pretrain": {"train": TRAIN},
        "sources": {"src": base["source"]}, "targets": {"tgt": target}, "transfer": {"head": "reset"},
        "strategies": {
            "scratch": {"kind": "scratch", "train": TRAIN},
            "freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": TRAIN},
            "finetune": {"kind": "finetune", "head_fit": "train", "head": TRAIN,
                         "finetune": {**TRAIN, "epochs": 4}},
            "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3},
            "mlp": {"kind": "features", "classifier": "mlp", "mlp": {"train": TRAIN}},
        },
    }


def _auc(out: Path) -> dict[str, float]:
    with (out / "results.csv").open(newline="") as fh:
        return {r["strategy"]: float(r["value"]) for r in csv.DictReader(fh)
                if r["stage"] == "transfer" and r["metric"] == "auc"}


def _unit(out: Path, job_id: str) -> Path:
    jobs = json.loads((out / "manifest.json").read_text())["jobs"]
    return out / jobs[job_id]["unit"]


def test_every_strategy_learns_and_frozen_layers_are_the_pretraining(tmp_path, tiny_study_config):
    out = tmp_path / "run"
    run_study(study_from_dict(_matrix(tiny_study_config(tmp_path))), out, echo=lambda m: None, report=False)
    # Classes differ in mean brightness by 4 sd: every strategy must reach AUC > 0.95.
    auc = _auc(out)
    assert set(auc) == {"scratch", "freeze", "finetune", "svm", "mlp"}
    assert all(v > 0.95 for v in auc.values()), auc

    jobs = json.loads((out / "manifest.json").read_text())["jobs"]
    cell = jobs["cell:baseline.src.tgt.freeze.r0"]
    pre_unit = _unit(out, f"pretrain:{cell['pretrain_id']}")
    pre = torch.load(pre_unit / "best.pt", weights_only=True)["model_state"]
    got = torch.load(out / cell["unit"] / "best.pt", weights_only=True)["model_state"]
    trainable = cell["result"]["trainable_layers"]
    # Frozen: every tensor outside the trainable layers is the pretraining's best epoch, exactly.
    frozen = [k for k in pre if not any(k.startswith(f"{layer}.") for layer in trainable)]
    assert frozen and all(torch.equal(got[k], pre[k]) for k in frozen)
    assert any(not torch.equal(got[k], pre[k]) for k in got if k not in frozen)


def test_a_changed_image_redoes_exactly_the_units_that_saw_it(tmp_path, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["variants"] = [{"name": "baseline"}]
    cfg["audit"] = False
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    # One target image gets other pixels (same file name, same label).
    path = sorted(Path(cfg["target"]["data"]["path"]).rglob("*.png"))[0]
    pixels = np.asarray(Image.open(path))
    Image.fromarray((255 - pixels).astype(np.uint8)).save(path)
    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    assert any("pretraining: done earlier, reused" in m for m in logs)  # the source is unchanged
    assert not any(m.startswith("[baseline] done earlier") for m in logs)  # the cell saw the image
    assert any(m.startswith("[baseline] freeze on") for m in logs)
