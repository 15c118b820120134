"""A preview of a study's augmentation: for every variant and training stage
that augments, a PNG grid of training images, each above an augmented version of it.

The images are the study's own training images (drawn by the study's split; never validation or
test images), loaded through the image cache like a run loads them; the augmentation is the
variant's ``pretrain.augment`` (on each source it pretrains on) or ``transfer.augment`` (on each
target), drawn from the study seed — one example of what a training batch gets, or of the
offline copies when ``offline_copies`` is set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtransfer.data import AugmentConfig, Augmenter, ImageCache
from medtransfer.data.offline import augmented_copies
from medtransfer.errors import ConfigError
from medtransfer.plots import save_figure
from medtransfer.study.config import StudyConfig
from medtransfer.study.runner import Runner
from medtransfer.study.tasks import LoadedTask, load_task
from medtransfer.study.variants import resolve_variants

__all__ = ["augment_grid", "preview_augmentation"]

_COLUMNS = 8


def preview_augmentation(cfg: StudyConfig, out: str | Path, n: int = 16) -> list[Path]:
    """Write ``augment_<variant>_<stage>_<task>.png`` into ``out`` for each variant × stage ×
    data set that augments, ``n`` training images each; returns the files written."""
    if n < 1:
        raise ConfigError(f"--n: got {n}; expected a number of images >= 1")
    out = Path(out)
    tasks = Runner(cfg, out).task_configs()
    cache = ImageCache(cfg.cache_dir)
    loaded: dict[str, LoadedTask] = {}
    written = []
    for v in resolve_variants(cfg):
        for stage, aug, role in (("pretrain", v.pretrain.augment, "source"),
                                 ("transfer", v.transfer.augment, "target")):
            if not aug.enabled:
                continue
            for name, (task_role, task) in tasks.items():
                if task_role != role:
                    continue
                if name not in loaded:
                    loaded[name] = load_task(name, role, task, cfg, cache)
                images = _sample(loaded[name], n, cfg.seed)
                title = (f"{v.name} · {stage}.augment · {name} — top: training image, below: "
                         + ("offline copy" if aug.offline_copies else "augmented (one batch's draw)"))
                fig = augment_grid(images, augment_images(images, aug, cfg.seed), title)
                written += save_figure(fig, out / f"augment_{v.name}_{stage}_{name}", formats=("png",))
    if not written:
        raise ConfigError("nothing to preview: pretrain.augment and transfer.augment change nothing "
                          "in any variant (set e.g. transfer.augment.rotation)")
    return written


def _sample(task: LoadedTask, n: int, seed: int) -> np.ndarray:
    """``n`` of the task's training images (all when fewer), drawn from ``seed``."""
    train = np.asarray(task.split.train)
    pick = np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False)
    return task.images.images[train[np.sort(pick)]]


def augment_images(images: np.ndarray, aug: AugmentConfig, seed: int) -> np.ndarray:
    """``images`` (uint8/uint16 (N, C, H, W)) augmented as training would, from ``seed``: as
    offline copies when ``aug.offline_copies`` is set, else as one training batch."""
    if aug.offline_copies:
        return augmented_copies(images, aug, seed)
    scale = 255.0 if images.dtype == np.uint8 else 65535.0
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32) / scale
    y = Augmenter(aug)(x, torch.Generator().manual_seed(seed))
    return torch.round(y * scale).numpy().astype(images.dtype)


def augment_grid(original: np.ndarray, augmented: np.ndarray, title: str = "") -> Figure:
    """A figure of image pairs: each original above its augmented version, ``_COLUMNS`` a row."""
    if original.shape != augmented.shape or original.ndim != 4:
        raise ValueError(f"augment_grid: expected two (N, C, H, W) arrays of one shape, got "
                         f"{original.shape} and {augmented.shape}")
    count = len(original)
    cols = min(_COLUMNS, count)
    rows = 2 * -(-count // cols)
    fig = Figure(figsize=(1.6 * cols, 1.7 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    scale = 255.0 if original.dtype == np.uint8 else 65535.0
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(count):
        r, c = 2 * (i // cols), i % cols
        for row, img in ((r, original[i]), (r + 1, augmented[i])):
            pixels = img.astype(np.float32) / scale
            ax = axes[row][c]
            if pixels.shape[0] == 1:
                ax.imshow(pixels[0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(np.clip(pixels.transpose(1, 2, 0), 0.0, 1.0))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
