"""A tiny study with a configured head, pretrained with dropout and batch norm and transferred
into the plain model (pretrain.model: seed 000's "unified" AlexNet) from the pretraining's last
epoch (pretrain.transfer_from: last); the run's model rebuilt by load_model predicts what the
run did."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.inference import load_model, predict
from medtransfer.models import create_model
from medtransfer.study import study_from_dict
from medtransfer.train import load_checkpoint

HEAD = {"pool": "avg", "pool_size": 2, "hidden": [8], "dropout": 0.5, "init": "keras"}


def _config(base):
    cfg = dict(base, name="tiny_head", audit=False)
    cfg["model"] = {"name": "alexnet_small", "options": {"base": 4}, "head": HEAD}
    # seed 000's BN and dropout variants pretrain with them and transfer into the plain model
    cfg["pretrain"] = {**base["pretrain"], "transfer_from": "last",
                       "model": {"conv_dropout": 0.3, "batch_norm": True}}
    cfg["transfer"] = {**base["transfer"], "freeze": {"trainable_layers": 2}}
    cfg["variants"] = [{"name": "unified"}]
    return cfg


def _unit(out: Path, kind: str) -> Path:
    return next(p for p in (out / "units").iterdir() if p.name.startswith(kind))


def test_head_last_epoch_and_unified_transfer_end_to_end(tmp_path, tiny_study_config):
    base = tiny_study_config(tmp_path)
    out = tmp_path / "run"
    run_study(study_from_dict(_config(base)), out, echo=lambda m: None, report=False)

    pre, cell = _unit(out, "pretrain"), _unit(out, "cell")
    pre_spec = json.loads((pre / "unit.json").read_text())["spec"]
    cell_spec = json.loads((cell / "unit.json").read_text())["spec"]
    assert pre_spec["model"]["conv_dropout"] == 0.3 and pre_spec["model"]["batch_norm"] is True
    assert pre_spec["pretrain"]["transfer_from"] == "last" and "model" not in pre_spec["pretrain"]
    assert {"conv_dropout", "batch_norm"}.isdisjoint(cell_spec["model"])
    assert cell_spec["model"]["head"]["hidden"] == [8]
    result = json.loads((pre / "result.json").read_text())
    final = load_checkpoint(pre / result["transfer_checkpoint"])
    assert result["transfer_checkpoint"] == "final.pt" and final["epoch"] == result["epochs_run"]
    # the frozen body of the transferred model is the pretraining's last epoch, its BN folded
    tuned = load_checkpoint(cell / "best.pt")["model_state"]
    plain = create_model("alexnet_small", num_classes=2, base=4, img_size=16)
    folded = plain.fold_batch_norm(final["model_state"])
    for key in ("features.1.0.weight", "features.1.0.bias"):
        torch.testing.assert_close(tuned[key], folded[key])
    assert {k for k in tuned if k.startswith("head.")} == {
        "head.pre_logits.0.weight", "head.pre_logits.0.bias", "head.fc.weight", "head.fc.bias"}

    model = load_model(out)  # rebuilt from the unit's spec: the same head
    with (cell / "predictions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["test_set"].startswith("test")]
    root = Path(base["target"]["data"]["path"])
    got = predict([root / r["id"] for r in rows], model)
    np.testing.assert_allclose([[g["p_normal"], g["p_covid"]] for g in got],
                               [[float(r["p_normal"]), float(r["p_covid"])] for r in rows], atol=1e-5)


def test_pretrain_model_that_cannot_transfer_is_refused_before_any_data(tmp_path, tiny_study_config):
    cfg = _config(tiny_study_config(tmp_path))
    cfg["pretrain"]["model"] = {"options": {"base": 8}}
    with pytest.raises(ConfigError, match=r"'pretrain.model' \(variant unified\): the pretrained "
                                          r"model does not transfer into 'model'.*features.0.0.weight"):
        study_from_dict(cfg)
    cfg["pretrain"]["model"] = {"conv_dropuot": 0.3}
    with pytest.raises(ConfigError, match="unknown key 'conv_dropuot'.*did you mean 'conv_dropout'"):
        study_from_dict(cfg)
    cfg["pretrain"]["transfer_from"] = "final"
    with pytest.raises(ConfigError, match=r"'pretrain.transfer_from': got 'final'.*'best', 'last'"):
        study_from_dict(cfg)
