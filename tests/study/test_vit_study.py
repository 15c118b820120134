"""A tiny Vision Transformer from a model folder (timm's ``config.json`` + ``model.safetensors``,
random weights) through every strategy of a matrix study — scratch, features on the class token
and on mean-pooled tokens, freezing all but the last block (on cached activations), LP-FT with
layer-wise learning-rate decay — with temperature calibration and test-time augmentation; a CNN
folder without a normalisation of its own gets one from ``weights_norm: {range: ...}``. Predict
and the ONNX export reproduce the run's post-hoc probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from timm.models import save_for_hf

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.export import export_model
from medtransfer.inference import load_model, predict
from medtransfer.plots import FigureDir
from medtransfer.report.gallery import gradcam_gallery
from medtransfer.report.rundir import load_run
from medtransfer.study import study_from_dict

VIT = {"patch_size": 4, "depth": 2, "embed_dim": 16, "num_heads": 2}


def vit_folder(root: Path, seed: int = 0) -> Path:
    """A ViT encoder folder as ``push_to_hf_hub`` writes it: random weights, trained at 32 px, no
    classifier (num_classes 0, as DINOv2-style encoders ship)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, **VIT)
    save_for_hf(model, str(root), safe_serialization=True)
    return root


def cnn_folder(root: Path) -> Path:
    """A resnet10t folder whose config names no normalisation (as a converted TorchXRayVision-style
    model might), its weights in pytorch_model.bin."""
    small = {"channels": [8, 8, 16, 16], "stem_width": 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = timm.create_model("resnet10t", num_classes=3, **small)
    root.mkdir(parents=True)
    torch.save(model.state_dict(), root / "pytorch_model.bin")
    config = {"architecture": "resnet10t", "num_classes": 3, "model_args": small,
              "pretrained_cfg": {"input_size": [3, 224, 224], "first_conv": "conv1.0", "classifier": "fc"}}
    (root / "config.json").write_text(json.dumps(config))
    return root


def _study(base: dict[str, Any], vit: Path, cnn: Path) -> dict[str, Any]:
    train = {**base["transfer"]["train"], "epochs": 2}
    return {
        "name": "vit", "seed": 3, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": {"size": 16},
        "model": {"name": f"timm:local-dir:{vit}", "in_chans_policy": "repeat"},
        "sources": {"pretrained": {"weights": "pretrained"}}, "targets": {"tgt": base["target"]},
        "strategies": {
            "scratch": {"kind": "scratch", "train": train},
            "cls": {"kind": "features", "layer": "pooled", "pool": "cls"},
            "mean": {"kind": "features", "layer": "pooled", "pool": "mean"},
            "last_block": {"kind": "freeze", "freeze": {"trainable_layers": 2}, "train": train},
            "lpft": {"kind": "finetune",
                     "finetune": {**train, "optimizer": {"name": "adamw", "lr": 1e-4, "layer_decay": 0.75}}},
        },
        "variants": [{"name": "vit"},
                     {"name": "cnn", "only": ["lpft"],
                      "model": {"name": f"timm:local-dir:{cnn}", "weights_norm": {"range": [-1024, 1024]}}}],
        "evaluate": {"calibration": "temperature", "tta": ["hflip"]},
    }


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _own(unit: Path) -> dict[str, np.ndarray]:
    with (unit / "predictions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["test_set"].startswith("test")]
    return {r["id"]: np.array([float(r["p_normal"]), float(r["p_covid"])]) for r in rows}


def test_a_vit_folder_runs_every_strategy_with_calibration_and_tta(tmp_path, tiny_study_config):
    base = tiny_study_config(tmp_path)
    out = tmp_path / "run"
    cfg = study_from_dict(_study(base, vit_folder(tmp_path / "vit"), cnn_folder(tmp_path / "cnn")))
    run_study(cfg, out, echo=lambda m: None, report=False)

    rows = _rows(out)
    cells = {(r["variant"], r["strategy"]) for r in rows if r["stage"] == "transfer"}
    assert cells == {("vit", s) for s in ("scratch", "cls", "mean", "last_block", "lpft")} | {("cnn", "lpft")}
    # calibration: ECE and Brier before and after on every evaluated set, T on val
    for variant, strategy in cells:
        got = {r["metric"]: float(r["value"]) for r in rows if r["variant"] == variant
               and r["strategy"] == strategy and r["test_set"] == "val"}
        assert {"ece", "brier", "ece_uncalibrated", "brier_uncalibrated"} <= set(got), (variant, strategy)
        assert got["temperature"] > 0
    units = out / "units"
    results = {p.parent.name: json.loads(p.read_text()) for p in units.glob("cell-*/result.json")}
    specs = {p.parent.name: json.loads(p.read_text())["spec"] for p in units.glob("cell-*/unit.json")}
    assert all(s["calibration"] == "temperature" and s["tta"] == ["hflip"] for s in specs.values())
    assert all(r["posthoc"]["tta"] == ["hflip"] for r in results.values())
    frozen = next(r for name, r in results.items() if "last_block" in name)
    assert frozen["path"] == "cached" and "up to 'blocks.1'" in frozen["path_reason"]
    # the folder's normalisation (mean 0.5, std 0.5) and the CNN's range [-1024, 1024]
    norms = {name.split("-")[1]: r["input_norm"] for name, r in results.items() if "input_norm" in r}
    assert any(n == [[0.5], [0.5]] for n in norms.values())
    assert [[0.5], [1 / 2048]] in norms.values()

    # predict and the ONNX export apply the TTA and temperature the run was evaluated with
    root = Path(base["target"]["data"]["path"])
    for arm in ("vit.pretrained.lpft", "vit.pretrained.cls", "cnn.pretrained.lpft"):
        model = load_model(out, arm=arm)
        assert model.info["posthoc"]["tta"] == ["hflip"]
        own = _own(model.unit)
        got = predict([root / i for i in own], model)
        np.testing.assert_allclose(np.array([[r["p_normal"], r["p_covid"]] for r in got]),
                                   np.stack(list(own.values())), atol=1e-5)
    pytest.importorskip("onnxruntime", reason="optional extra medtransfer[export]")
    import onnxruntime

    model = load_model(out, arm="vit.pretrained.lpft")
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 16, 16), dtype=np.uint8)
    onnx_file, sidecar = export_model(model, tmp_path / "vit.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": images.astype(np.float32) / 255})[0],
                               model.predict_proba(images), atol=1e-4)
    meta = json.loads(sidecar.read_text())
    assert meta["posthoc"]["tta"] == ["hflip"]
    assert meta["input"]["normalisation_inside_model"]["mean"] == [0.5]
    # the report's Grad-CAM gallery draws the ViT arms too (tokens on the patch grid)
    gallery = gradcam_gallery(load_run(out), FigureDir(tmp_path / "plots", ("png",)), n_images=2)
    assert {"vit.pretrained.lpft", "vit.pretrained.last_block", "vit.none.scratch"} <= set(gallery.images)


def test_calibration_needs_validation_images_and_says_so_before_running(tmp_path, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["evaluate"] = {"calibration": "temperature"}
    assert study_from_dict(cfg).evaluate.calibration == "temperature"
    cfg["target"]["split"]["val_fraction"] = 0
    with pytest.raises(ConfigError, match="'evaluate.calibration': temperature is fitted on the validation"):
        study_from_dict(cfg)
