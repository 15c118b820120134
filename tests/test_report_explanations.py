"""The study's ``report`` section drawing filters, feature maps and activation maximisation (seeds
003, 004) into plots/ and report.html for a tiny matrix run; the models drawn are the arms' own
(a features arm's backbone); a bad layer name fails when the config is read; the strategy
differences reach report.html."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.explain import feature_maps, first_layer_filters
from medtransfer.report import load_run
from medtransfer.report.explanations import arm_network
from medtransfer.study import study_from_dict
from medtransfer.train import load_checkpoint

TRAIN = {"epochs": 1, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.01}}
MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}


def _cfg(tmp_path: Path, folders: Callable[..., Path], report: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "explained", "seed": 2, "cache_dir": str(tmp_path / "cache"), "audit": False,
        "preprocess": {"size": 16}, "model": MODEL, "pretrain": {"train": TRAIN},
        "sources": {"src": {"data": {"path": str(folders(tmp_path / "src", {"neg": 24, "pos": 24}, seed=1))},
                            "split": {"val_fraction": 0.2}}},
        "targets": {"tgt": {"data": {"path": str(folders(tmp_path / "tgt", {"a": 24, "b": 24}, seed=2))},
                            "split": {"test_sets": 1, "test_per_class": 5, "val_fraction": 0.2}}},
        "strategies": {"ft": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": TRAIN},
                       "svm": {"kind": "features", "classifier": "logreg"}},
        "report": report,
    }


def test_filters_feature_maps_and_activation_maximisation_in_plots_and_the_report(
        tmp_path, class_folders, one_thread):
    report = {"filters": True, "feature_maps": {"layers": ["features.1.0"], "images": 2, "channels": 3},
              "activation_max": {"filters": 2, "steps": 3}, "differences": [["ft", "svm"]]}
    out = tmp_path / "run"
    run_study(study_from_dict(_cfg(tmp_path, class_folders, report)), out, echo=lambda m: None,
              progress=False, n_boot=50, gallery_images=0)
    plots = out / "plots"
    arms = ["src_ft", "src_svm"]
    for stem in ["filters_source_src_baseline_src_", *(f"filters_{a}" for a in arms),
                 *(f"featuremaps_{a}_features_1_0" for a in arms), *(f"actmax_{a}" for a in arms)]:
        assert (plots / f"{stem}.png").is_file() and (plots / f"{stem}.svg").is_file(), stem
    # every arm its own figure: a matrix arm's name ("src.ft") once lost its last part as a suffix
    assert (plots / "confusion_src.ft.png").is_file() and (plots / "confusion_src.svm.png").is_file()
    assert (plots / "learning_transfer_src.ft.png").is_file()
    html = (out / "report.html").read_text()
    section = html[html.index("Filters, feature maps and activation maximisation"):]
    assert section.count("data:image/png;base64") >= 7 and "Not drawn" not in section.split("<h2")[1]
    assert "AUC difference ft − svm (paired by test set)" in html  # the report's differences table
    md = (out / "report.md").read_text()
    assert "plots/featuremaps_src_svm_features_1_0.png" in md

    # The networks drawn are the arms' own: the freeze arm's checkpoint, the svm arm's backbone.
    run = load_run(out)
    ft, svm = run.arms["tgt"]
    assert (ft.strategy, svm.strategy) == ("ft", "svm")
    ft_net = arm_network(run, ft).module
    svm_net = arm_network(run, svm).module
    saved = torch.load(svm.cells[0].dir / "backbone.pt", weights_only=True)
    conv = "features.0.0.weight"
    assert torch.equal(svm_net.state_dict()[conv], saved[conv])
    trained = load_checkpoint(ft.cells[0].checkpoint)["model_state"]
    assert all(torch.equal(v, trained[k]) for k, v in ft_net.state_dict().items())
    assert not torch.equal(ft_net.state_dict()["classifier.weight"], saved["classifier.weight"])
    # the filters figure shows first_layer_filters of that network: min-max scaled per filter
    shown = first_layer_filters(svm_net)
    w = saved[conv].numpy()
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(shown, (w - lo) / (w.max(axis=(1, 2, 3), keepdims=True) - lo), rtol=1e-5)
    width = svm_net.get_submodule("features.1.0").out_channels
    assert feature_maps(svm_net, np.zeros((1, 1, 16, 16), np.uint8), "features.1.0").shape[:2] == (1, width)


def test_figures_stay_off_by_default(tmp_path, class_folders):
    cfg = study_from_dict(_cfg(tmp_path, class_folders, {}))
    assert not cfg.report.explains and cfg.report.differences is None


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"feature_maps": {"layers": ["feature.1.0"]}},
         "'report.feature_maps.layers': got 'feature.1.0'; did you mean 'features.1.0'?"),
        ({"activation_max": {"layer": "clasifier"}}, "'report.activation_max.layer': got 'clasifier'"),
        ({"activation_max": {"steps": 0}}, "'report.activation_max.steps': got 0; allowed: an integer >= 1"),
        ({"feature_maps": {"images": 0}}, "'report.feature_maps.images': got 0"),
        ({"filter": True}, "unknown key 'filter' in 'report'; did you mean 'filters'?"),
    ],
)
def test_bad_report_keys_fail_when_the_config_is_read(tmp_path, class_folders, report, message):
    with pytest.raises(ConfigError) as info:
        study_from_dict(_cfg(tmp_path, class_folders, report))
    assert message in str(info.value)
