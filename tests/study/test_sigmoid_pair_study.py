"""A study whose model has two independent sigmoid outputs (``model.binary_output:
sigmoid_pair``, seed 004's ``Dense(2, sigmoid)``): trained with binary cross-entropy, keyed by
the choice, and evaluated (temperature, TTA), predicted and exported with the same normalised
probabilities, by every strategy that trains or fits its output layer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medtransfer.api import run_study
from medtransfer.export import export_model
from medtransfer.inference import load_model, predict
from medtransfer.sigmoid_pair import has_sigmoid_pair
from medtransfer.study import study_from_dict


def _study(base: dict[str, Any]) -> dict[str, Any]:
    train = base["transfer"]["train"]
    return {
        "name": "sigmoid_pair", "seed": 3, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "pretrain": base["pretrain"],
        "model": {**base["model"], "binary_output": "sigmoid_pair"},
        "sources": {"src": base["source"]}, "targets": {"tgt": base["target"]},
        "strategies": {"freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": train},
                       "lpft": {"kind": "finetune", "head_fit": "logreg", "finetune": train},
                       "mlp": {"kind": "features", "classifier": "mlp", "mlp": {"train": train}}},
        "evaluate": {"calibration": "temperature", "tta": ["hflip"]},
    }


def _own(unit: Path) -> dict[str, np.ndarray]:
    with (unit / "predictions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["test_set"].startswith("test")]
    return {r["id"]: np.array([float(r["p_normal"]), float(r["p_covid"])]) for r in rows}


def test_sigmoid_pair_trains_predicts_and_exports_alike(tmp_path, tiny_study_config):
    base = tiny_study_config(tmp_path)
    out = tmp_path / "run"
    run_study(study_from_dict(_study(base)), out, echo=lambda m: None, report=False)

    specs = [json.loads(p.read_text())["spec"] for p in (out / "units").glob("*/unit.json")]
    assert len(specs) == 4 and all(s["model"]["binary_output"] == "sigmoid_pair" for s in specs)
    root = Path(base["target"]["data"]["path"])
    for arm in ("src.freeze", "src.lpft", "src.mlp"):
        model = load_model(out, arm=arm)
        assert has_sigmoid_pair(model.module), arm
        own = _own(model.unit)
        rows = predict([root / i for i in own], model)
        got = np.array([[r["p_normal"], r["p_covid"]] for r in rows])
        np.testing.assert_allclose(got, np.stack(list(own.values())), atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)

    model = load_model(out, arm="src.freeze")
    images = np.random.default_rng(0).integers(0, 256, (6, 1, 16, 16), dtype=np.uint8)
    expected = model.predict_proba(images)
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    program_file, _ = export_model(model, tmp_path / "model.pt2", "pt2")
    with torch.no_grad():
        np.testing.assert_allclose(torch.export.load(str(program_file)).module()(x).numpy(), expected,
                                   atol=1e-5)
    pytest.importorskip("onnxruntime", reason="optional extra medtransfer[export]")
    pytest.importorskip("onnxscript", reason="optional extra medtransfer[export] (the dynamo ONNX exporter)")
    import onnxruntime

    onnx_file, _ = export_model(model, tmp_path / "model.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4)
