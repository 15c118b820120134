"""The headline tables recomputed from ``results.csv`` with pandas and scipy, independently of
``medtransfer.report.summary``: every arm's mean, sd and maximum deviation over its replicates
in ``summary.csv`` and ``summary.md``, and the paired difference from scratch with its 95%
t-interval. A real tiny matrix study (replicates = repeats) and written results of the other
shapes (replicates = test sets, folds) so that each rule of what a replicate is gets checked."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.api import run_study
from medtransfer.report.summary import SUMMARY_COLUMNS, write_summary
from medtransfer.study import study_from_dict

ARM = ["variant", "target", "source", "strategy"]
RESULT_COLUMNS = ["variant", "source", "target", "strategy", "repeat", "fold", "stage", "test_set",
                  "metric", "value"]


def _expected(results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Transfer-stage statistics per arm and metric, and what the replicates were."""
    t = results[results["stage"] == "transfer"].copy()
    if t["repeat"].nunique() > 1:
        over, rep = "repeats", "repeat"
    elif t["fold"].fillna("").ne("").any():  # an empty cell (NaN): no fold
        over, rep = "folds", "fold"
    else:
        over, rep = "test sets", "test_set"
    # A repeat's value is its mean over test sets / folds.
    per = t.groupby([*ARM, "metric", rep], as_index=False)["value"].mean()
    g = per.groupby([*ARM, "metric"])["value"]
    out = pd.DataFrame({
        "mean": g.mean(),
        "sd": g.std(ddof=1),
        "max_dev": g.apply(lambda v: (v - v.mean()).abs().max()),
        "n": g.size(),
    }).reset_index()
    scratch = per[per["source"] == "none"].drop(columns=["source", "strategy"])
    paired = per[per["source"] != "none"].merge(scratch, on=["variant", "target", "metric", rep],
                                                suffixes=("", "_scratch"))
    paired["d"] = paired["value"] - paired["value_scratch"]
    diffs = []
    for key, d in paired.groupby([*ARM, "metric"])["d"]:
        sem = stats.sem(d)
        low, high = (stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sem) if sem > 0
                     else (d.mean(), d.mean()))
        diffs.append({**dict(zip([*ARM, "metric"], key, strict=True)), "diff": d.mean(), "diff_low": low,
                      "diff_high": high, "diff_n": len(d)})
    columns = [*ARM, "metric", "diff", "diff_low", "diff_high", "diff_n"]
    return out.merge(pd.DataFrame(diffs, columns=columns), on=[*ARM, "metric"], how="left"), over


def _check_summary_csv(out: Path, results: pd.DataFrame, *, with_diff: bool) -> pd.DataFrame:
    want, over = _expected(results)
    got = pd.read_csv(out / "summary.csv", dtype={c: str for c in ARM})
    assert list(got.columns) == list(SUMMARY_COLUMNS)
    got = got[got["stage"] == "transfer"]
    both = want.merge(got, on=[*ARM, "metric"], suffixes=("", "_got"), validate="one_to_one")
    assert len(both) == len(got) == len(want[want["metric"].isin(["auc", "accuracy"])])
    assert (both["over"] == over).all() and (both["n"] == both["n_got"]).all()
    assert (both["n"] >= 3).all()  # mean, median and midrange differ in general only from 3 on
    cols = ["mean", "sd", "max_dev", *(["diff", "diff_low", "diff_high"] if with_diff else [])]
    for c in cols:
        np.testing.assert_allclose(both[f"{c}_got"], both[c], rtol=1e-5, atol=1e-12, err_msg=c)
    if with_diff:
        has = both["source"] != "none"
        assert has.any() and (both.loc[has, "diff_n"] == both.loc[has, "diff_n_got"]).all()
        assert both.loc[~has, "diff_got"].isna().all()
    return both


def _md_cells(md: str, title_start: str) -> list[list[str]]:
    """Rows of the first markdown table after a heading starting with ``title_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("# ").startswith(title_start))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows if not set("".join(r)) <= set("-: ")]


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _tiny_matrix(base: dict[str, Any]) -> dict[str, Any]:
    train = {**base["transfer"]["train"], "epochs": 1}
    return {
        "name": "tiny_matrix", "seed": 3, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "model": base["model"],
        "pretrain": {"train": train}, "sources": {"src": base["source"]},
        "targets": {"tgt": base["target"]},
        "strategies": {"scratch": {"kind": "scratch", "train": train},
                       "freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": train}},
        "repeats": 3,
    }


def test_matrix_summary_and_difference_from_scratch_recomputed(tmp_path, tiny_study_config):
    out = tmp_path / "run"
    run_study(study_from_dict(_tiny_matrix(tiny_study_config(tmp_path))), out, echo=lambda m: None,
              report=False, progress=False)
    results = pd.read_csv(out / "results.csv", dtype={c: str for c in RESULT_COLUMNS if c != "value"})
    both = _check_summary_csv(out, results, with_diff=True)
    md = (out / "summary.md").read_text()
    for metric in ("auc", "accuracy"):
        rows = _md_cells(md, f"{metric.upper()} mean ± max deviation over repeats")
        head, body = rows[0], {r[0]: r for r in rows[1:]}
        diff_rows = _md_cells(md, f"{metric.upper()} difference from scratch (paired by repeat)")
        diff_head, diff_body = diff_rows[0], {r[0]: r for r in diff_rows[1:]}
        for _, s in both[both["metric"] == metric].iterrows():
            col = f"{'no transfer' if s['source'] == 'none' else s['source']}: {s['strategy']}"
            assert body[s["target"]][head.index(col)] == f"{_fmt(s['mean'])} ± {_fmt(s['max_dev'])}"
            if s["source"] != "none":
                cell = diff_body[s["target"]][diff_head.index(col)]
                assert cell == f"{s['diff']:+.3f} [{_fmt(s['diff_low'])}, {_fmt(s['diff_high'])}]"


def _written_results(shape: str) -> pd.DataFrame:
    """Results of a one-source study: 3 test sets (seed 000) or 3 folds, skewed values so that
    mean, median and midrange all differ."""
    rng = np.random.default_rng(0)
    rows = []
    for variant in ("baseline", "bn"):
        for k in range(1, 4):
            for metric in ("auc", "accuracy", "recall", "specificity", "f1"):
                value = float(rng.uniform(0.5, 1.0)) if k < 3 else 0.3
                test_set, fold = (f"test_{k}", "") if shape == "test sets" else (f"fold_{k}", str(k))
                rows.append([variant, "source", "target", "freeze", "0", fold, "transfer", test_set, metric,
                             value])
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


@pytest.mark.parametrize("shape", ["test sets", "folds"])
def test_one_source_summary_recomputed(shape, tmp_path, tiny_study_config):
    raw = tiny_study_config(tmp_path)
    if shape == "folds":
        raw["target"] = {**raw["target"], "split": {"folds": 3, "val_fraction": 0.2}}
    cfg = study_from_dict(raw)
    results = _written_results(shape)
    buf = io.StringIO()
    results.to_csv(buf, index=False)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    write_summary(tmp_path, cfg, rows, {})
    both = _check_summary_csv(tmp_path, results, with_diff=False)
    auc = results[results["metric"] == "auc"].groupby("variant")["value"]
    assert not np.isclose(auc.mean(), auc.median()).any()  # a median in place of the mean fails
    md = (tmp_path / "summary.md").read_text()
    for metric in ("accuracy", "auc"):
        rows_md = _md_cells(md, f"Transfer to target: {metric} per test set")
        body = {r[0]: r for r in rows_md[1:]}
        for _, s in both[both["metric"] == metric].iterrows():
            assert body[s["variant"]][-1] == f"{_fmt(s['mean'])} ± {_fmt(s['sd'])}"
            assert re.fullmatch(r"[-\d.]+ ± [-\d.]+", body[s["variant"]][-1])
