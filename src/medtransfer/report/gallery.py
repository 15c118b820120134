"""Grad-CAM gallery and dead-filter census of each arm's transferred model.

The test images are reloaded from the study's target data (``config.yaml`` → ``load_dataset``,
through the same image cache) and picked by the ids in the units' ``predictions.csv``; the
models are rebuilt from each cell by :func:`medtransfer.study.rundir.unit_model` (its checkpoint
checked against its ``result.json`` first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtransfer.data import ImageCache, ImageSet, load_dataset
from medtransfer.errors import DataError
from medtransfer.explain import cam_maps, dead_filter_share, overlay
from medtransfer.plots import FigureDir
from medtransfer.study.rundir import POOLED, Arm, Predictions, RunDir, is_features, unit_model

__all__ = ["Gallery", "gradcam_gallery", "pick_images", "test_images"]

log = logging.getLogger("medtransfer")


@dataclass
class Gallery:
    """One PNG per arm, dead-filter shares per arm and layer, and notes (arms not drawn)."""

    images: dict[str, Path] = field(default_factory=dict)
    dead: dict[str, dict[str, float]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pick_images(labels: np.ndarray, ids: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Up to ``n`` row indices, spread evenly over the classes present (seeded)."""
    classes = np.unique(labels)
    per = -(-n // len(classes))
    picked: list[int] = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        picked += sorted(rng.choice(rows, size=min(per, len(rows)), replace=False).tolist())
    return picked[:n]


def _figure(
    tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]], titles: list[str], variant: str
) -> Figure:
    fig = Figure(figsize=(6.0, 2.1 * len(tiles)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tiles), 3, squeeze=False)
    for row, ((img, cam, campp), title) in enumerate(zip(tiles, titles, strict=True)):
        for col, (arr, head) in enumerate(((img, "image"), (cam, "Grad-CAM"), (campp, "Grad-CAM++"))):
            ax = axes[row, col]
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(head, fontsize=9)
            if col == 0:
                ax.set_ylabel(title, fontsize=6.5)
    fig.suptitle(f"{variant}: maps for the predicted class", fontsize=10)
    return fig


def _drawable(arm: Arm) -> str | None:
    """Why the arm's model cannot be drawn, or None."""
    unit = arm.cells[0]
    if is_features(unit):
        strategy = unit.cell.strategy
        classifier = strategy.extra.get("classifier", "") if strategy is not None else ""
        return (f"{arm.label}: a {classifier} classifier on frozen features has no single torch model "
                "to explain")
    return None


def gradcam_gallery(run: RunDir, out: FigureDir, *, n_images: int = 4, seed: int = 0,
                    dead_batch: int = 256) -> Gallery:
    """Grad-CAM and Grad-CAM++ of the same ``n_images`` pooled test images for every arm of
    each target, and the share of dead ReLU filters over (up to ``dead_batch``) test images."""
    gallery = Gallery()
    for target, arms in run.arms.items():
        _target_gallery(run, target, arms, gallery, out, n_images, seed, dead_batch)
    return gallery


def test_images(run: RunDir, target: str, arms: list[Arm]) -> tuple[Predictions, ImageSet, np.ndarray]:
    """The first arm's pooled test predictions (fold 1's with cross-validation: images the model
    shown never trained on), the target's images reloaded from the study's data, and the rows
    of those images in it."""
    ref = run.predictions(arms[0]).part("fold_1" if len(arms[0].cells) > 1 else POOLED)
    if not len(ref.ids):
        raise DataError("the run has no test images to explain")
    task = run.config.targets[target] if run.config.is_matrix else run.config.task("target")
    data = load_dataset(task.data, run.config.preprocess, ImageCache(run.config.cache_dir))
    index = {i: k for k, i in enumerate(data.ids)}
    missing = [i for i in ref.ids if i not in index]
    if missing:
        raise DataError(f"target data {task.data.path} lacks {len(missing)} test image(s) of "
                        f"the run, e.g. {missing[0]}; was it changed since the study ran?")
    rows = np.array([index[i] for i in ref.ids], dtype=np.int64)
    if not np.array_equal(data.labels[rows], ref.labels):
        raise DataError(f"target data {task.data.path}: labels differ from the run's predictions")
    return ref, data, rows


def _target_gallery(run: RunDir, target: str, arms: list[Arm], gallery: Gallery, out: FigureDir,
                    n_images: int, seed: int, dead_batch: int) -> None:
    ref, data, rows = test_images(run, target, arms)
    rng = np.random.default_rng(seed)
    chosen = pick_images(ref.labels, ref.ids, n_images, rng)
    gallery.ids = [str(ref.ids[k]) for k in chosen]
    images = data.images[rows[chosen]]
    census = data.images[rows[np.sort(rng.permutation(len(rows))[:dead_batch])]]
    shown = overlay(images, np.zeros(images.shape[:1] + images.shape[2:], np.float32), image_weight=1.0)
    classes = run.classes(target)
    for arm in arms:
        why = _drawable(arm)
        if why is not None:
            gallery.notes.append(why)
            continue
        name = arm.label if len(run.arms) == 1 else f"{target}.{arm.label}"
        trained = unit_model(run, arm.cells[0], in_chans=data.channels)
        model, norm = trained.module, trained.input_norm
        preds = run.predictions(arm).part(POOLED)
        where = {i: k for k, i in enumerate(preds.ids)}
        cams = overlay(images, cam_maps(model, images, method="gradcam", input_norm=norm))
        campp = overlay(images, cam_maps(model, images, method="gradcam++", input_norm=norm))
        titles = []
        for k in chosen:
            p = preds.proba[where[ref.ids[k]]]
            label = classes[int(ref.labels[k])]
            guess = classes[int(p.argmax())] if len(p) > 2 else classes[int(p[1] >= 0.5)]
            file = str(ref.ids[k]).replace("\\", "/").rsplit("/", 1)[-1]
            titles.append(f"{file}\ntrue {label}\npred {guess} ({p.max():.2f})")
        fig = _figure(list(zip(shown, cams, campp, strict=True)), titles, name)
        gallery.images[name] = out.save(fig, f"gradcam_{name}")
        gallery.dead[name] = dead_filter_share(model, census, input_norm=norm)
