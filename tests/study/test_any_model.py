"""Studies with any timm / torchvision model by name, and with a user's own model registered in a
module the study imports (``imports:`` / ``--import``); bad names and modules fail before the run
folder exists."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import pytest
import yaml

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.study import load_study, study_from_dict


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def _one_epoch(cfg: dict) -> dict:
    for stage in ("pretrain", "transfer"):
        cfg[stage]["train"] = {**cfg[stage]["train"], "epochs": 1}
    return cfg


def test_study_with_timm_and_torchvision_models_by_name(tmp_path, tiny_study_config):
    cfg = _one_epoch(tiny_study_config(tmp_path))
    cfg.update(preprocess={"size": 32}, model={"name": "timm:resnet10t"},
               variants=[{"name": "timm"},
                         {"name": "tv", "model": {"name": "torchvision:mobilenet_v3_small",
                                                  "in_chans_policy": "repeat"}}])
    cfg["transfer"]["freeze"] = {"trainable_layers": 2}
    out = tmp_path / "run"
    run_study(study_from_dict(cfg), out, report=False, echo=lambda m: None)
    rows = _rows(out)
    transfer = {(r["variant"], r["test_set"]) for r in rows if r["stage"] == "transfer"}
    assert transfer == {(v, t) for v in ("timm", "tv") for t in ("test_1", "test_2")}
    assert all(r["value"] != "" for r in rows if r["metric"] == "auc")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["name"] == "timm:resnet10t"


def test_unknown_model_fails_before_anything_is_written(tmp_path, tiny_study_config, capsys):
    cfg = tiny_study_config(tmp_path)
    cfg["model"] = {"name": "timm:resnet10tt"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "never"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "study.yaml" in err and "timm has no architecture 'resnet10tt'; closest: timm:resnet10t" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="closest: timm:"):
        load_study(path, {"model": {"name": "timm:nonexistent"}})
    with pytest.raises(ConfigError, match="variants \\(bad\\).*does not take option"):
        study_from_dict({**cfg, "model": {"name": "timm:resnet10t"},
                         "variants": [{"name": "ok"}, {"name": "bad", "model": {"options": {"wings": 2}}}]})
    with pytest.raises(ConfigError, match="no pretrained weights"):
        study_from_dict({**cfg, "model": {"name": "timm:botnet50ts_256", "weights": "imagenet"}})


USER_MODULE = '''
import torch
from torch import nn
from medtransfer.models import register_model


class TinyNet(nn.Module):
    def __init__(self, num_classes, in_chans, width):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x):
        return self.act(self.conv(x))

    def forward_head(self, x, pre_logits=False):
        x = torch.flatten(self.pool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(self.num_features, num_classes)


@register_model
def {name}(*, num_classes, in_chans=1, img_size=16, width: int = 4):
    return TinyNet(num_classes, in_chans, width)
'''


def _user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A module on sys.path registering a tiny model; (module name, model name), both unique."""
    tag = uuid.uuid4().hex[:8]
    module, model = f"mt_user_models_{tag}", f"tiny_net_{tag}"
    (tmp_path / f"{module}.py").write_text(USER_MODULE.replace("{name}", model))
    monkeypatch.syspath_prepend(str(tmp_path))
    return module, model


def test_imports_make_a_users_registered_model_reachable(tmp_path, tiny_study_config, monkeypatch):
    module, model = _user_module(tmp_path, monkeypatch)
    cfg = tiny_study_config(tmp_path)
    cfg.update(model={"name": model, "options": {"width": 3}}, variants=[{"name": "only"}])
    cfg["transfer"]["freeze"] = {"trainable_layers": 1}
    with pytest.raises(ConfigError, match=f"'model.name': got '{model}'"):
        study_from_dict(cfg)
    loaded = study_from_dict({**cfg, "imports": [module]})
    assert loaded.imports == [module] and loaded.model.name == model
    with pytest.raises(ConfigError, match=f"'imports': cannot import module '{module}x'"):
        study_from_dict({**cfg, "imports": [f"{module}x"]})


def test_cli_import_runs_a_study_with_the_users_model(tmp_path, tiny_study_config, monkeypatch,
                                                      capsys):
    module, model = _user_module(tmp_path, monkeypatch)
    cfg = _one_epoch(tiny_study_config(tmp_path))
    cfg["model"] = {"name": model}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    bad = tmp_path / "bad"
    assert main(["run", str(path), "--out", str(bad), "--import", "no_such_module_q7"]) == 2
    assert "cannot import module 'no_such_module_q7'" in capsys.readouterr().err
    assert not bad.exists()
    (tmp_path / "broken_mod_q7.py").write_text("raise RuntimeError('half-written model file')\n")
    assert main(["run", str(path), "--out", str(bad), "--import", "broken_mod_q7"]) == 2
    assert "'broken_mod_q7' (RuntimeError: half-written model file)" in capsys.readouterr().err
    only = ["--set", "variants=[{name: only}]"]
    assert main(["run", str(path), "--out", str(bad), "--import", module, *only]) == 2
    assert "'trainable_layers': got 3 but the model has only 2" in capsys.readouterr().err
    assert not bad.exists()  # freezing too is checked on the model built on the meta device
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--import", module, "--no-report",
                 "--no-progress", *only, "--set", "transfer.freeze.trainable_layers=1"]) == 0
    assert {r["variant"] for r in _rows(out) if r["stage"] == "transfer"} == {"only"}
    assert yaml.safe_load((out / "config.yaml").read_text())["imports"] == [module]
