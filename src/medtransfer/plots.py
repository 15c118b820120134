"""Figures of a study, drawn with matplotlib's Agg canvas (no pyplot, no global state) and saved
as PNG and SVG: learning curves, ROC curves with bootstrap bands, confusion matrices, a forest
plot of arm-vs-reference differences, reliability diagrams, grids of image tiles (filters,
feature maps, activation maximisation) and a search's score per hyperparameter value."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

from medtransfer.csvfile import read_csv
from medtransfer.document import VECTOR_FORMATS
from medtransfer.errors import DataError
from medtransfer.evaluate import confidence_bins
from medtransfer.fileio import write_bytes_atomic
from medtransfer.stats.bootstrap import bootstrap_weights

__all__ = [
    "FigureDir",
    "ForestRow",
    "Plot",
    "confusion_figure",
    "forest_figure",
    "learning_curves_figure",
    "read_history",
    "reliability_figure",
    "roc_band",
    "roc_figure",
    "save_figure",
    "search_figures",
    "search_param_figure",
    "search_plot",
    "tiles_figure",
]


@dataclass(frozen=True)
class ForestRow:
    """One line of a forest plot: an estimate with its CI, and whether it is significant."""

    label: str
    estimate: float
    low: float
    high: float
    significant: bool = False
    note: str = ""


@dataclass(frozen=True)
class FigureDir:
    """A folder of figures and the formats each is saved in (``report.figure_formats``)."""

    path: Path
    formats: tuple[str, ...] = ("png", "svg")

    def save(self, fig: Figure, name: str) -> Path:
        """Save ``fig`` as ``name`` in every format, removing its files in the other formats (of
        an earlier report), so the folder holds what the report links; returns the PNG."""
        for fmt in set(VECTOR_FORMATS) - set(self.formats):
            (self.path / f"{name}.{fmt}").unlink(missing_ok=True)
        return save_figure(fig, self.path / name, self.formats)[0]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(
    fig: Figure, stem: Path, formats: Sequence[str] = ("png", "svg"), dpi: int = 110
) -> list[Path]:
    """Save ``fig`` as ``stem.png``, ``stem.svg``, ... (reproducible SVG ids, no timestamps),
    each atomically: a full disk is a DiskFullError naming the file and leaves the old one."""
    paths = []
    with mpl.rc_context({"svg.hashsalt": "medtransfer", "svg.fonttype": "path", "pdf.fonttype": 42}):
        for fmt in formats:
            # Appended, not with_suffix: a matrix arm's name ("src.ft") holds a dot.
            path = stem.parent / f"{stem.name}.{fmt}"
            meta = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else \
                {"CreationDate": None, "Producer": None}
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
            write_bytes_atomic(path, buf.getvalue())
            paths.append(path)
    return paths


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of a unit's ``history.csv`` as floats (empty cells become NaN)."""
    try:
        rows: list[dict[str, Any]] = list(read_csv(path))
    except OSError as exc:
        raise DataError(f"cannot read training history {path}: {exc.strerror or exc}") from exc
    if not rows or "epoch" not in rows[0]:
        raise DataError(f"{path}: expected a CSV with an 'epoch' column and one row per epoch")
    names = [r.pop("stage") for r in rows] if "stage" in rows[0] else []
    try:
        out = [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in rows]
    except ValueError as exc:
        raise DataError(f"{path}: a non-numeric cell ({exc})") from exc
    order = list(dict.fromkeys(names))
    for i, (r, name) in enumerate(zip(out, names, strict=False)):
        # A two-stage strategy: one epoch axis across the stages, each row knowing its stage.
        r["stage_epoch"], r["epoch"], r["stage_index"] = r["epoch"], float(i + 1), float(order.index(name))
    return out


def learning_curves_figure(
    history: Sequence[Mapping[str, float]], title: str, best_epoch: int | None = None
) -> Figure:
    """Loss and accuracy per epoch, training and validation (as seeds 000/002 plot them)."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(7.0, 2.6)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style, label in ((metric, "-o", "train"), (f"val_{metric}", "--s", "validation")):
            values = [r.get(key, math.nan) for r in history]
            if any(math.isfinite(v) for v in values):
                ax.plot(epochs, values, style, markersize=3, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label="best epoch")
        for r, prev in zip(history[1:], history, strict=False):
            if r.get("stage_index", 0) != prev.get("stage_index", 0):
                ax.axvline(r["epoch"] - 0.5, color="black", linewidth=0.8, label="next stage")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def roc_band(
    y: np.ndarray, score: np.ndarray, *, rng: np.random.Generator, n_boot: int = 500,
    level: float = 0.95, grid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of TPR over an FPR grid (stratified replicates, vertical
    averaging): returns (fpr grid, lower TPR, upper TPR)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    grid = np.linspace(0, 1, 101) if grid is None else grid
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    ends = np.append(np.flatnonzero(np.diff(s_desc) != 0), len(s) - 1)
    pos = y[order].astype(np.float64)
    curves = []
    for w in bootstrap_weights(y.astype(np.int64), n_boot, rng):
        ws = w[:, order]
        tp = np.cumsum(ws * pos, axis=1)[:, ends]
        fp = np.cumsum(ws * (1 - pos), axis=1)[:, ends]
        tpr = np.hstack([np.zeros((len(w), 1)), tp / tp[:, -1:]])
        fpr = np.hstack([np.zeros((len(w), 1)), fp / fp[:, -1:]])
        curves += [np.interp(grid, f, t) for f, t in zip(fpr, tpr, strict=True)]
    alpha = (1 - level) / 2
    low, high = np.quantile(np.array(curves), [alpha, 1 - alpha], axis=0)
    return grid, low, high


def roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, rng: np.random.Generator,
    n_boot: int = 500, level: float = 0.95, title: str = "ROC",
) -> Figure:
    """ROC curve of each named (labels, positive-class scores) pair with its bootstrap band."""
    fig = _figure(4.6, 4.4)
    ax = fig.subplots()
    for name, (y, score) in curves.items():
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise DataError(f"roc_figure: '{name}' has a single class; a ROC curve needs both")
        fpr, tpr, _ = roc_curve(y, score)
        auc = roc_auc_score(y, score)
        (line,) = ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {auc:.3f})")
        grid, low, high = roc_band(y, score, rng=rng, n_boot=n_boot, level=level)
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{title}\nbands: {level:.0%} pointwise bootstrap ({n_boot} stratified replicates)",
                 fontsize=9)
    return fig


def confusion_figure(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> Figure:
    """Counts with row percentages; rows are true classes, columns predicted ones."""
    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(classes), len(classes)):
        raise DataError(f"confusion_figure: matrix of shape {m.shape} for {len(classes)} classes")
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = 1.2 + 0.9 * len(classes)
    fig = _figure(size + 0.8, size)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(m[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color=colour, fontsize=8)
    ax.set_xticks(range(len(classes)), [str(c) for c in classes], rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    return fig


def forest_figure(rows: Sequence[ForestRow], xlabel: str, title: str) -> Figure:
    """Estimates with CIs, one line each; filled markers are significant, 0 is marked."""
    if not rows:
        raise DataError("forest_figure: no rows to plot")
    fig = _figure(6.4, 0.9 + 0.32 * len(rows))
    ax = fig.subplots()
    ys = np.arange(len(rows))[::-1]
    for yy, r in zip(ys, rows, strict=True):
        ax.plot([r.low, r.high], [yy, yy], color="black", linewidth=1.2)
        ax.plot([r.estimate], [yy], marker="D", markersize=5, color="black",
                markerfacecolor="black" if r.significant else "white")
        if r.note:
            ax.annotate(r.note, (1.01, yy), xycoords=("axes fraction", "data"), va="center", fontsize=7)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [r.label for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def reliability_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], n_bins: int = 10,
                       title: str = "Calibration") -> Figure:
    """Observed accuracy against mean top-label confidence per equal-width bin, per model."""
    fig = _figure(4.4, 4.2)
    ax = fig.subplots()
    for name, (y, proba) in curves.items():
        p = np.asarray(proba, dtype=np.float64)
        conf = p.max(axis=1)
        correct = (p.argmax(axis=1) == np.asarray(y)).astype(np.float64)
        bins = confidence_bins(conf, n_bins)
        count = np.bincount(bins, minlength=n_bins)
        keep = count > 0
        mean_conf = np.bincount(bins, conf, n_bins)[keep] / count[keep]
        acc = np.bincount(bins, correct, n_bins)[keep] / count[keep]
        ax.plot(mean_conf, acc, "-o", markersize=3, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("mean confidence (top class)")
    ax.set_ylabel("observed accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def tiles_figure(rows: Sequence[Sequence[np.ndarray]], *, title: str, row_labels: Sequence[str] = (),
                 col_labels: Sequence[str] = (), tile: float = 0.9) -> Figure:
    """A grid of image tiles, one list per row: (h, w) grey or (h, w, 3) RGB, values in [0, 1]."""
    if not rows or not any(len(r) for r in rows):
        raise DataError("tiles_figure: no tiles to draw")
    n_cols = max(len(r) for r in rows)
    # A fixed grid, not constrained layout: laying out many small axes costs seconds per figure.
    fig = Figure(figsize=(0.9 + tile * n_cols, 0.7 + tile * len(rows)))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.8 / (0.9 + tile * n_cols), right=0.98, bottom=0.02,
                        top=1 - 0.5 / (0.7 + tile * len(rows)), wspace=0.08, hspace=0.25)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            img = np.clip(np.asarray(row[j], dtype=np.float32), 0, 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=6)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def search_param_figure(param: str, values: Sequence[object], scores: Sequence[float], metric: str,
                        *, log: bool = False) -> Figure:
    """A search's validation score per value of one hyperparameter: a bar of the mean
    ± sd over the trials with that value, and a box plot of them; a scatter when the values are
    many (a sampled range)."""
    pairs = [(v, float(s)) for v, s in zip(values, scores, strict=True) if math.isfinite(float(s))]
    if not pairs:
        raise DataError(f"search_param_figure: no finite {metric} for '{param}'")
    fig = _figure(7.0, 2.8)
    distinct = list(dict.fromkeys(v for v, _ in pairs))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct)
    if numeric and len(distinct) > 12:
        ax = fig.subplots()
        ax.scatter([float(v) for v, _ in pairs], [s for _, s in pairs], s=12)  # type: ignore[arg-type]
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    else:
        order = sorted(distinct, key=lambda v: (0, float(v), "") if numeric else (1, 0.0, str(v)))  # type: ignore[arg-type]
        groups = [[s for v, s in pairs if v == value] for value in order]
        names = [str(v) for v in order]
        bar, box = fig.subplots(1, 2)
        means = [float(np.mean(g)) for g in groups]
        sds = [float(np.std(g, ddof=1)) if len(g) > 1 else 0.0 for g in groups]
        bar.bar(range(len(groups)), means, yerr=sds, capsize=3, color="tab:blue", alpha=0.8)
        bar.set_xticks(range(len(groups)), names, rotation=30, ha="right")
        bar.set_ylabel(f"validation {metric}\n(mean ± sd over trials)")
        box.boxplot(groups)
        box.set_xticks(range(1, len(groups) + 1), names, rotation=30, ha="right")
        box.set_ylabel(f"validation {metric}")
        for ax in (bar, box):
            ax.set_xlabel(param)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Search: validation {metric} per value of {param} ({len(pairs)} trials)", fontsize=9)
    return fig


@dataclass(frozen=True)
class Plot:
    """A saved figure: caption and the PNG path (an SVG lies beside it)."""

    caption: str
    png: Path


def search_plot(out: Path, key: str, arm: str | None = None) -> Path:
    """Where a search's figure of hyperparameter ``key`` (of one ``arm`` where the search tuned
    several) is saved (PNG; an SVG beside it)."""
    name = key if arm is None else f"{arm}__{key}"
    return out / f"search_{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}.png"


def _hashable(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | str) else str(value)


def search_figures(out: FigureDir, trials: Sequence[Mapping[str, Any]], keys: Sequence[str], metric: str,
                   log_keys: Collection[str] = (), arm: str | None = None) -> list[Plot]:
    """One figure per searched key: the finished trials' validation ``metric`` per value (bar of
    mean ± sd and box plot; a scatter for a sampled range). ``trials``: ``{"params", "value"}``;
    ``arm``: the arm they tuned, where a search tuned several."""
    done = [t for t in trials if t.get("value") is not None and math.isfinite(float(t["value"]))]
    plots = []
    for key in keys if done else []:
        fig = search_param_figure(key, [_hashable(t["params"].get(key)) for t in done],
                                  [float(t["value"]) for t in done], metric, log=key in log_keys)
        what = f"Validation {metric} per value of {key}" + (f" ({arm})" if arm else "")
        plots.append(Plot(what, out.save(fig, search_plot(out.path, key, arm).stem)))
    return plots
