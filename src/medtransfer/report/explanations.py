"""What the run's networks learnt, as the study's ``report`` section asks (seeds 003, 004):
first-layer filters of every source model and arm, feature maps of chosen layers on a few test
images, and activation maximisation of a layer's first filters — figures in ``plots/`` and a
section of the report. A ``features`` arm is drawn by its backbone (the network it took its
features from). An arm that cannot be drawn gets a note saying why; the others are still drawn."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from medtransfer.document import Doc
from medtransfer.errors import ConfigError, DataError, IntegrityError
from medtransfer.explain import (
    activation_maximization,
    conv_layers,
    feature_maps,
    first_layer_filters,
    last_conv_layer,
    scale_tiles,
    to_tensor,
)
from medtransfer.plots import FigureDir, tiles_figure
from medtransfer.report.gallery import pick_images, test_images
from medtransfer.study.report_config import ReportConfig
from medtransfer.study.rundir import Arm, RunDir, TrainedModel, unit_model

__all__ = ["Explanations", "arm_network", "explain_section", "model_figures"]

log = logging.getLogger("medtransfer")
MAX_FILTERS = 64  # first-layer filters drawn per model
PER_ROW = 8


@dataclass
class Explanations:
    """The figures drawn (caption, PNG) and notes on what could not be drawn."""

    images: list[tuple[str, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _stem(text: str) -> str:
    """A file-name-safe stem (layer names hold dots, arm labels colons)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def arm_network(run: RunDir, arm: Arm) -> TrainedModel:
    """The arm's (repeat-0, fold-1) trained network and its input normalisation; a ``features``
    arm's backbone."""
    return unit_model(run, arm.cells[0], backbone_only=True)


def _shown(images: np.ndarray) -> list[np.ndarray]:
    """(N, C, H, W) images as tiles in [0, 1]: (H, W) grey or (H, W, 3) RGB."""
    x = to_tensor(images).numpy()
    return [a[0] if a.shape[0] != 3 else a.transpose(1, 2, 0) for a in x]


def _filters_figure(model: nn.Module, name: str, out: FigureDir) -> tuple[str, Path]:
    weights = first_layer_filters(model)[:MAX_FILTERS]
    tiles = [w.transpose(1, 2, 0) if w.shape[0] == 3 else w.mean(axis=0) for w in weights]
    rows = [tiles[i:i + PER_ROW] for i in range(0, len(tiles), PER_ROW)]
    layer = conv_layers(model)[0][0]
    fig = tiles_figure(rows, title=f"{name}: first-layer filters ({layer}, {len(tiles)} shown)")
    return f"{name}: first-layer filters", out.save(fig, f"filters_{_stem(name)}")


def _maps_figures(model: nn.Module, norm: Any, images: np.ndarray, titles: list[str], name: str,
                  layers: list[str], channels: int, out: FigureDir) -> list[tuple[str, Path]]:
    if not layers:
        first = conv_layers(model)[0][0] if conv_layers(model) else None
        last = last_conv_layer(model, to_tensor(images[:1], norm))[0]
        layers = list(dict.fromkeys(n for n in (first, last) if n is not None))
    shown, drawn = _shown(images), []
    for layer in layers:
        maps = feature_maps(model, images, layer, input_norm=norm)
        if maps.ndim != 4:
            raise ConfigError(f"'report.feature_maps.layers': layer {layer!r} gives outputs of shape "
                              f"{tuple(maps.shape)}, not feature maps (N, C, h, w); name a conv layer")
        rows = [[img, *scale_tiles(m[:channels])] for img, m in zip(shown, maps, strict=True)]
        heads = ["image", *(f"channel {c}" for c in range(min(channels, maps.shape[1])))]
        fig = tiles_figure(rows, row_labels=titles, col_labels=heads,
                           title=f"{name}: feature maps of {layer} ({maps.shape[1]} channels, "
                                 f"{maps.shape[2]}×{maps.shape[3]})")
        drawn.append((f"{name}: feature maps of {layer}",
                      out.save(fig, f"featuremaps_{_stem(name)}_{_stem(layer)}")))
    return drawn


def _actmax_figure(model: nn.Module, norm: Any, run: RunDir, cfg: ReportConfig, name: str, seed: int,
                   out: FigureDir) -> tuple[str, Path]:
    am = cfg.activation_max
    assert am is not None
    chans, (h, w) = run.config.preprocess.channels, run.config.preprocess.hw
    example = to_tensor(np.full((1, chans, h, w), 0.5, dtype=np.float32), norm)
    layer = am.layer or last_conv_layer(model, example)[0]
    width = getattr(dict(model.named_modules()).get(layer), "out_channels", am.filters)
    filters = list(range(min(am.filters, int(width))))
    imgs = activation_maximization(model, layer, filters, image_shape=(chans, h, w), seed=seed,
                                   steps=am.steps, lr=am.lr, input_norm=norm)
    tiles = [a[0] if chans != 3 else a.transpose(1, 2, 0) for a in imgs]
    fig = tiles_figure([tiles], col_labels=[f"filter {f}" for f in filters],
                       title=f"{name}: inputs maximising {layer}'s filters ({am.steps} steps)")
    return f"{name}: activation maximisation of {layer}", out.save(fig, f"actmax_{_stem(name)}")


def model_figures(run: RunDir, out: FigureDir, cfg: ReportConfig, *, seed: int = 0) -> Explanations:
    """Every figure ``cfg`` asks for, of every source model (filters) and every arm."""
    expl = Explanations()
    chans = run.config.preprocess.channels
    for unit in run.pretrains if cfg.filters else []:
        name = f"source {unit.job.get('source', '')} ({unit.job['id']})"
        try:
            expl.images.append(_filters_figure(unit_model(run, unit, in_chans=chans).module, name, out))
        except IntegrityError:
            raise  # a damaged record or file is named, never drawn around
        except (ConfigError, DataError, OSError) as exc:
            expl.notes.append(f"{name}: {exc}")
    for target, arms in run.arms.items():
        images, titles = None, []
        if cfg.feature_maps is not None:
            ref, data, rows = test_images(run, target, arms)
            chosen = pick_images(ref.labels, ref.ids, cfg.feature_maps.images, np.random.default_rng(seed))
            images = data.images[rows[chosen]]
            classes = run.classes(target)
            files = [str(ref.ids[k]).replace("\\", "/").rsplit("/", 1)[-1] for k in chosen]
            titles = [f"{f}\n{classes[int(ref.labels[k])]}" for f, k in zip(files, chosen, strict=True)]
        for arm in arms:
            name = arm.label if len(run.arms) == 1 else f"{target}.{arm.label}"
            try:
                trained = arm_network(run, arm)
                model, norm = trained.module, trained.input_norm
                if cfg.filters:
                    expl.images.append(_filters_figure(model, name, out))
                if cfg.feature_maps is not None and images is not None:
                    expl.images += _maps_figures(model, norm, images, titles, name, cfg.feature_maps.layers,
                                                 cfg.feature_maps.channels, out)
                if cfg.activation_max is not None:
                    expl.images.append(_actmax_figure(model, norm, run, cfg, name, seed, out))
            except IntegrityError:
                raise
            except (ConfigError, DataError, OSError) as exc:
                expl.notes.append(f"{name}: {exc}")
                log.warning("report: model figures of %s skipped: %s", name, exc)
    return expl


def explain_section(doc: Doc, expl: Explanations | None, error: str | None) -> None:
    """The report's section of filters, feature maps and activation maximisation."""
    doc.heading("Filters, feature maps and activation maximisation")
    if expl is None:
        doc.para(f"Not drawn: {error}")
        return
    doc.para("As the study's `report` section asks: the first convolution's filters (each min-max "
             "scaled; RGB where the input has three channels), feature maps of the chosen layers on "
             "the same test images for every arm (each map min-max scaled), and inputs that maximise "
             "the mean activation of a layer's first filters (gradient ascent from a seeded random "
             "image). A features arm is shown by its backbone; the models are each arm's repeat 0.")
    doc.images(expl.images)
    if expl.notes:
        doc.bullets([f"Not drawn: {n}" for n in expl.notes])
