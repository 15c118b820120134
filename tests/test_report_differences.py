"""Paired differences between strategies (seed 003's FT − FE row), recomputed from the results
with pandas and scipy independently of ``medtransfer.report.summary``: ``differences.csv`` and
the tables of ``summary.md``; which pairs by default; the config errors."""

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
from medtransfer.report.summary import DIFFERENCE_COLUMNS, write_summary
from medtransfer.study import study_from_dict

COLUMNS = ["variant", "source", "target", "strategy", "repeat", "fold", "stage", "test_set", "metric",
           "value"]
MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}
STRATEGIES = {"scratch": {"kind": "scratch"}, "ft": {"kind": "finetune"},
              "svm": {"kind": "features", "classifier": "svm"},
              "frozen": {"kind": "freeze", "freeze": {"trainable_layers": 2}}}


def _cfg(tmp_path: Path, folders: Any, **over: Any) -> Any:
    data = {"path": str(folders(tmp_path / "img", {"a": 4, "b": 4}, seed=1))}
    raw = {"name": "diffs", "preprocess": {"size": 16}, "model": MODEL,
           "sources": {"organ": {"data": data}, "tb": {"data": data}},
           "targets": {"covid": {"data": data}, "breast": {"data": data}},
           "strategies": STRATEGIES, "repeats": 3, **over}
    return study_from_dict(raw)


def _results() -> pd.DataFrame:
    """Three repeats × two test sets of every cell, values drawn so that no two cells agree."""
    rng = np.random.default_rng(0)
    rows = []
    for target in ("covid", "breast"):
        cells = [("none", "scratch")] + [(s, st) for s in ("organ", "tb") for st in ("ft", "svm", "frozen")]
        for source, strategy in cells:
            for repeat in range(3):
                for test_set in ("test_1", "test_2"):
                    for metric in ("auc", "accuracy"):
                        rows.append(["baseline", source, target, strategy, str(repeat), "-", "transfer",
                                     test_set, metric, float(rng.uniform(0.4, 1.0))])
    return pd.DataFrame(rows, columns=COLUMNS)


def _rows(results: pd.DataFrame) -> list[dict[str, str]]:
    buf = io.StringIO()
    results.to_csv(buf, index=False)
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def _expected(results: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    per = results.groupby(["variant", "target", "source", "strategy", "metric", "repeat"],
                          as_index=False)["value"].mean()
    left = per[per["strategy"] == a]
    right = per[per["strategy"] == b].drop(columns="strategy")
    paired = left.merge(right, on=["variant", "target", "source", "metric", "repeat"], suffixes=("", "_b"))
    paired["d"] = paired["value"] - paired["value_b"]
    out = []
    for key, d in paired.groupby(["variant", "target", "source", "metric"])["d"]:
        low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        out.append({**dict(zip(["variant", "target", "source", "metric"], key, strict=True)),
                    "diff": d.mean(), "diff_low": low, "diff_high": high, "n": len(d)})
    return pd.DataFrame(out)


def _md_table(md: str, title: str) -> dict[str, dict[str, str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("# ") == title)
    table = [line for line in lines[start + 1:start + 8] if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table if "---" not in line]
    head, body = cells[0], cells[1:]
    return {row[0]: dict(zip(head, row, strict=True)) for row in body}


def test_finetune_minus_features_by_default_recomputed(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders)
    results = _results()
    write_summary(tmp_path, cfg, _rows(results), {})
    got = pd.read_csv(tmp_path / "differences.csv")
    assert list(got.columns) == list(DIFFERENCE_COLUMNS)
    got = got[got["stage"] == "transfer"]
    assert set(zip(got["strategy"], got["minus"], strict=True)) == {("ft", "svm")}  # the default pair
    want = _expected(results, "ft", "svm")
    both = want.merge(got, on=["variant", "target", "source", "metric"], suffixes=("", "_got"),
                      validate="one_to_one")
    assert len(both) == len(got) == len(want) == 2 * 2 * 2  # targets × sources × metrics
    assert (both["over"] == "repeats").all() and (both["n_got"] == 3).all()
    for c in ("diff", "diff_low", "diff_high"):
        np.testing.assert_allclose(both[f"{c}_got"], both[c], rtol=1e-5, err_msg=c)
    md = (tmp_path / "summary.md").read_text()
    table = _md_table(md, "AUC difference ft − svm (paired by repeat), mean [95% t-interval]")
    for _, r in both[both["metric"] == "auc"].iterrows():
        cell = table[r["target"]][f"{r['source']}: ft − svm"]
        assert cell == f"{r['diff']:+.3f} [{r['diff_low']:.3f}, {r['diff_high']:.3f}]"


def test_named_pairs_replace_the_default_and_scratch_is_the_fallback(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders, report={"differences": [["frozen", "svm"], ["svm", "scratch"]]})
    results = _results()
    write_summary(tmp_path, cfg, _rows(results), {})
    got = pd.read_csv(tmp_path / "differences.csv")
    got = got[(got["stage"] == "transfer") & (got["metric"] == "auc")]
    assert set(zip(got["strategy"], got["minus"], strict=True)) == {("frozen", "svm"), ("svm", "scratch")}
    # svm − scratch pairs each source's svm cell with the target's scratch cell (source none)
    scratch = results[results["strategy"] == "scratch"].assign(source="tb")
    want = _expected(pd.concat([results[results["source"] == "tb"], scratch]), "svm", "scratch")
    want = want[want["metric"] == "auc"]
    mine = got[(got["strategy"] == "svm") & (got["source"] == "tb")]
    both = want.merge(mine, on=["variant", "target", "source"], suffixes=("", "_got"))
    assert len(both) == 2
    np.testing.assert_allclose(both["diff_got"], both["diff"], rtol=1e-5)


def test_no_default_pair_without_exactly_one_finetune_and_one_features(tmp_path, class_folders):
    cfg = _cfg(tmp_path, class_folders, strategies={**STRATEGIES, "logreg": {"kind": "features"}})
    write_summary(tmp_path, cfg, _rows(_results()), {})
    assert not (tmp_path / "differences.csv").exists()
    assert " − " not in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"differences": [["ft", "svn"]]},
         "'report.differences[0]': got strategy 'svn'; did you mean 'svm'? "
         "Allowed: scratch, ft, svm, frozen"),
        ({"differences": [["ft", "ft"]]}, "name two different strategies"),
        ({"differences": [["ft", "svm", "frozen"]]}, "expected 2 values, got 3"),
        ({"diferences": []}, "did you mean 'differences'?"),
    ],
)
def test_difference_errors_name_the_key(tmp_path, class_folders, report, message):
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, class_folders, report=report)
    assert message in str(info.value)
