"""Grad-CAM gallery and dead-filter census of each variant's transferred model.

The test images are reloaded from the study's target data (``config.yaml`` → ``load_dataset``,
through the same image cache) and picked by the ids in the units' ``predictions.csv``; the
models are rebuilt from each transfer unit's spec and ``best.pt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from medtransfer.config import from_dict
from medtransfer.data import ImageCache, load_dataset
from medtransfer.errors import DataError
from medtransfer.explain import cam_maps, dead_filter_share, overlay
from medtransfer.models import ModelConfig, build_model
from medtransfer.plots import save_figure
from medtransfer.report.rundir import POOLED, RunDir
from medtransfer.train import load_checkpoint

__all__ = ["Gallery", "gradcam_gallery", "load_unit_model"]

log = logging.getLogger("medtransfer")


@dataclass
class Gallery:
    """One PNG per variant, dead-filter shares per variant and layer, and notes."""

    images: dict[str, Path] = field(default_factory=dict)
    dead: dict[str, dict[str, float]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_unit_model(run: RunDir, variant: str, in_chans: int) -> tuple[nn.Module, object]:
    """The variant's transferred model with its checkpoint weights, and the input_norm it used."""
    unit = run.transfer[variant]
    ckpt = load_checkpoint(unit.checkpoint)
    cfg = from_dict(ModelConfig, unit.spec.get("model", {}), f"{unit.dir.name}/unit.json spec.model")
    size = run.config.preprocess.hw[0]
    model = build_model(cfg, num_classes=len(run.classes), in_chans=in_chans, img_size=size)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    extra = ckpt.get("extra") or {}
    return model, extra.get("input_norm")


def _pick_ids(labels: np.ndarray, ids: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
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


def gradcam_gallery(run: RunDir, out: Path, *, n_images: int = 4, seed: int = 0,
                    dead_batch: int = 256) -> Gallery:
    """Grad-CAM and Grad-CAM++ of the same ``n_images`` pooled test images for every variant,
    and the share of dead ReLU filters over (up to ``dead_batch``) test images."""
    gallery = Gallery()
    # Cross-validation: the model shown is fold 1's, so only images it never trained on.
    ref = run.predictions(run.variants[0]).part("fold_1" if run.folds else POOLED)
    if not len(ref.ids):
        raise DataError("the run has no test images to explain")
    target = run.config.task("target").data
    data = load_dataset(target, run.config.preprocess, ImageCache(run.config.cache_dir))
    index = {i: k for k, i in enumerate(data.ids)}
    missing = [i for i in ref.ids if i not in index]
    if missing:
        raise DataError(f"target data {target.path} lacks {len(missing)} test image(s) of "
                        f"the run, e.g. {missing[0]}; was it changed since the study ran?")
    rows = np.array([index[i] for i in ref.ids], dtype=np.int64)
    if not np.array_equal(data.labels[rows], ref.labels):
        raise DataError(
            f"target data {target.path}: labels differ from the run's predictions"
        )
    rng = np.random.default_rng(seed)
    chosen = _pick_ids(ref.labels, ref.ids, n_images, rng)
    gallery.ids = [str(ref.ids[k]) for k in chosen]
    images = data.images[rows[chosen]]
    census = data.images[rows[np.sort(rng.permutation(len(rows))[:dead_batch])]]
    shown = overlay(images, np.zeros(images.shape[:1] + images.shape[2:], np.float32), image_weight=1.0)
    for variant in run.variants:
        model, norm = load_unit_model(run, variant, data.channels)
        preds = run.predictions(variant).part(POOLED)
        where = {i: k for k, i in enumerate(preds.ids)}
        cams = overlay(images, cam_maps(model, images, method="gradcam", input_norm=norm))  # type: ignore[arg-type]
        campp = overlay(images, cam_maps(model, images, method="gradcam++", input_norm=norm))  # type: ignore[arg-type]
        titles = []
        for k in chosen:
            p = preds.proba[where[ref.ids[k]]]
            label = run.classes[int(ref.labels[k])]
            guess = run.classes[int(p.argmax())] if len(p) > 2 else run.classes[int(p[1] >= 0.5)]
            name = str(ref.ids[k]).replace("\\", "/").rsplit("/", 1)[-1]
            titles.append(f"{name}\ntrue {label}\npred {guess} ({p.max():.2f})")
        fig = _figure(list(zip(shown, cams, campp, strict=True)), titles, variant)
        gallery.images[variant] = save_figure(fig, out / f"gradcam_{variant}")[0]
        dead = dead_filter_share(model, census, input_norm=norm)  # type: ignore[arg-type]
        gallery.dead[variant] = dead
    return gallery
