"""``compat: keras`` at study level: what it sets in each section, what a section overrides, what
default studies keep (their unit keys), and what a run records (result.json, unit keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_model
from medtransfer.models.keras import KerasBatchNorm2d
from medtransfer.study import resolve_variants, study_from_dict
from medtransfer.study.units import spec_key


def test_study_compat_fills_every_section_and_sections_override_it(tiny_study_config, tmp_path):
    raw = tiny_study_config(tmp_path)
    default = study_from_dict(raw)
    assert default.compat == "torch" and default.model.compat is None
    assert default.preprocess.resize is None and default.transfer.train.compat is None
    assert "compat" not in spec_key(default.model) and "restore_best" not in spec_key(default.pretrain)
    raw["variants"][1]["model"]["compat"] = "torch"  # one variant's model keeps PyTorch's
    raw["preprocess"]["resize"] = "bilinear"  # the seed resized with OpenCV
    keras = study_from_dict({**raw, "compat": "keras"})
    assert keras.preprocess.resize == "bilinear"
    baseline, bn = resolve_variants(keras)
    assert baseline.model.compat == "keras" and bn.model.compat == "torch"
    assert baseline.pretrain.train.compat == bn.strategies["freeze"].train.compat == "keras"
    assert not baseline.pretrain.train.restores_best
    assert spec_key(baseline.model)["compat"] == "keras"  # in every unit key
    assert study_from_dict({**tiny_study_config(tmp_path), "compat": "keras"}).preprocess.resize == "nearest"
    with pytest.raises(ConfigError, match="'compat': got 'tf'"):
        study_from_dict({**raw, "compat": "tf"})
    with pytest.raises(ConfigError, match="'pretrain.transfer_from': got 'best' with train.restore_best"):
        study_from_dict({**raw, "compat": "keras", "pretrain": {**raw["pretrain"], "transfer_from": "best"}})


def test_model_compat_keras_gives_keras_batch_norm_and_glorot_init():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="alexnet_small", batch_norm=True, compat="keras"),
                        num_classes=2, in_chans=1, img_size=32)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, KerasBatchNorm2d) and (m.eps, m.momentum) == (1e-3, 0.01) for m in bns)
    dense = build_model(ModelConfig(name="densenet121", compat="keras"), num_classes=2, in_chans=3,
                        img_size=32)
    assert next(m for m in dense.modules() if isinstance(m, nn.BatchNorm2d)).eps == 1.001e-5
    for m in model.modules():  # Glorot-uniform kernels within their bound, zero biases
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in, fan_out = m.weight[0].numel(), m.weight.shape[0] * m.weight[0, 0].numel()
            assert float(m.weight.detach().abs().max()) <= (6 / (fan_in + fan_out)) ** 0.5
            assert m.bias is None or not m.bias.any()
    resnet = build_model(ModelConfig(name="resnet_cifar", compat="torch"), num_classes=2, in_chans=1,
                         img_size=32)
    assert type(resnet.bn1) is nn.BatchNorm2d and resnet.bn1.eps == 1e-5


def test_keras_batch_norm_moves_toward_the_biased_variance():
    x = torch.randn(2, 3, 2, 2) * 3 + 1
    keras_bn = KerasBatchNorm2d(3, eps=1e-3, momentum=0.01)
    torch_bn = nn.BatchNorm2d(3, eps=1e-3, momentum=0.01)
    assert torch.allclose(keras_bn(x), torch_bn(x))  # normalised alike
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(keras_bn.running_var, 0.99 + 0.01 * var)
    assert torch.allclose(torch_bn.running_var, 0.99 + 0.01 * var * 8 / 7)
    assert int(keras_bn.num_batches_tracked) == 1


def test_a_keras_run_records_its_compat_and_the_epoch_it_tested(tiny_study_config, tmp_path, one_thread):
    raw = tiny_study_config(tmp_path)
    raw["variants"] = raw["variants"][1:]  # the batch-norm variant: BN folded with Keras's eps
    out = run_study(study_from_dict({**raw, "compat": "keras"}), tmp_path / "run", echo=lambda m: None,
                    report=False)
    results = {p.parent.name: json.loads(p.read_text()) for p in Path(out, "units").glob("*/result.json")}
    assert len(results) == 2
    for name, result in results.items():
        assert result["compat"] == {"model": "keras", "train": ["keras"], "preprocess.resize": "nearest"}
        assert result["tested_epoch"] == {"which": "last", "epoch": 2}, name
        folder = Path(out, "units", name)  # what later loads the unit's model is the tested one
        assert not (folder / "best.pt").exists() and (folder / "last.pt").is_file()
    pretrain = next(r for n, r in results.items() if n.startswith("pretrain"))
    assert pretrain["checkpoint"] == "last.pt" and pretrain["transfer_checkpoint"] == "final.pt"
    default = run_study(study_from_dict(raw), tmp_path / "run", echo=lambda m: None, report=False)
    units = sorted(p.name for p in Path(default, "units").iterdir())
    assert len(units) == 4  # the default study's units are new ones: no key collides
    torch_results = [json.loads((Path(default, "units", u, "result.json")).read_text()) for u in units
                     if u not in results]
    assert all("compat" not in r and r["tested_epoch"]["which"] == "best" for r in torch_results)
