"""``model.weights: keras:PATH``: Keras-application weight files load into the architectures of
the same topology, checked against Keras's own outputs.

``tests/data/keras_apps/`` (written by ``scripts/make_keras_refs.py``, Keras 3.15): VGG16 (Keras
3 ``.weights.h5``), DenseNet121 and ResNet50 (Keras 2 ``.h5``, the layout of Keras's published
ImageNet files), built with ``weights=None`` at 64 px with a 3-class top, their weights a
periodic pattern (compressible with xz), and Keras's logits on 2 images. Loaded here, each
model must give the same logits within 1e-4 of their largest magnitude: the layer mapping,
kernel transposes, VGG16's flatten order (Keras's (H, W, C) into torch's (C, H, W)), the
ResNet v1 stride placement and conv biases and the batch-norm constants all enter; with
``weights_norm: caffe`` the first conv reads RGB where Keras's read BGR. Reading needs h5py (the
``keras`` extra).
"""

from __future__ import annotations

import lzma
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_pretrained
from medtransfer.models.keras_weights import read_keras_h5
from medtransfer.models.weights import WeightsError

APPS = Path(__file__).resolve().parents[1] / "data" / "keras_apps"
FILES = {"vgg16": "vgg16.weights.h5", "densenet121": "densenet121.h5", "resnet50": "resnet50.h5"}
OPTIONS = {"vgg16": {"layout": "keras"}, "densenet121": {}, "resnet50": {"layout": "keras"}}


def _file(name: str, tmp: Path) -> Path:
    out = tmp / FILES[name]
    with lzma.open(APPS / f"{FILES[name]}.xz", "rb") as src, out.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def _cfg(name: str, path: Path, **extra: object) -> ModelConfig:
    return ModelConfig(name=name, options=OPTIONS[name], weights=f"keras:{path}", compat="keras",
                       **extra)  # type: ignore[arg-type]


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


@pytest.mark.parametrize("name", FILES)
def test_keras_application_weights_give_keras_outputs(name, tmp_path, one_thread):
    pytest.importorskip("h5py", reason="reading Keras weight files needs h5py (extra 'keras')")
    refs = np.load(APPS / "predictions.npz")
    path = _file(name, tmp_path)
    built = build_pretrained(_cfg(name, path), num_classes=3, in_chans=3, img_size=64)
    want = refs[name]
    assert np.abs(_logits(built.model, refs["input"]) - want).max() <= 1e-4 * np.abs(want).max()
    assert built.report is not None and not built.report.reset  # the 3-class top loaded too
    assert built.input_norm is None  # as the seeds fed Keras: no preprocess_input
    if name != "densenet121":  # Caffe mode: RGB images meet the first conv as BGR met Keras's
        caffe = build_pretrained(_cfg(name, path, weights_norm="caffe"), num_classes=3, in_chans=3,
                                 img_size=64)
        rgb = refs["input"][..., ::-1]
        assert np.abs(_logits(caffe.model, rgb) - want).max() <= 1e-4 * np.abs(want).max()
        assert caffe.input_norm is not None and caffe.input_norm[1][0] == pytest.approx(1 / 255)


def test_keras_weights_check_the_architecture(tmp_path):
    pytest.importorskip("h5py", reason="reading Keras weight files needs h5py (extra 'keras')")
    dense = _file("densenet121", tmp_path)
    two = build_pretrained(_cfg("densenet121", dense), num_classes=2, in_chans=3, img_size=64)
    assert two.report is not None and two.report.reset == ["classifier.weight", "classifier.bias"]
    with pytest.raises(WeightsError, match="count per class"):
        build_pretrained(_cfg("resnet50", dense), num_classes=3, in_chans=3, img_size=64)
    resnet = _file("resnet50", tmp_path)
    v15 = ModelConfig(name="resnet50", weights=f"keras:{resnet}")
    with pytest.raises(ConfigError, match="layout: keras"):
        build_pretrained(v15, num_classes=3, in_chans=3, img_size=64)
    layers = read_keras_h5(resnet)
    assert layers[0][0] == "conv1_conv" and layers[0][1][0].shape == (7, 7, 3, 64)
    with pytest.raises(ConfigError, match="'model.weights_norm': got 'caffe'"):
        build_pretrained(ModelConfig(name="vgg16", weights="file:x.pt", weights_norm="caffe"),
                         num_classes=3, in_chans=3, img_size=64)


def test_missing_h5py_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(WeightsError, match=r"needs h5py \(pip install 'medtransfer\[keras\]'\)"):
        read_keras_h5(tmp_path / "any.h5")
