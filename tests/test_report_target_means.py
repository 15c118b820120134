"""Means over targets per source × strategy (seed 003's Figure 3 and "Mean ISIC" row), recomputed
from written results with pandas and scipy independently of ``medtransfer.report.target_means``:
``target_means.csv``, the tables of ``summary.md``, the figure's bars; arms missing targets,
replicates that differ between targets; the ``report.target_groups`` config errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.errors import ConfigError
from medtransfer.report.figures import target_means_figure
from medtransfer.report.summary import write_summary
from medtransfer.report.target_means import TARGET_MEAN_COLUMNS, target_means
from medtransfer.study import study_from_dict

COLUMNS = ["variant", "source", "target", "strategy", "repeat", "fold", "stage", "test_set", "metric",
           "value"]
MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}
STRATEGIES = {"scratch": {"kind": "scratch"}, "ft": {"kind": "finetune"},
              "svm": {"kind": "features", "classifier": "svm"}}
TARGETS = ("covid", "pneumo", "breast")
GROUPS = {"cxr": ["pneumo", "covid"]}


def _cfg(tmp_path: Path, folders: Any, **over: Any) -> Any:
    data = {"path": str(folders(tmp_path / "img", {"a": 4, "b": 4}, seed=1))}
    raw = {"name": "means", "preprocess": {"size": 16}, "model": MODEL,
           "sources": {"organ": {"data": data}, "tb": {"data": data}},
           "targets": {t: {"data": data} for t in TARGETS}, "strategies": STRATEGIES, "repeats": 3,
           "report": {"target_groups": GROUPS}, **over}
    return study_from_dict(raw)


def _results(repeats: int = 3, tests: dict[str, int] | None = None) -> pd.DataFrame:
    """Every cell's AUC and accuracy per repeat and test set, drawn so that no two agree."""
    rng = np.random.default_rng(0)
    rows = []
    for target in TARGETS:
        cells = [("none", "scratch")] + [(s, st) for s in ("organ", "tb") for st in ("ft", "svm")]
        for source, strategy in cells:
            for repeat in range(repeats):
                for k in range((tests or {}).get(target, 2)):
                    for metric in ("auc", "accuracy"):
                        rows.append(["baseline", source, target, strategy, str(repeat), "-", "transfer",
                                     f"test_{k + 1}", metric, float(rng.uniform(0.4, 1.0))])
    return pd.DataFrame(rows, columns=COLUMNS)


def _rows(results: pd.DataFrame) -> list[dict[str, str]]:
    buf = io.StringIO()
    results.to_csv(buf, index=False)
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def _expected(results: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Per arm and metric: the mean of the targets' means over repeats, and the t-interval over the
    repeats' means across the targets."""
    per = results[results["target"].isin(targets)].groupby(
        ["source", "strategy", "metric", "target", "repeat"], as_index=False)["value"].mean()
    out = []
    for (source, strategy, metric), g in per.groupby(["source", "strategy", "metric"]):
        mean = g.groupby("target")["value"].mean().mean()
        reps = g.groupby("repeat")["value"].mean()  # each repeat's mean over the targets
        low, high = stats.t.interval(0.95, len(reps) - 1, loc=reps.mean(), scale=stats.sem(reps))
        out.append({"source": source, "strategy": strategy, "metric": metric, "mean": mean, "low": low,
                    "high": high, "sd": reps.std(ddof=1), "n": len(reps)})
    return pd.DataFrame(out)


def _written(out: Path, cfg: Any, results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``target_means.csv``'s test-set rows and ``summary.md``, as ``write_summary`` writes them."""
    write_summary(out, cfg, _rows(results), {})
    got = pd.read_csv(out / "target_means.csv")
    assert list(got.columns) == list(TARGET_MEAN_COLUMNS)
    return got[got["stage"] == "transfer"], (out / "summary.md").read_text()


def test_means_over_all_targets_and_a_group_recomputed(tmp_path, class_folders):
    results = _results()
    got, md = _written(tmp_path, _cfg(tmp_path, class_folders), results)
    assert set(got["group"]) == {"all", "cxr"} and len(got) == 5 * 2 * 2  # arms × groups × metrics
    lines = md[md.index("### AUC mean over targets, per source × strategy"):].splitlines()
    table = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in lines[6:11]}
    for group, targets in (("all", list(TARGETS)), ("cxr", GROUPS["cxr"])):
        want = _expected(results, targets)
        mine = got[got["group"] == group]
        both = want.merge(mine, on=["source", "strategy", "metric"], suffixes=("", "_got"),
                          validate="one_to_one")
        assert len(both) == len(want) == 10
        assert (both["targets"] == ";".join(targets)).all() and (both["n_targets"] == len(targets)).all()
        assert (both["over"] == "repeats").all() and (both["n_got"] == 3).all()
        for c in ("mean", "low", "high", "sd"):
            np.testing.assert_allclose(both[f"{c}_got"], both[c], rtol=1e-5, err_msg=f"{group} {c}")
        for _, r in both[both["metric"] == "auc"].iterrows():
            source = "no transfer" if r["source"] == "none" else r["source"]
            assert f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" in table[(source, r["strategy"])]
    assert "| all 3 targets | cxr (pneumo, covid) |" in md
    assert "paired" in lines[2] and "t-interval" in lines[2]  # the caption states the method


def test_an_arm_missing_a_target_is_averaged_over_the_rest_and_says_so(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders)
    results = _results()
    gone = (results["source"] == "tb") & (results["strategy"] == "svm") & (results["target"] == "covid")
    means = {(m.group, m.metric): m for m in target_means(cfg, _rows(results[~gone]))
             if (m.source, m.strategy) == ("tb", "svm")}
    m = means[("all", "auc")]
    assert m.targets == ("pneumo", "breast") and m.n_targets == 3 and not m.complete
    want = _expected(results[~gone & (results["source"] == "tb") & (results["strategy"] == "svm")],
                     ["pneumo", "breast"])
    np.testing.assert_allclose(m.mean, want.loc[want["metric"] == "auc", "mean"].item(), rtol=1e-6)
    assert means[("cxr", "auc")].targets == ("pneumo",)
    got, md = _written(tmp_path, cfg, results[~gone])
    assert "(2 of 3 targets)" in md
    assert got.loc[(got["source"] == "tb") & (got["strategy"] == "svm"), "targets"].tolist() == [
        "pneumo;breast", "pneumo", "pneumo;breast", "pneumo"]  # all, cxr for AUC and accuracy


def test_no_interval_where_replicates_differ_between_targets(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders, repeats=1)
    results = _results(repeats=1, tests={"covid": 3, "pneumo": 3, "breast": 2})
    means = {m.group: m for m in target_means(cfg, _rows(results))
             if (m.source, m.strategy) == ("organ", "ft")}
    assert means["all"].over == "test sets" and means["all"].n == 0 and np.isnan(means["all"].low)
    arm = (results["source"] == "organ") & (results["strategy"] == "ft") & (results["metric"] == "auc")
    want = results[arm].groupby("target")["value"].mean().mean()
    np.testing.assert_allclose(means["all"].mean, want, rtol=1e-6)
    # covid and pneumo share their three test sets: paired by name, with an interval
    assert means["cxr"].n == 3 and means["cxr"].low < means["cxr"].mean < means["cxr"].high


def test_figure_bars_are_the_means_with_their_intervals(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders)
    means = [m for m in target_means(cfg, _rows(_results())) if m.group == "all"]
    fig = target_means_figure(means, list(cfg.strategies))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["no transfer", "organ", "tb"]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert [b.patches[0].get_height() for b in bars] == pytest.approx([m.mean for m in means])
    for b, m in zip(bars, means, strict=True):
        (segments,) = b.errorbar.lines[2]
        (low, high) = segments.get_segments()[0][:, 1]
        assert (low, high) == pytest.approx((m.low, m.high))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["scratch", "ft", "svm"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"cxr": ["pneumo", "covd"]},
         "'report.target_groups.cxr': got 'covd'; did you mean 'covid'? Allowed: covid, pneumo, breast"),
        ({"cxr": []}, "'report.target_groups.cxr': the group is empty"),
        ({"cxr": ["covid", "covid"]}, "names covid more than once"),
        ({"all": ["covid"]}, "'all' names the group of every target"),
        ({"cxr": "covid"}, "'report.target_groups.cxr': expected a list"),
    ],
)
def test_target_group_errors_name_the_key(tmp_path, class_folders, groups, message):
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, class_folders, report={"target_groups": groups})
    assert message in str(info.value)


def test_target_groups_need_a_matrix(tmp_path, class_folders):
    data = {"path": str(class_folders(tmp_path / "img", {"a": 4, "b": 4}, seed=1))}
    with pytest.raises(ConfigError, match="'report.target_groups': groups of targets need a matrix"):
        study_from_dict({"name": "single", "model": MODEL, "source": {"data": data}, "target": {"data": data},
                         "report": {"target_groups": {"g": ["target"]}}})
