"""A search's figures (seed 001's bar and box plots of the score per hyperparameter value): the
bars are the means per value, the boxes their trials, a sampled range is a scatter; failed trials
are left out; report.html shows the figures of the search beside the run."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medtransfer.document import Doc
from medtransfer.errors import DataError
from medtransfer.plots import FigureDir, search_figures, search_param_figure, search_plot
from medtransfer.report.sections import search_section

LRS = [1e-4, 1e-3, 1e-2]


def _trials(n: int = 18, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"trial": f"trial-{k:03d}", "params": {"lr": LRS[k % 3], "optimizer": ["adam", "sgd"][k % 2]},
             "value": float(rng.uniform(0.5, 1.0))} for k in range(n)]


def test_bars_are_the_mean_per_value_and_boxes_hold_its_trials():
    trials = _trials()
    fig = search_param_figure("lr", [t["params"]["lr"] for t in trials], [t["value"] for t in trials], "auc")
    bar, box = fig.axes
    frame = pd.DataFrame({"lr": [t["params"]["lr"] for t in trials], "v": [t["value"] for t in trials]})
    want = frame.groupby("lr")["v"].agg(["mean", "std"]).sort_index()  # numeric order: 1e-4, 1e-3, 1e-2
    np.testing.assert_allclose([p.get_height() for p in bar.patches], want["mean"], rtol=1e-12)
    assert [t.get_text() for t in bar.get_xticklabels()] == ["0.0001", "0.001", "0.01"]
    # each value's median is a horizontal line of its box (caps are horizontal too)
    got = sorted(float(np.median(line.get_ydata())) for line in box.lines
                 if len(line.get_ydata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1])
    for m in frame.groupby("lr")["v"].median():
        assert any(np.isclose(m, g) for g in got)


def test_a_sampled_range_is_a_scatter_and_failed_trials_are_left_out(tmp_path):
    rng = np.random.default_rng(1)
    values = list(10 ** rng.uniform(-4, -2, 20))
    fig = search_param_figure("lr", values, list(rng.uniform(size=20)), "auc", log=True)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and len(ax.collections[0].get_offsets()) == 20
    trials = [*_trials(6), {"trial": "trial-099", "params": {"lr": 5.0, "optimizer": "adam"}, "value": None}]
    plots = search_figures(FigureDir(tmp_path, ("png",)), trials, ["lr", "optimizer"], "auc")
    assert [p.png for p in plots] == [search_plot(tmp_path, "lr"), search_plot(tmp_path, "optimizer")]
    bar = search_param_figure("lr", [t["params"]["lr"] for t in trials[:6]], [t["value"] for t in trials[:6]],
                              "auc").axes[0]
    assert len(bar.patches) == 3  # the failed trial's value 5.0 is no bar
    with pytest.raises(DataError, match="no finite auc"):
        search_param_figure("lr", [1e-3], [float("nan")], "auc")


def test_the_report_shows_the_search_beside_the_run(tmp_path):
    keys = ["transfer.train.optimizer.lr", "transfer.train.batch_size"]
    trials = [{"trial": f"t{k}", "params": {keys[0]: LRS[k % 3], keys[1]: 16 * (1 + k % 2)},
               "value": 0.5 + k / 20} for k in range(6)]
    search_figures(FigureDir(tmp_path / "plots", ("png",)), trials, keys, "auc")
    with (tmp_path / "trials.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "trial", *keys, "val_auc", "best_epoch", "state"])
        w.writerows([[k + 1, t["trial"], *t["params"].values(), t["value"], 1, "complete"]
                     for k, t in enumerate(trials)])
    doc = Doc(markdown=True, base=tmp_path)
    search_section(doc, SimpleNamespace(path=tmp_path))  # type: ignore[arg-type]
    text = doc.render()
    assert "## Hyperparameter search" in text and "6 trials" in text
    for key in keys:
        assert f"Validation auc per value of {key}" in text
        assert f"plots/search_{key.replace('.', '_')}.png" in text
    empty = Doc(markdown=True, base=tmp_path / "none")
    search_section(empty, SimpleNamespace(path=tmp_path / "none"))  # type: ignore[arg-type]
    assert "search" not in empty.render()
