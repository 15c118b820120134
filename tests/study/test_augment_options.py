"""Augmentation and intensity options in a study: refused up front where they cannot apply,
offline copies and preprocess.rescale wired through a run, and the augmentation preview."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_model
from medtransfer.study import study_from_dict

MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}


def _features_study(tmp_path: Path, folders: Callable[..., Path], augment: dict, **over) -> dict:
    """A matrix of one weights file × one target × a features + SVM strategy (no training)."""
    weights = tmp_path / "init.pt"
    if not weights.exists():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(9)
            model = build_model(ModelConfig(**MODEL), num_classes=2, in_chans=1, img_size=16)
        torch.save(model.state_dict(), weights)
    cfg = {
        "name": "aug_features", "seed": 3, "cache_dir": str(tmp_path / "cache"), "audit": False,
        "preprocess": {"size": 16}, "model": MODEL,
        "sources": {"fromfile": {"weights": f"file:{weights}"}},
        "targets": {"tgt": {"data": {"path": str(folders(tmp_path / "tgt", {"normal": 30, "covid": 30},
                                                         seed=2))},
                            "split": {"test_sets": 1, "test_per_class": 8, "val_fraction": 0.2}}},
        "strategies": {"svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3}},
        "transfer": {"augment": augment},
    }
    cfg.update(over)
    return cfg


def test_online_augmentation_with_a_features_strategy_is_refused_before_any_data(tmp_path, class_folders):
    cfg = _features_study(tmp_path, class_folders, {"rotation": 10})
    cfg["targets"]["tgt"]["data"]["path"] = str(tmp_path / "nowhere")  # never read
    with pytest.raises(ConfigError, match=r"'transfer\.augment' \(variant baseline\): strategy 'svm' "
                                          r"\(kind features\).*offline_copies"):
        study_from_dict(cfg)
    cfg["variants"] = [{"name": "plain"}, {"name": "aug", "transfer": {"augment": {"horizontal_flip": True}}}]
    cfg["transfer"] = {}
    with pytest.raises(ConfigError, match=r"'transfer\.augment' \(variant aug\)"):
        study_from_dict(cfg)


def test_colour_transforms_on_grey_images_are_refused(tmp_path, class_folders):
    cfg = _features_study(tmp_path, class_folders, {"hsv_shift": [10, 0, 0], "offline_copies": 1})
    with pytest.raises(ConfigError, match=r"'transfer\.augment\.hsv_shift'.*preprocess\.color"):
        study_from_dict(cfg)
    cfg["preprocess"] = {"size": 16, "color": "rgb"}
    assert study_from_dict(cfg).preprocess.channels == 3


def test_features_learn_from_offline_copies_and_rescale_reaches_the_model(tmp_path, class_folders,
                                                                          monkeypatch):
    import medtransfer.strategies.run as strategy_run

    seen: list[np.ndarray] = []
    real = strategy_run.extract_features

    def spy(model, images, *args, **kwargs):
        seen.append(images)
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(strategy_run, "extract_features", spy)
    augment = {"horizontal_flip": True, "rotation": 15, "offline_copies": 1}
    cfg = _features_study(tmp_path, class_folders, augment, preprocess={"size": 16, "rescale": 1})
    out = run_study(study_from_dict(cfg), tmp_path / "run", report=False, progress=False, echo=lambda _: None)
    with (out / "splits" / "tgt.csv").open() as fh:
        train = sum(r["part"] == "train" for r in csv.DictReader(fh))
    assert len(seen[0]) == 2 * train  # the training images and one augmented copy of each
    assert not np.array_equal(seen[0][:train], seen[0][train:])
    (unit,) = (out / "units").glob("cell-*")
    spec = json.loads((unit / "unit.json").read_text())["spec"]
    assert spec["transfer"]["augment"]["offline_copies"] == 1
    assert spec["preprocess"]["rescale"] == 1.0
    mean, std = json.loads((unit / "result.json").read_text())["input_norm"]
    assert mean == [0.0] and std == pytest.approx([1 / 255])  # the model saw 0..255


def test_augment_preview_writes_a_grid_per_variant_stage_and_data_set(tmp_path, tiny_study_config, capsys):
    cfg = tiny_study_config(tmp_path)
    cfg["pretrain"]["augment"] = {"horizontal_flip": True}
    cfg["variants"] = [{"name": "baseline"},
                       {"name": "doubled", "transfer": {"augment": {"rotation": 20, "offline_copies": 1}}}]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["augment-preview", str(path), "--out", str(tmp_path / "preview"), "--n", "5"]) == 0
    names = sorted(p.name for p in (tmp_path / "preview").iterdir())
    assert names == ["augment_baseline_pretrain_source.png", "augment_doubled_pretrain_source.png",
                     "augment_doubled_transfer_target.png"]
    with Image.open(tmp_path / "preview" / names[-1]) as img:
        assert img.width > 300 and img.height > 150
    assert "saved:" in capsys.readouterr().out
    path.write_text(yaml.safe_dump({**cfg, "pretrain": {"train": cfg["pretrain"]["train"]},
                                    "variants": [{"name": "baseline"}]}))
    assert main(["augment-preview", str(path), "--out", str(tmp_path / "none")]) == 2
    assert "nothing to preview" in capsys.readouterr().err
