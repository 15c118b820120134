"""Units shared by both study shapes: pretraining on a source task, and writing a unit's
per-image predictions. A unit's spec is everything that determines its result."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch import nn

from medtransfer import __version__
from medtransfer.config import to_dict
from medtransfer.data import Augmenter, ImageCache, ImageSet, Split
from medtransfer.evaluate import compute_metrics
from medtransfer.models import ModelConfig, build_model, build_pretrained
from medtransfer.study.config import StudyConfig, Variant
from medtransfer.study.store import Unit, write_text_atomic
from medtransfer.tracking import unit_callbacks
from medtransfer.train import Callback, TrainConfig, fit, predict_proba


@dataclass
class LoadedTask:
    name: str
    images: ImageSet
    split: Split
    fingerprint: str
    folds: list[Split] | None = None  # cross-validation: split is then folds[0]

    def part(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images.images[idx], self.images.labels[idx]


class Context(Protocol):
    """What a unit needs of the runner."""

    cfg: StudyConfig
    out: Path
    device: torch.device
    size: int
    echo: Callable[[str], None]
    progress: bool


def open_run(out: Path, cfg: StudyConfig, *, write: bool) -> ImageCache:
    """Create the run folder with the resolved ``config.yaml`` (if ``write``); the image cache."""
    if write:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return ImageCache(cfg.cache_dir)


def spec_key(cfg: Any) -> Any:
    """A config as it enters a unit key: non-default values only (see ``to_dict``)."""
    return to_dict(cfg, skip_defaults=True)


def fingerprint(images: ImageSet, splits: list[Split]) -> str:
    """Hash of the pixels, labels and split(s): a unit is redone if any of them changes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images.images).tobytes())
    h.update(images.labels.tobytes())
    for split in splits:
        for name, idx in [("train", split.train), ("val", split.val), *sorted(split.tests.items())]:
            h.update(name.encode())
            h.update(np.asarray(idx, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def train_cfg(ctx: Context, train: TrainConfig) -> TrainConfig:
    return train if ctx.progress else dataclasses.replace(train, progress=False)


def tracking(ctx: Context, unit_dir: Path, name: str, spec: dict[str, Any]) -> list[Callback]:
    """TensorBoard / MLflow callbacks for one unit's training, as ``cfg.tracking`` asks."""
    return unit_callbacks(ctx.cfg.tracking, run_dir=ctx.out, unit_dir=unit_dir, study=ctx.cfg.name,
                          name=name, params=spec)


def seeded_build(model_cfg: ModelConfig, task: LoadedTask, size: int, seed: int) -> nn.Module:
    """Build with initial weights drawn from ``seed`` without touching the global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_cfg, num_classes=task.images.num_classes,
                           in_chans=task.images.channels, img_size=size)


def pretrain_unit(ctx: Context, v: Variant, source: LoadedTask, *, label: str,
                  weights: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Train ``v.model`` on the source task (from ``weights`` if given; else random init drawn
    from ``seed``, default the study seed); reused, and shared between variants, when the same
    unit is done."""
    cfg = ctx.cfg
    seed = cfg.seed if seed is None else seed
    spec: dict[str, Any] = {
        "stage": "pretrain", "version": __version__,
        "model": spec_key(v.model), "pretrain": spec_key(v.pretrain),
        "preprocess": spec_key(cfg.preprocess), "seed": seed, "data": source.fingerprint,
    }
    if weights is not None:
        spec["weights"] = weights
    unit = Unit(ctx.out, "pretrain", label, spec, share=True)
    if unit.done():
        ctx.echo(f"[{label}] pretraining: done earlier, reused ({unit.dir.name})")
        return {**unit.result(), "dir": str(unit.dir)}
    ctx.echo(f"[{label}] pretraining on {len(source.split.train)} source images"
             + (f" from {weights}" if weights else ""))
    workdir = unit.start()
    input_norm = None
    if weights is None:
        model = seeded_build(v.model, source, ctx.size, seed)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            built = build_pretrained(
                dataclasses.replace(v.model, weights=weights), num_classes=source.images.num_classes,
                in_chans=source.images.channels, img_size=ctx.size, classes=list(source.images.classes))
        model, input_norm = built.model, built.input_norm
        for msg in built.report.messages if built.report else []:
            ctx.echo(f"[{label}] {msg}")
    augment = Augmenter(v.pretrain.augment) if v.pretrain.augment.enabled else None
    res = fit(
        model, source.part(source.split.train), source.part(source.split.val),
        train_cfg(ctx, v.pretrain.train), seed=seed, out_dir=workdir,
        num_classes=source.images.num_classes, augment=augment, device=ctx.device,
        input_norm=input_norm, config_for_checkpoint={**spec, "classes": list(source.images.classes)},
        callbacks=tracking(ctx, workdir, label, spec),
    )
    val_x, val_y = source.part(source.split.val)
    proba = predict_proba(model, val_x, batch_size=v.pretrain.train.batch_size, device=ctx.device,
                          input_norm=input_norm)
    val = compute_metrics(val_y, proba)
    best = res.history[res.best_epoch - 1] if res.best_epoch > 0 else {}
    val["loss"] = float(best.get("val_loss", float("nan")))
    result: dict[str, Any] = {
        "val": val, "best_epoch": res.best_epoch, "stop_reason": res.stop_reason.value,
        "epochs_run": len(res.history), "seconds": res.seconds,
        "images_per_second": res.images_per_second,
        "checkpoint": (res.best_path or res.last_path).name,
        "classes": list(source.images.classes),
    }
    if input_norm is not None:
        result["input_norm"] = [list(v) for v in input_norm]
    unit.finish(result)
    return {**result, "dir": str(unit.dir)}


def metric_rows(ids: dict[str, Any], stage: str, test_set: str,
                metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Tidy ``results.csv`` rows: ``ids`` (variant, and a matrix cell's source, target, …), then
    one row per metric, sorted by name."""
    return [{**ids, "stage": stage, "test_set": test_set, "metric": k, "value": float(v)}
            for k, v in sorted(metrics.items())]


def write_results(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """``rows`` as CSV, ``columns`` ending in ``value`` (6 significant digits)."""
    lines = [",".join(columns) + "\n"]
    lines += [",".join(str(r[k]) for k in columns[:-1]) + f",{r['value']:.6g}\n" for r in rows]
    write_text_atomic(path, "".join(lines))


def write_predictions(path: Path, target: LoadedTask, parts: Mapping[str, np.ndarray],
                      proba: Mapping[str, np.ndarray]) -> None:
    """``test_set,id,label,p_<class>...`` for every evaluated part (val included: thresholds
    and calibration are chosen on it)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["test_set", "id", "label", *(f"p_{c}" for c in target.images.classes)])
        for name, idx in parts.items():
            for i, p in zip(idx, proba[name], strict=True):
                w.writerow([name, target.images.ids[i], int(target.images.labels[i]),
                            *(f"{q:.6g}" for q in p)])
