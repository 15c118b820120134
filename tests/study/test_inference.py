"""A finished run's model used on new images: predict (API and CLI) reproduces the run's own
predictions from the image files, and ONNX / torch.export (.pt2) exports give the same probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.data import PreprocessConfig
from medtransfer.data.images import decode_image
from medtransfer.errors import ConfigError, DataError
from medtransfer.export import export_model
from medtransfer.inference import load_model, predict
from medtransfer.study import study_from_dict


def _matrix(base: dict[str, Any]) -> dict[str, Any]:
    train = base["transfer"]["train"]
    return {
        "name": "tiny_use", "seed": 3, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "model": base["model"], "pretrain": base["pretrain"],
        "sources": {"src": base["source"]}, "targets": {"tgt": base["target"]},
        "strategies": {"freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": train},
                       "finetune": {"kind": "finetune", "head_fit": "train", "head": train,
                                    "finetune": train},
                       "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3}},
    }


def _own_predictions(unit: Path) -> dict[str, np.ndarray]:
    with (unit / "predictions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["test_set"].startswith("test")]
    return {r["id"]: np.array([float(r["p_normal"]), float(r["p_covid"])]) for r in rows}


def test_predict_and_export_reproduce_the_runs_predictions(tmp_path, tiny_study_config):
    base = tiny_study_config(tmp_path)
    out = tmp_path / "run"
    run_study(study_from_dict(_matrix(base)), out, echo=lambda m: None, report=False)
    root = Path(base["target"]["data"]["path"])

    for arm in ("src.freeze", "src.finetune", "src.svm"):
        model = load_model(out, arm=arm)
        own = _own_predictions(model.unit)
        rows = predict([root / i for i in own], model)
        assert [r["error"] for r in rows] == [""] * len(own)
        got = np.array([[r["p_normal"], r["p_covid"]] for r in rows])
        np.testing.assert_allclose(got, np.stack(list(own.values())), atol=1e-5)
        assert np.allclose(got.sum(axis=1), 1.0)
        assert {r["predicted"] for r in rows} <= {"normal", "covid"} and rows[0]["threshold"] == 0.5

    model = load_model(out, arm="src.freeze")
    # ONNX and TorchScript: the same probabilities as torch on real image files, within 1e-4.
    pytest.importorskip("onnxruntime", reason="optional extra medtransfer[export]")
    pytest.importorskip("onnxscript", reason="optional extra medtransfer[export] (the dynamo ONNX exporter)")
    import onnxruntime

    files = sorted(root.rglob("*.png"))[:12]
    pre = PreprocessConfig(**{"size": base["preprocess"]["size"]})
    images = np.stack([decode_image(f, pre) for f in files])
    expected = model.predict_proba(images)
    x = images.astype(np.float32) / 255.0
    onnx_file, sidecar = export_model(model, tmp_path / "model.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x})[0], expected, atol=1e-4)
    np.testing.assert_allclose(session.run(None, {"image": x[:5]})[0], expected[:5], atol=1e-4)
    meta = json.loads(sidecar.read_text())
    assert meta["classes"] == ["normal", "covid"] and meta["input"]["shape"] == ["N", 1, 16, 16]
    assert json.loads(session.get_modelmeta().custom_metadata_map["medtransfer"])["arm"] == "src.freeze"
    card = (tmp_path / "model_model_card.md").read_text()
    assert "# Model card: src.freeze → tgt" in card and "## Not tested on" in card
    assert "| tgt | target | test_1 |" in card  # the data and its split, from data.yaml
    program_file, _ = export_model(model, tmp_path / "model.pt2", "pt2")
    program = torch.export.load(str(program_file)).module()
    with torch.no_grad():
        np.testing.assert_allclose(program(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
        assert program(torch.from_numpy(x[:5])).shape == (5, 2)  # any batch size
    with pytest.raises(ConfigError, match=r"'format': got 'torchscript'.*use 'pt2'"):
        export_model(model, tmp_path / "model.pt", "torchscript")  # type: ignore[arg-type]

    # The CLI: a folder with one unreadable file; it is named, the rest still predicted.
    folder = tmp_path / "new"
    folder.mkdir()
    for f in files[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    table = tmp_path / "pred.csv"
    assert main(["predict", str(out), str(folder), "--variant", "src.freeze", "--out", str(table),
                 "--threshold", "val", "--cam", str(tmp_path / "cams")]) == 0
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert "broken.png" in broken["error"] and broken["predicted"] == ""
    assert all(r["predicted"] in ("normal", "covid") for r in rows if r is not broken)
    cams = sorted((tmp_path / "cams").glob("*_gradcam.png"))
    assert len(cams) == 3 and {r["cam"] for r in rows if r is not broken} == {str(c) for c in cams}
    assert main(["export", str(out), "--variant", "src.finetune", "--format", "pt2",
                 "--out", str(tmp_path / "ft.pt2")]) == 0

    # Bad input names what is wrong.
    with pytest.raises(ConfigError, match=r"'variant': got 'nope'; this run's: src\.freeze"):
        load_model(out, arm="nope")
    with pytest.raises(ConfigError, match=r"several"):
        load_model(out)
    # The features unit's linear SVM + Platt scaling, rebuilt from arrays, exports like any model.
    svm = load_model(out, arm="src.svm")
    svm_file, _ = export_model(svm, tmp_path / "svm.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(svm_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x})[0], svm.predict_proba(images), atol=1e-4)
    (next(svm.unit.parent.glob("cell-*svm*")) / "classifier.npz").unlink()
    with pytest.raises(DataError, match=r"classifier\.npz is missing \(its unit.s .*result\.json lists it\)"):
        load_model(out, arm="src.svm")
    with pytest.raises(DataError, match=r"nowhere\.png: no such file"):
        predict([tmp_path / "nowhere.png"], model)
