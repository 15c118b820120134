"""variants[].only: a matrix variant that runs some of the strategies (seed 002's mixed models)."""

import pytest

from medtransfer.errors import ConfigError
from medtransfer.study import study_from_dict
from medtransfer.study.plan import make_plan


def _cfg(variants, **extra):
    return study_from_dict({
        "name": "only", "model": {"name": "alexnet_small", "options": {"base": 4}},
        "sources": {"src": {"data": {"path": "demo:demo_source"}}},
        "targets": {"tgt": {"data": {"path": "demo:demo_target"}}},
        "strategies": {"scratch": {"kind": "scratch"}, "ft": {"kind": "finetune"},
                       "svm": {"kind": "features", "classifier": "svm"}},
        "variants": variants, **extra})


def test_a_variant_runs_only_its_strategies_and_pretrains_only_what_they_use():
    plan = make_plan(_cfg([{"name": "small", "only": ["scratch"]},
                           {"name": "big", "only": ["ft", "svm"]}]))
    cells = {(c.variant, c.strategy, c.source) for c in plan.cells}
    assert cells == {("small", "scratch", "none"), ("big", "ft", "src"), ("big", "svm", "src")}
    assert [(p.variant, p.source) for p in plan.pretrains] == [("big", "src")]


def test_only_is_checked_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"'scrach' in 'variants\[0\] \(a\)\.only'; did you mean 'scratch'"):
        _cfg([{"name": "a", "only": ["scrach"]}])
    with pytest.raises(ConfigError, match=r"'variants\[0\] \(a\)\.only': got an empty list"):
        _cfg([{"name": "a", "only": []}])
    with pytest.raises(ConfigError, match=r"'variants\[0\] \(a\)\.strategies\.ft': overrides a strategy"):
        _cfg([{"name": "a", "only": ["scratch"], "strategies": {"ft": {"head_C": 2.0}}}])


def test_only_needs_a_matrix():
    with pytest.raises(ConfigError, match=r"only': names a matrix study's strategies"):
        study_from_dict({"name": "single", "source": {"data": {"path": "demo:demo_source"}},
                         "target": {"data": {"path": "demo:demo_target"}},
                         "variants": [{"name": "a", "only": ["freeze"]}]})
