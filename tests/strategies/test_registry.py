"""One registry carries each strategy kind's config class and runner: a plug-in kind registered
from a study's ``imports`` module is configured in YAML (strictly) and run like a built-in one."""

from __future__ import annotations

import csv
import sys
import textwrap

import pytest

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.strategies import STRATEGIES, STRATEGY_RUNNERS, FeaturesStrategy, register_strategy
from medtransfer.study import study_from_dict

PLUGIN = '''
from dataclasses import dataclass
from typing import Literal

from medtransfer.strategies import FeaturesStrategy, register_strategy, strategy_for


@dataclass(frozen=True)
class ShrunkProbe:
    """Logistic regression on the frozen backbone's features, with its own name for C."""

    kind: Literal["shrunk_probe"] = "shrunk_probe"
    shrinkage: float = 1.0  # the inverse of logistic regression's C


@register_strategy("shrunk_probe", config=ShrunkProbe)
class ShrunkProbeRunner:
    def __init__(self, cfg: ShrunkProbe) -> None:
        self.inner = strategy_for(FeaturesStrategy(classifier="logreg", C=1.0 / cfg.shrinkage))

    def run(self, model, data, env):
        return self.inner.run(model, data, env)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_probe.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    yield "my_probe"
    for kind in ("shrunk_probe",):
        STRATEGIES.pop(kind, None)
        STRATEGY_RUNNERS.pop(kind, None)
    sys.modules.pop("my_probe", None)


def _matrix(tmp_path, tiny_study_config, strategy: dict) -> dict:
    tiny = tiny_study_config(tmp_path)
    return {"name": "plugin", "seed": 3, "cache_dir": tiny["cache_dir"], "audit": False,
            "preprocess": tiny["preprocess"], "model": tiny["model"], "imports": ["my_probe"],
            "sources": {"src": {"data": tiny["source"]["data"], "split": tiny["source"]["split"]}},
            "targets": {"tgt": tiny["target"]}, "pretrain": tiny["pretrain"],
            "strategies": {"probe": strategy}}


def test_a_plugin_strategy_from_imports_is_configured_in_yaml_and_runs(tmp_path, tiny_study_config,
                                                                       plugin, one_thread):
    raw = _matrix(tmp_path, tiny_study_config, {"kind": "shrunk_probe", "shrinkage": 2.0})
    cfg = study_from_dict(raw)
    assert STRATEGIES["shrunk_probe"].__name__ == "ShrunkProbe"
    out = run_study(cfg, tmp_path / "run", progress=False, echo=lambda m: None, report=False)
    with (out / "results.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["stage"] == "transfer" and r["metric"] == "auc"]
    assert {(r["strategy"], r["source"]) for r in rows} == {("probe", "src")}
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)


def test_a_plugin_kinds_keys_are_strict(tmp_path, tiny_study_config, plugin):
    raw = _matrix(tmp_path, tiny_study_config, {"kind": "shrunk_probe", "shrinkag": 2.0})
    with pytest.raises(ConfigError, match=r"unknown key 'shrinkag' in 'strategies.probe'; did you mean "
                                          r"'shrinkage'"):
        study_from_dict(raw)


def test_registering_needs_a_config_whose_kind_matches():
    with pytest.raises(ValueError, match=r"'kind' field defaults to 'other'"):
        register_strategy("other", config=FeaturesStrategy)
