"""Figures are written as valid PNG and SVG files; the ROC band is a sensible envelope."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_curve

from medtransfer.document import Doc
from medtransfer.errors import ConfigError, DataError
from medtransfer.plots import (
    FigureDir,
    ForestRow,
    confusion_figure,
    forest_figure,
    learning_curves_figure,
    read_history,
    reliability_figure,
    roc_band,
    roc_figure,
    save_figure,
)
from medtransfer.study.report_config import ReportConfig


def _check_files(paths: list[Path]) -> None:
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        arr = np.asarray(im.convert("L"))
        assert im.width > 100 and im.height > 100 and arr.std() > 5  # not blank
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")


def _scores(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)


def test_learning_curves_from_history_csv(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,lr,loss,accuracy,val_loss,val_accuracy\n"
                    "1,0.01,0.7,0.5,0.69,0.55\n2,0.01,0.5,0.7,0.6,0.65\n3,0.01,0.4,0.8,0.62,0.6\n")
    hist = read_history(path)
    assert hist[1]["val_loss"] == 0.6
    _check_files(save_figure(learning_curves_figure(hist, "baseline: transfer", best_epoch=2),
                             tmp_path / "plots" / "learning"))


def test_learning_curves_without_validation_columns(tmp_path):
    hist = [{"epoch": 1.0, "loss": 0.7, "accuracy": 0.5}, {"epoch": 2.0, "loss": 0.6, "accuracy": 0.6}]
    _check_files(save_figure(learning_curves_figure(hist, "no val"), tmp_path / "lc"))


def test_read_history_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.csv"):
        read_history(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="bad.csv.*'epoch'"):
        read_history(bad)


def test_roc_band_brackets_the_empirical_curve_and_is_seeded():
    y, s = _scores(200)
    grid, low, high = roc_band(y, s, rng=np.random.default_rng(0), n_boot=300)
    assert grid[0] == 0 and grid[-1] == 1
    assert np.all(low <= high) and low.min() >= 0 and high.max() <= 1
    fpr, tpr, _ = roc_curve(y, s)
    mid = np.interp(grid, fpr, tpr)
    inside = (low - 1e-9 <= mid) & (mid <= high + 1e-9)
    assert inside.mean() > 0.9
    again = roc_band(y, s, rng=np.random.default_rng(0), n_boot=300)
    assert np.array_equal(again[1], low) and np.array_equal(again[2], high)


def test_roc_figure_and_single_class_error(tmp_path):
    curves = {"baseline": _scores(60, 1), "bn": _scores(60, 2)}
    _check_files(save_figure(roc_figure(curves, rng=np.random.default_rng(0), n_boot=50), tmp_path / "roc"))
    with pytest.raises(DataError, match="'x' has a single class"):
        roc_figure({"x": (np.zeros(5, int), np.linspace(0, 1, 5))}, rng=np.random.default_rng(0))


def test_confusion_forest_and_reliability_figures(tmp_path):
    _check_files(save_figure(confusion_figure([[5, 1], [2, 7]], ["normal", "covid"], "cm"), tmp_path / "cm"))
    with pytest.raises(DataError, match="3 classes"):
        confusion_figure([[1, 2], [3, 4]], ["a", "b", "c"], "bad")
    rows = [ForestRow("bn · pooled", 0.05, 0.02, 0.08, True, "Holm p=0.004"),
            ForestRow("dropout · pooled", -0.01, -0.04, 0.02, False)]
    _check_files(save_figure(forest_figure(rows, "AUC difference", "forest"), tmp_path / "forest"))
    with pytest.raises(DataError, match="no rows"):
        forest_figure([], "x", "y")
    y, s = _scores(100, 3)
    proba = np.stack([1 - s, s], 1)
    _check_files(save_figure(reliability_figure({"m": (y, proba)}), tmp_path / "rel"))


def test_svg_output_is_reproducible(tmp_path):
    a = save_figure(confusion_figure([[3, 1], [0, 4]], ["a", "b"], "t"), tmp_path / "a")[1]
    b = save_figure(confusion_figure([[3, 1], [0, 4]], ["a", "b"], "t"), tmp_path / "b")[1]
    assert a.read_bytes() == b.read_bytes()


def test_figure_formats_are_the_files_written_and_linked_and_stale_twins_go(tmp_path):
    fig = lambda: confusion_figure([[3, 1], [0, 4]], ["a", "b"], "t")  # noqa: E731
    png = FigureDir(tmp_path, ("png", "svg")).save(fig(), "cm")
    assert {p.name for p in tmp_path.iterdir()} == {"cm.png", "cm.svg"}
    assert FigureDir(tmp_path, ("png", "pdf")).save(fig(), "cm") == png  # a report rewritten
    assert {p.name for p in tmp_path.iterdir()} == {"cm.png", "cm.pdf"}  # the old SVG is gone
    assert (tmp_path / "cm.pdf").read_bytes().startswith(b"%PDF")
    doc = Doc(markdown=True, base=tmp_path)
    doc.images([("Confusion", png)])
    assert doc.render().strip() == "![Confusion](cm.png) ([PDF](cm.pdf))"
    FigureDir(tmp_path, ("png",)).save(fig(), "cm")
    doc = Doc(markdown=True, base=tmp_path)
    doc.images([("Confusion", png)])
    assert doc.render().strip() == "![Confusion](cm.png)"
    assert {p.name for p in tmp_path.iterdir()} == {"cm.png"}


@pytest.mark.parametrize(("formats", "match"), [
    (["svg"], "expected png"), (["png", "png"], "each once"), (["png", "eps"], r"figure_formats\[1\]"),
])
def test_figure_formats_need_png_once_and_known_formats(formats, match):
    assert ReportConfig(figure_formats=["png", "svg", "pdf"]).figure_formats == ["png", "svg", "pdf"]
    with pytest.raises(ConfigError, match=match):
        ReportConfig(figure_formats=formats)
